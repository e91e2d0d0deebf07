// IDX files: the real Fashion-MNIST files from Debian's package, and crafted bad ones (wrong
// magic, unknown type, truncated, dimensions that overflow, gzip bombs) rejected before allocation.
#include <filesystem>
#include <fstream>

#include <zlib.h>

#include "flowmatch/data/idx.h"
#include "flowmatch/io/atomic_file.h"
#include "test_util.h"

namespace fm = flowmatch;
namespace fd = flowmatch::data;

namespace {

std::string header(unsigned type, std::vector<uint32_t> dims) {
  std::string h = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) h += static_cast<char>((d >> s) & 0xff);
  return h;
}

std::string gzip(const std::string& data) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string idx_error_of(const std::string& bytes, int64_t max_bytes = fd::kDefaultIdxMaxBytes) {
  try {
    fd::decode_idx(fd::gunzip_if_compressed(bytes, "f", max_bytes), "f", max_bytes);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST(Idx, ReadsDebiansFashionMnist) {
  const std::string dir = fd::kFashionMnistDir;
  // dataset-fashion-mnist is one of the packages scripts/install-deps.sh installs.
  fd::LabeledImages test = fd::load_fashion_mnist("test");
  EXPECT_EQ(test.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(test.images.scalar_type(), at::kByte);
  EXPECT_EQ(test.labels.sizes(), (std::vector<int64_t>{10000}));
  // Fashion-MNIST's test split has exactly 1000 images per class; its mean pixel is about 0.286·255.
  EXPECT_TRUE(at::equal(at::bincount(test.labels), at::full({10}, 1000, at::kLong)));
  EXPECT_NEAR(test.images.to(at::kFloat).mean().item<double>(), 0.2868 * 255, 1.0);
  fd::LabeledImages train = fd::load_fashion_mnist("train");
  EXPECT_EQ(train.images.size(0), 60000);
  EXPECT_TRUE(at::equal(at::bincount(train.labels), at::full({10}, 6000, at::kLong)));
}

TEST(Idx, DecodesEveryElementTypeBigEndian) {
  at::Tensor i32 = fd::decode_idx(header(0x0C, {3}) + std::string("\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x01\x00\x00", 12), "f");
  EXPECT_TRUE(at::equal(i32, at::tensor({1, -2, 65536}, at::kInt)));
  at::Tensor i16 = fd::decode_idx(header(0x0B, {2}) + std::string("\x01\x02\xff\xff", 4), "f");
  EXPECT_TRUE(at::equal(i16, at::tensor({258, -1}, at::kShort)));
  at::Tensor f32 = fd::decode_idx(header(0x0D, {1, 1}) + std::string("\x3f\xc0\x00\x00", 4), "f");  // 1.5f
  EXPECT_EQ(f32.item<float>(), 1.5f);
  at::Tensor f64 = fd::decode_idx(header(0x0E, {1}) + std::string("\xc0\x04\x00\x00\x00\x00\x00\x00", 8), "f");  // -2.5
  EXPECT_EQ(f64.item<double>(), -2.5);
  at::Tensor u8 = fd::decode_idx(header(0x08, {2, 3}) + std::string("\x00\x01\x02\x03\x04\xff", 6), "f");
  EXPECT_EQ(u8.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(u8[1][2].item<int64_t>(), 255);
  // The same through gzip.
  at::Tensor again = fd::decode_idx(fd::gunzip_if_compressed(gzip(header(0x08, {2, 3}) + std::string("\x00\x01\x02\x03\x04\xff", 6)), "f"), "f");
  EXPECT_TRUE(at::equal(u8, again));
}

TEST(Idx, RejectsCraftedFilesWithANamedReason) {
  const std::string ok = header(0x08, {2, 2}) + std::string(4, '\x07');
  ASSERT_EQ(idx_error_of(ok), "(accepted)");
  EXPECT_NE(idx_error_of("").find("truncated (0 bytes"), std::string::npos);
  EXPECT_NE(idx_error_of("\x01\x00\x08\x01" + std::string(8, '\0')).find("not an IDX file"), std::string::npos);
  EXPECT_NE(idx_error_of(header(0x0A, {1}) + "x").find("element type 0x0a is unknown"), std::string::npos);
  EXPECT_NE(idx_error_of(std::string("\x00\x00\x08\x00", 4)).find("0 dimensions"), std::string::npos);
  EXPECT_NE(idx_error_of(std::string("\x00\x00\x08\x09", 4) + std::string(36, '\x01')).find("9 dimensions"), std::string::npos);
  EXPECT_NE(idx_error_of(header(0x08, {2, 2}).substr(0, 9)).find("header is truncated"), std::string::npos);
  EXPECT_NE(idx_error_of(header(0x08, {2, 0})).find("dimension 1 is 0"), std::string::npos);
  EXPECT_NE(idx_error_of(ok.substr(0, ok.size() - 1)).find("payload is truncated (3 of 4 bytes)"), std::string::npos);
  EXPECT_NE(idx_error_of(ok + "z").find("1 trailing bytes"), std::string::npos);
  EXPECT_NE(idx_error_of(header(0x0D, {3}) + std::string("\x3f\x80\x00\x00\x00\x00\x00\x00\x7f\xc0\x00\x00", 12))
                .find("element 2 (flat index) is NaN or Inf"), std::string::npos);
  // Dimensions whose product overflows 64 bits, or just exceeds the limit: refused before any allocation.
  EXPECT_NE(idx_error_of(header(0x0E, {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff})).find("(limit)"), std::string::npos);
  EXPECT_NE(idx_error_of(header(0x08, {1024, 1025}), 1 << 20).find("more than 1048576 bytes (limit)"), std::string::npos);
}

TEST(Idx, RejectsDamagedAndOversizedGzip) {
  const std::string payload = header(0x08, {100, 100}) + std::string(10000, '\x05');
  const std::string z = gzip(payload);
  EXPECT_NE(idx_error_of(z.substr(0, z.size() / 2)).find("gzip stream is truncated"), std::string::npos);
  std::string corrupted = z;
  corrupted[12] = static_cast<char>(corrupted[12] ^ 0x5a);
  corrupted[13] = static_cast<char>(corrupted[13] ^ 0xa5);
  const std::string damaged = idx_error_of(corrupted);
  EXPECT_TRUE(damaged.find("corrupted") != std::string::npos || damaged.find("truncated") != std::string::npos) << damaged;
  // A small file that inflates past the limit (a gzip bomb) stops at the limit.
  const std::string bomb = gzip(std::string(8 << 20, '\0'));
  EXPECT_LT(bomb.size(), 64u << 10);
  EXPECT_NE(idx_error_of(bomb, 1 << 20).find("decompresses to more than 1048576 bytes"), std::string::npos);
}

TEST(Idx, MissingFilesNameThePackage) {
  fmtest::TempDir dir;
  try {
    fd::load_fashion_mnist("train", dir.str());
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("train-images-idx3-ubyte[.gz] not found"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dataset-fashion-mnist"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fd::load_fashion_mnist("validation", dir.str()), std::invalid_argument);
  EXPECT_THROW(fd::read_idx(dir / "nothing.gz"), std::runtime_error);
}
