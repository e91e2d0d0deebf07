// PyTorch tensor files: our files open with Python's torch.load, and torch.save files open here.
#include <fstream>

#include "flowmatch/io/pt.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(PtFiles, RoundTripAndPythonInterop) {
  fmtest::TempDir dir;
  at::Tensor x = at::arange(12, at::kDouble).reshape({3, 4}) / 7;
  fm::io::save_pt(dir / "cpp.pt", x);
  EXPECT_TRUE(at::equal(fm::io::load_pt(dir / "cpp.pt"), x));
  const std::string script = std::string(FLOWMATCH_SOURCE_DIR) + "/tests/python/pt_roundtrip.py";
  ASSERT_EQ(std::system(("/usr/bin/python3 '" + script + "' '" + dir.str() + "'").c_str()), 0);
  EXPECT_TRUE(at::equal(fm::io::load_pt(dir / "python.pt"), 3 * x));
  EXPECT_TRUE(at::equal(fm::io::load_array(dir / "python.pt"), 3 * x));  // by extension
  try {
    fm::io::load_pt(dir / "dict.pt");
    FAIL();
  } catch (const std::runtime_error& e) {
    // LibTorch's unpickler reads tensors, not every Python object: either way the file is named.
    EXPECT_NE(std::string(e.what()).find("dict.pt"), std::string::npos) << e.what();
  }
  const auto nested = fm::io::load_pt_tensors(dir / "nested.pt");
  ASSERT_EQ(nested.size(), 3u);
  EXPECT_TRUE(at::equal(nested.at("points"), x));
  EXPECT_TRUE(at::equal(nested.at("state_dict.weight"), at::arange(8, at::kDouble).reshape({2, 4})));
  EXPECT_TRUE(at::equal(nested.at("state_dict.bias"), at::tensor({-1.0, 1.0}, at::kDouble)));
  EXPECT_TRUE(at::equal(fm::io::load_pt_tensors(dir / "python.pt").at(""), 3 * x));
  std::ofstream(dir / "junk.pt") << "definitely not a pickle";
  EXPECT_THROW(fm::io::load_pt_tensors(dir / "junk.pt"), std::runtime_error);
  EXPECT_THROW(fm::io::load_pt(dir / "junk.pt"), std::runtime_error);
  EXPECT_THROW(fm::io::load_pt(dir / "missing.pt"), std::runtime_error);
  fm::io::save_array(dir / "y.npy", x);
  EXPECT_TRUE(at::equal(fm::io::load_array(dir / "y.npy"), x));
}
