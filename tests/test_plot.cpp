// Plots decode as PNGs of the requested size with the series' colours in them.
#include <filesystem>
#include <set>

#include <stb_image.h>

#include "flowmatch/io/plot.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
struct Image {
  int w = 0, h = 0;
  std::vector<unsigned char> rgb;
  int64_t count_near(const fm::io::Color& c, int tol = 40) const {
    int64_t n = 0;
    for (size_t k = 0; k + 2 < rgb.size(); k += 3)
      if (std::abs(rgb[k] - c[0]) < tol && std::abs(rgb[k + 1] - c[1]) < tol && std::abs(rgb[k + 2] - c[2]) < tol) ++n;
    return n;
  }
};
Image load(const std::string& path) {
  Image img;
  int channels = 0;
  unsigned char* data = stbi_load(path.c_str(), &img.w, &img.h, &channels, 3);
  if (data != nullptr) {
    img.rgb.assign(data, data + img.w * img.h * 3);
    stbi_image_free(data);
  }
  return img;
}
size_t file_count(const std::string& dir) {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) n += e.is_regular_file();
  return n;
}
}  // namespace

TEST(Plot, ScatterShowsEverySeries) {
  fmtest::TempDir dir;
  fm::io::PlotStyle style;
  style.width = 320;
  style.height = 240;
  style.title = "test";
  fm::io::write_scatter_png(dir / "s.png",
                            {{at::randn({500, 2}), {0, 0, 255}, "blue", 1.0f}, {at::randn({500, 2}) + 2, {255, 0, 0}, "red", 1.0f}},
                            style);
  Image img = load(dir / "s.png");
  EXPECT_EQ(img.w, 320);
  EXPECT_EQ(img.h, 240);
  EXPECT_GT(img.count_near({0, 0, 255}), 200);
  EXPECT_GT(img.count_near({255, 0, 0}), 200);
  EXPECT_EQ(file_count(dir.str()), 1u);  // no temporary file left
}

TEST(Plot, TrajectoriesAndLines) {
  fmtest::TempDir dir;
  at::Tensor states = at::stack({at::zeros({20, 2}), at::randn({20, 2}), at::randn({20, 2}) * 3});
  fm::io::write_trajectories_png(dir / "t.png", states, {});
  Image t = load(dir / "t.png");
  EXPECT_EQ(t.w, 640);
  EXPECT_GT(t.count_near({214, 39, 40}, 20), 20);  // end points
  fm::io::write_line_png(dir / "l.png", {{{1, 2, 3, 4}, {1.0, 0.1, 0.01, 0.001}, {0, 160, 0}, "loss"}}, {}, true);
  EXPECT_GT(load(dir / "l.png").count_near({0, 160, 0}, 20), 50);
}

TEST(Plot, RejectsBadShapesAndPaths) {
  fmtest::TempDir dir;
  EXPECT_THROW(fm::io::write_scatter_png(dir / "x.png", {{at::zeros({5, 3}), {0, 0, 0}, ""}}, {}), std::invalid_argument);
  EXPECT_THROW(fm::io::write_trajectories_png(dir / "x.png", at::zeros({1, 5, 2}), {}), std::invalid_argument);
  EXPECT_THROW(fm::io::write_scatter_png("/nonexistent/dir/x.png", {{at::zeros({5, 2}), {0, 0, 0}, ""}}, {}),
               std::runtime_error);
}

TEST(Plot, ImageGridPlacesEveryImage) {
  // 6 grey 4×4 images, values 40·k, in 3 columns at scale 2: each cell's pixels hold its image's value.
  fmtest::TempDir dir;
  at::Tensor images = (at::arange(6, at::kLong) * 40).to(at::kByte).view({6, 1, 1, 1}).expand({6, 1, 4, 4}).contiguous();
  const std::string path = dir / "grid.png";
  flowmatch::io::write_image_grid_png(path, images, 3, 2);
  int w = 0, h = 0, n = 0;
  unsigned char* rgb = stbi_load(path.c_str(), &w, &h, &n, 3);
  ASSERT_NE(rgb, nullptr);
  const int gap = 2, cell = 8;
  EXPECT_EQ(w, gap + 3 * (cell + gap));
  EXPECT_EQ(h, gap + 2 * (cell + gap));
  for (int k = 0; k < 6; ++k) {
    const int x = gap + (k % 3) * (cell + gap) + 3, y = gap + (k / 3) * (cell + gap) + 5;
    for (int c = 0; c < 3; ++c) EXPECT_EQ(rgb[(y * w + x) * 3 + c], 40 * k) << k;
  }
  stbi_image_free(rgb);
  // Row labels widen the picture to the left; a title adds a band on top.
  flowmatch::io::write_image_grid_png(path, images, 3, 2, {"first", "second"}, "title");
  ASSERT_NE(stbi_info(path.c_str(), &w, &h, &n), 0);
  EXPECT_GT(w, gap + 3 * (cell + gap));
  EXPECT_GT(h, gap + 2 * (cell + gap));
  EXPECT_THROW(flowmatch::io::write_image_grid_png(path, images, 3, 2, {"one label for two rows"}), std::invalid_argument);
  EXPECT_THROW(flowmatch::io::write_image_grid_png(path, images.to(at::kFloat), 3), std::invalid_argument);
  EXPECT_THROW(flowmatch::io::write_image_grid_png(path, at::zeros({2, 2, 4, 4}, at::kByte), 3), std::invalid_argument);
}

