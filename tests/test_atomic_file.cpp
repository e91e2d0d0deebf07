// Atomic writes: replace whole files, leave nothing behind on failure.
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "flowmatch/io/atomic_file.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(AtomicFile, WritesAndReplacesWholeFiles) {
  fmtest::TempDir dir;
  fm::io::write_file_atomic(dir / "a", "first version");
  fm::io::write_file_atomic(dir / "a", "second");
  EXPECT_EQ(fm::io::read_file(dir / "a"), "second");
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.str())) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
}

TEST(AtomicFile, FailuresNameThePathAndLeaveNothing) {
  fmtest::TempDir dir;
  try {
    fm::io::write_file_atomic(dir / "missing/a", "x");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing/a"), std::string::npos);
  }
  std::ofstream(dir / "file") << "x";
  EXPECT_THROW(fm::io::ensure_writable_directory(dir / "file"), std::runtime_error);
  fm::io::ensure_writable_directory(dir / "new/nested");
  EXPECT_TRUE(std::filesystem::is_directory(dir / "new/nested"));
  if (::geteuid() != 0) {  // root writes anywhere
    std::filesystem::permissions(dir / "new", std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    EXPECT_THROW(fm::io::write_file_atomic(dir / "new/b", "x"), std::runtime_error);
  }
}
