// .npy: round trips, files written by NumPy (tests/data, made by make_fixtures.py), bad headers.
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/npy.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
std::string fixture(const std::string& name) { return std::string(FLOWMATCH_TEST_DATA) + "/" + name; }
std::string npy_decode_error(const std::string& bytes) {
  try {
    fm::io::decode_npy(bytes);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Npy, RoundTripsEverySupportedType) {
  fmtest::TempDir dir;
  for (auto t : {at::randn({5, 3}), at::randn({4}, at::kDouble), at::arange(12, at::kLong).view({2, 3, 2}),
                 at::arange(6, at::kInt), at::arange(7, at::kByte), at::zeros({0, 2}), at::scalar_tensor(3.5)}) {
    fm::io::save_npy(dir / "a.npy", t);
    at::Tensor back = fm::io::load_npy(dir / "a.npy");
    EXPECT_EQ(back.scalar_type(), t.scalar_type());
    EXPECT_TRUE(at::equal(back, t));
  }
  // Non-contiguous input is written in C order.
  at::Tensor tr = at::arange(6, at::kFloat).view({2, 3}).t();
  fm::io::save_npy(dir / "t.npy", tr);
  EXPECT_TRUE(at::equal(fm::io::load_npy(dir / "t.npy"), tr));
}

TEST(Npy, ReadsFilesWrittenByNumPy) {
  EXPECT_TRUE(at::equal(fm::io::load_npy(fixture("numpy_f32_v1.npy")), at::arange(6, at::kFloat).view({3, 2}) / 4));
  EXPECT_TRUE(at::equal(fm::io::load_npy(fixture("numpy_f64_v1.npy")),
                        at::tensor({1.5, -2.25, 3.0}, at::kDouble).view({1, 3})));
  EXPECT_TRUE(at::equal(fm::io::load_npy(fixture("numpy_i64_1d.npy")), at::tensor({7, -8, 9}, at::kLong)));
  EXPECT_TRUE(at::equal(fm::io::load_npy(fixture("numpy_f32_fortran.npy")), at::arange(6, at::kFloat).view({2, 3})));
  EXPECT_TRUE(at::equal(fm::io::load_npy(fixture("numpy_f32_v2.npy")), at::arange(4, at::kFloat).view({2, 2})));
  at::Tensor scalar = fm::io::load_npy(fixture("numpy_f64_scalar.npy"));
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.item<double>(), 2.5);
}

TEST(Npy, OurFilesHaveNumPysLayout) {
  // Header padded so the data starts on a 64-byte boundary, as NumPy writes it.
  const std::string ours = fm::io::encode_npy(at::arange(6, at::kFloat).view({3, 2}) / 4);
  EXPECT_EQ(ours, fm::io::read_file(fixture("numpy_f32_v1.npy")));
}

TEST(Npy, RejectsMalformedFiles) {
  const std::string good = fm::io::read_file(fixture("numpy_f32_v1.npy"));
  EXPECT_NE(npy_decode_error("not numpy at all").find("magic"), std::string::npos);
  EXPECT_NE(npy_decode_error(good.substr(0, 60)).find("truncated header"), std::string::npos);
  EXPECT_NE(npy_decode_error(good.substr(0, good.size() - 4)).find("truncated data"), std::string::npos);
  EXPECT_NE(npy_decode_error(good + "xx").find("trailing"), std::string::npos);
  std::string version = good;
  version[6] = 9;
  EXPECT_NE(npy_decode_error(version).find("version 9"), std::string::npos);
  EXPECT_NE(npy_decode_error(fm::io::read_file(fixture("numpy_big_endian.npy"))).find(">f4"), std::string::npos);
  std::string descr = good;
  descr.replace(descr.find("<f4"), 3, "<c8");
  EXPECT_NE(npy_decode_error(descr).find("unsupported dtype"), std::string::npos);
  std::string huge = good;
  huge.replace(huge.find("(3, 2)"), 6, "(9999999999999999, 9999999999999)");
  EXPECT_FALSE(npy_decode_error(huge).empty());
  std::string garbage = good;
  garbage.replace(garbage.find("'shape'"), 7, "'shapes'");
  EXPECT_NE(npy_decode_error(garbage).find("unknown key"), std::string::npos);
  try {
    fm::io::load_npy("/nonexistent/x.npy");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.npy"), std::string::npos);
  }
}