TEST(Plot, HeatmapsHaveAColourBarAndTheTextIsAntiAliased) {
  // Two panels of a left-to-right ramp, values 0..1 (and a NaN cell): the picture is two panels wide,
  // each panel's right strip (the colour bar) holds both ends of the colour map, stacked top (high) to
  // bottom (low), and the title is drawn with intermediate grey levels (anti-aliased glyphs), where a
  // bitmap font gives only two.
  fmtest::TempDir dir;
  at::Tensor ramp = at::linspace(0, 1, 64, at::kDouble).expand({32, 64}).contiguous();
  ramp[0][0] = std::nan("");
  fm::io::PlotStyle style;
  style.width = 400;
  style.height = 300;
  const std::string path = dir / "h.png";
  fm::io::write_heatmaps_png(path, {{ramp, -1, 1, -1, 1, 0, 0, "Ramp panel"}, {ramp * 2, -1, 1, -1, 1, 0, 0, "Twice"}}, style);
  Image img = load(path);
  ASSERT_EQ(img.w, 800);
  ASSERT_EQ(img.h, 300);
  const fm::io::Color low{68, 1, 84}, high{253, 231, 37};
  for (int panel = 0; panel < 2; ++panel) {
    // The colour bar lies in the panel's last 100 columns; find its top-most and bottom-most coloured rows.
    int top_high = -1, bottom_low = -1;
    for (int y = 0; y < img.h; ++y)
      for (int x = panel * 400 + 300; x < panel * 400 + 400; ++x) {
        const unsigned char* p = &img.rgb[static_cast<size_t>((y * img.w + x) * 3)];
        auto near = [&](const fm::io::Color& c) { return std::abs(p[0] - c[0]) < 12 && std::abs(p[1] - c[1]) < 12 && std::abs(p[2] - c[2]) < 12; };
        if (near(high) && top_high < 0) top_high = y;
        if (near(low)) bottom_low = y;
      }
    ASSERT_GE(top_high, 0) << panel;
    ASSERT_GE(bottom_low, 0) << panel;
    EXPECT_LT(top_high, bottom_low) << panel;
    EXPECT_GT(bottom_low - top_high, 150) << panel;  // the bar spans the data area's height
  }
  std::set<int> greys;
  for (int y = 0; y < 30; ++y)
    for (int x = 0; x < 200; ++x) {
      const unsigned char* p = &img.rgb[static_cast<size_t>((y * img.w + x) * 3)];
      if (p[0] == p[1] && p[1] == p[2]) greys.insert(p[0]);
    }
  EXPECT_GT(greys.size(), 10u);
  EXPECT_TRUE(greys.count(255) && *greys.begin() < 80);  // white paper and dark ink
  EXPECT_THROW(fm::io::write_heatmaps_png(path, {{ramp, 1, 1, -1, 1}}, style), std::invalid_argument);
  EXPECT_THROW(fm::io::write_heatmaps_png(path, {}, style), std::invalid_argument);
}

TEST(Plot, InvalidUtf8IsDrawnAndOversizedPicturesAreRefusedBeforeDrawing) {
  // A title with a cut multi-byte character and a lone continuation byte still gives a full picture (cairo
  // would stop drawing on invalid UTF-8); a grid wider than cairo's 32767 pixels is refused up front.
  fmtest::TempDir dir;
  fm::io::PlotStyle style;
  style.width = 200;
  style.height = 150;
  style.title = std::string("caf\xC3", 4) + " \x80 end";
  fm::io::write_scatter_png(dir / "t.png", {{at::randn({50, 2}), {255, 0, 0}, "r\xE2\x82", 1.0f}}, style);
  Image img = load(dir / "t.png");
  EXPECT_EQ(img.w, 200);
  EXPECT_GT(img.count_near({255, 0, 0}, 20), 100);  // the legend square: drawing went on after the title
  at::Tensor wide = at::zeros({400, 1, 28, 28}, at::kByte);
  EXPECT_THROW(fm::io::write_image_grid_png(dir / "g.png", wide, 400), std::invalid_argument);
  EXPECT_THROW(fm::io::write_heatmaps_png(dir / "h.png", std::vector<fm::io::Heatmap>(200, {at::zeros({2, 2}), 0, 1, 0, 1}), style),
               std::invalid_argument);
  EXPECT_EQ(file_count(dir.str()), 1u);
}
