// libFuzzer entry for flowmatch_fuzz::checkpoint (see targets.h).
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flowmatch_fuzz::checkpoint(data, size);
  return 0;
}
