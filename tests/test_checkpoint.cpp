// The checkpoint container: round trip, and each kind of damage named.
#include <fstream>

#include "flowmatch/checkpoint.h"
#include "flowmatch/io/atomic_file.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
std::string written(const fmtest::TempDir& dir) {
  torch::serialize::OutputArchive out;
  out.write("x", at::arange(10, at::kFloat));
  const std::string path = dir / "step-5.ckpt";
  fm::write_checkpoint(path, out);
  return path;
}
std::string error_of(const std::string& path) {
  try {
    torch::serialize::InputArchive in;
    fm::read_checkpoint(path, in);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Checkpoint, RoundTrip) {
  fmtest::TempDir dir;
  const std::string path = written(dir);
  torch::serialize::InputArchive in;
  fm::read_checkpoint(path, in);
  at::Tensor x;
  in.read("x", x);
  EXPECT_TRUE(at::equal(x, at::arange(10, at::kFloat)));
}

TEST(Checkpoint, TruncatedCorruptedForeignAndMissingAreNamed) {
  fmtest::TempDir dir;
  const std::string path = written(dir);
  const std::string bytes = fm::io::read_file(path);
  fm::io::write_file_atomic(dir / "truncated.ckpt", bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(error_of(dir / "truncated.ckpt").find("truncated"), std::string::npos);
  std::string flipped = bytes;
  flipped[bytes.size() - 100] ^= 0x5a;
  fm::io::write_file_atomic(dir / "flipped.ckpt", flipped);
  EXPECT_NE(error_of(dir / "flipped.ckpt").find("checksum mismatch"), std::string::npos);
  fm::io::write_file_atomic(dir / "foreign.ckpt", "PK\x03\x04 this is a zip, not a checkpoint................");
  EXPECT_NE(error_of(dir / "foreign.ckpt").find("not a flowmatch checkpoint"), std::string::npos);
  fm::io::write_file_atomic(dir / "empty.ckpt", "");
  EXPECT_NE(error_of(dir / "empty.ckpt").find("not a flowmatch checkpoint"), std::string::npos);
  EXPECT_NE(error_of(dir / "missing.ckpt").find("cannot open"), std::string::npos);
  EXPECT_NE(error_of(dir.str()).find("is a folder"), std::string::npos);
}

TEST(Checkpoint, ListedInNumericOrder) {
  fmtest::TempDir dir;
  for (const char* name : {"step-1000.ckpt", "step-200.ckpt", "step-30.ckpt", "notes.txt", "step-x.ckpt"}) {
    std::ofstream(dir / name) << "x";
  }
  auto all = fm::list_checkpoints(dir.str());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(fm::checkpoint_step(all[0]), 30);
  EXPECT_EQ(fm::checkpoint_step(all[2]), 1000);
  EXPECT_TRUE(fm::list_checkpoints(dir / "absent").empty());
}
