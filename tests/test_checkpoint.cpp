// The checkpoint container: round trip, and each kind of damage named.
#include <fstream>

#include <zlib.h>

#include "flowmatch/checkpoint.h"
#include "flowmatch/io/atomic_file.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
fm::CheckpointContents sample_contents() {
  fm::CheckpointContents c;
  c.meta = {{"step", 5}, {"note", "hello"}};
  c.tensors["x"] = at::arange(10, at::kFloat);
  c.tensors["m/w"] = at::arange(6, at::kDouble).reshape({2, 3}).t();  // not contiguous: stored C order
  c.tensors["flags"] = at::tensor({1, 0, 1}).to(at::kBool);
  c.tensors["bytes"] = at::arange(200, at::kByte);
  c.tensors["empty"] = at::empty({0, 4}, at::kLong);
  c.tensors["h"] = at::ones({3}, at::kHalf);
  return c;
}
std::string written(const fmtest::TempDir& dir) {
  const std::string path = dir / "step-5.ckpt";
  fm::write_checkpoint(path, sample_contents());
  return path;
}
std::string error_of(const std::string& path) {
  try {
    fm::read_checkpoint(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}
// A file with a valid header and checksum around `payload`: the checks behind the checksum.
std::string with_header(const std::string& payload, uint16_t version = 2) {
  std::string file = "FMCKPT";
  auto put = [&](uint64_t v, int n) {
    for (int k = 0; k < n; ++k) file += static_cast<char>((v >> (8 * k)) & 0xff);
  };
  put(version, 2);
  put(payload.size(), 8);
  put(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(payload.data()), static_cast<uInt>(payload.size())), 4);
  put(0, 4);
  return file + payload;
}
std::string payload_of(const std::string& description, const std::string& blob) {
  std::string p;
  for (int k = 0; k < 8; ++k) p += static_cast<char>((description.size() >> (8 * k)) & 0xff);
  return p + description + blob;
}
std::string decode_error(const std::string& file) {
  try {
    fm::decode_checkpoint(file, "f");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(accepted)";
}
}  // namespace

TEST(Checkpoint, RoundTripKeepsEveryTensorAndTheMetadata) {
  fmtest::TempDir dir;
  const auto in = fm::read_checkpoint(written(dir));
  const auto expected = sample_contents();
  EXPECT_EQ(in.meta, expected.meta);
  ASSERT_EQ(in.tensors.size(), expected.tensors.size());
  for (const auto& [name, t] : expected.tensors) {
    ASSERT_TRUE(in.tensors.count(name)) << name;
    EXPECT_EQ(in.tensors.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(in.tensors.at(name), t)) << name;
  }
}

TEST(Checkpoint, CraftedPayloadsBehindAValidChecksumAreRefusedByName) {
  EXPECT_NE(decode_error(with_header("", 1)).find("format 1"), std::string::npos);
  EXPECT_NE(decode_error(with_header("", 3)).find("unsupported checkpoint version 3"), std::string::npos);
  EXPECT_NE(decode_error(with_header("abc")).find("too short"), std::string::npos);
  EXPECT_NE(decode_error(with_header(std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8))).find("exceeds the payload"),
            std::string::npos);
  EXPECT_NE(decode_error(with_header(payload_of("{not json", ""))).find("not JSON"), std::string::npos);
  // A description nested 400 000 levels deep behind a valid CRC: refused by a linear scan (the recursive
  // parser overflowed the stack, exit 139) - Reliability II item 1.
  EXPECT_NE(decode_error(with_header(payload_of(std::string(400000, '[') + std::string(400000, ']'), ""))).find("nested deeper than 256"),
            std::string::npos);
  EXPECT_NE(decode_error(with_header(payload_of("[]", ""))).find("lacks 'meta'"), std::string::npos);
  auto entry = [](const std::string& fields) { return "{\"meta\": {}, \"tensors\": [{" + fields + "}]}"; };
  const std::string good = "\"name\": \"x\", \"dtype\": \"float32\", \"shape\": [2], \"offset\": 0, \"nbytes\": 8";
  EXPECT_EQ(decode_error(with_header(payload_of(entry(good), std::string(8, '\0')))), "(accepted)");
  EXPECT_NE(decode_error(with_header(payload_of(entry(good), std::string(7, '\0')))).find("lies outside the file"), std::string::npos);
  EXPECT_NE(decode_error(with_header(payload_of(entry("\"name\": \"x\", \"dtype\": \"complex\", \"shape\": [2], \"offset\": 0, \"nbytes\": 8"), std::string(8, '\0'))))
                .find("unknown dtype"), std::string::npos);
  EXPECT_NE(decode_error(with_header(payload_of(entry("\"name\": \"x\", \"dtype\": \"float32\", \"shape\": [3], \"offset\": 0, \"nbytes\": 8"), std::string(8, '\0'))))
                .find("has 8 bytes for its shape"), std::string::npos);
  // Dimensions whose product overflows, and an offset near 2^64: refused before any allocation.
  EXPECT_NE(decode_error(with_header(payload_of(entry("\"name\": \"x\", \"dtype\": \"float64\", \"shape\": [1099511627776, 1099511627776], \"offset\": 0, \"nbytes\": 0"), "")))
                .find("too large"), std::string::npos);
  EXPECT_NE(decode_error(with_header(payload_of(entry("\"name\": \"x\", \"dtype\": \"float32\", \"shape\": [2], \"offset\": 18446744073709551615, \"nbytes\": 8"), std::string(8, '\0'))))
                .find("lies outside the file"), std::string::npos);
  EXPECT_NE(decode_error(with_header(payload_of(entry("\"name\": \"x\", \"dtype\": \"bool\", \"shape\": [2], \"offset\": 0, \"nbytes\": 2"), std::string("\x01\x07", 2))))
                .find("neither 0 nor 1"), std::string::npos);
  EXPECT_NE(decode_error(with_header(payload_of(entry("\"name\": 3"), ""))).find("name is not a string"), std::string::npos);
  EXPECT_NE(decode_error(with_header(payload_of(entry("\"name\": \"x\""), ""))).find("lacks 'dtype'"), std::string::npos);
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
