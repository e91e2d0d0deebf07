// libFuzzer entry for flowmatch_fuzz::pt (see targets.h).
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flowmatch_fuzz::pt(data, size);
  return 0;
}
