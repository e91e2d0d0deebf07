// libFuzzer entry for flowmatch_fuzz::checkpoint_payload (see targets.h).
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flowmatch_fuzz::checkpoint_payload(data, size);
  return 0;
}
