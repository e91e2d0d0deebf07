// Point clouds from .npy files: validated on load, rows drawn uniformly; the D-dimensional Gaussian source.
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/io/npy.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(PointCloud, LoadsValidatesAndDrawsRows) {
  fmtest::TempDir dir;
  at::Tensor points = at::arange(30, at::kDouble).reshape({10, 3});
  fm::io::save_npy(dir / "p.npy", points);
  // float64 stays float64 (W2 of such files is computed at full precision); integers become float32.
  EXPECT_TRUE(at::equal(fm::data::load_point_cloud(dir / "p.npy"), points));
  fm::io::save_npy(dir / "i.npy", points.to(at::kLong));
  at::Tensor loaded = fm::data::load_point_cloud(dir / "i.npy");
  EXPECT_EQ(loaded.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(loaded, points.to(at::kFloat)));
  auto g = fmtest::generator(1);
  at::Tensor drawn = fm::data::point_cloud_sampler(loaded)(5000, g);
  ASSERT_EQ(drawn.sizes(), (at::IntArrayRef{5000, 3}));
  // Every drawn row is a stored row, and each of the 10 rows comes up about 500 times (5 binomial sd).
  at::Tensor index = (drawn.select(1, 0) / 3).round().to(at::kLong);
  EXPECT_TRUE(at::equal(drawn, loaded.index_select(0, index)));
  at::Tensor counts = at::bincount(index, {}, 10);
  EXPECT_LE((counts - 500).abs().max().item<int64_t>(), 5 * 21);
  at::Tensor bad = points.clone();
  bad[7][2] = NAN;
  fm::io::save_npy(dir / "bad.npy", bad);
  try {
    fm::data::load_point_cloud(dir / "bad.npy");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("data '" + (dir / "bad.npy") + "': row 7, column 2"), std::string::npos) << e.what();
  }
  fm::io::save_npy(dir / "flat.npy", at::zeros({4}));
  EXPECT_THROW(fm::data::load_point_cloud(dir / "flat.npy"), std::runtime_error);
  EXPECT_THROW(fm::data::load_point_cloud(dir / "missing.npy"), std::runtime_error);
  at::Tensor z = fm::data::gaussian_sampler(5)(20000, g);
  EXPECT_EQ(z.size(1), 5);
  EXPECT_NEAR(z.var().item<double>(), 1.0, 0.03);
}

// The seeded 80/10/10 split of finite data sets: train, validation and test are disjoint, together
// every row once, of sizes floor(0.8 n), floor(0.1 n) and the rest; the same seed gives the same split.
TEST(PointCloud, SplitRowsPartitionsTheRowsEightyTenTen) {
  const int64_t n = 12809;  // Fire's rows
  at::Tensor rows = at::arange(n, at::kLong).unsqueeze(1);
  at::Tensor train = fm::data::split_rows(rows, 3, 0), validation = fm::data::split_rows(rows, 3, 1),
             test = fm::data::split_rows(rows, 3, 2);
  EXPECT_EQ(train.size(0), 10247);
  EXPECT_EQ(validation.size(0), 1280);
  EXPECT_EQ(test.size(0), 1282);
  at::Tensor all = std::get<0>(at::cat({train, validation, test}).flatten().sort());
  EXPECT_TRUE(at::equal(all, rows.flatten()));
  EXPECT_TRUE(at::equal(validation, fm::data::split_rows(rows, 3, 1)));
  EXPECT_FALSE(at::equal(validation, fm::data::split_rows(rows, 4, 1)));
  EXPECT_THROW(fm::data::split_rows(rows, 3, 3), std::invalid_argument);
}
