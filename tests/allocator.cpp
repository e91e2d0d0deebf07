// The test binary keeps freed memory in the heap as the command line does (apps/flowmatch/main.cpp):
// without it every tensor of more than a few MB is a fresh mmap whose pages fault in again, which made
// the in-process tests of large tensors several times slower than the code they test.
#include <malloc.h>

namespace {
struct KeepFreedMemory {
  KeepFreedMemory() {
    mallopt(M_MMAP_THRESHOLD, 512 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
} keep_freed_memory;
}  // namespace
