// libFuzzer entry for flowmatch_fuzz::idx (see targets.h).
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flowmatch_fuzz::idx(data, size);
  return 0;
}
