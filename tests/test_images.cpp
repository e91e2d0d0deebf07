// Image data sets: the folder reader (labels from sub-folders, errors named), dequantization, the
// minibatch sampler, and Fashion-MNIST through the same interface.
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stb_image_write.h>

#include "flowmatch/data/idx.h"
#include "flowmatch/data/images.h"
#include "test_util.h"

namespace fm = flowmatch;
namespace fs = std::filesystem;

namespace {
void write_png(const std::string& path, int w, int h, int channels, unsigned char value) {
  std::vector<unsigned char> pixels(static_cast<size_t>(w * h * channels), value);
  pixels[0] = static_cast<unsigned char>(255 - value);  // a corner marks orientation
  ASSERT_NE(stbi_write_png(path.c_str(), w, h, channels, pixels.data(), w * channels), 0);
}
}  // namespace

TEST(ImageFolder, LabelsComeFromSortedSubFolders) {
  fmtest::TempDir dir;
  fs::create_directories(dir / "cat");
  fs::create_directories(dir / "ant");
  write_png(dir / "cat/1.png", 6, 4, 1, 10);
  write_png(dir / "cat/2.PNG", 6, 4, 1, 20);
  write_png(dir / "ant/x.png", 6, 4, 1, 30);
  std::ofstream(dir / "ant/readme.txt") << "not an image";
  auto data = fm::data::load_image_folder(dir.str());
  EXPECT_EQ(data.class_names, (std::vector<std::string>{"ant", "cat"}));
  EXPECT_EQ(data.images.sizes(), (std::vector<int64_t>{3, 1, 4, 6}));
  EXPECT_TRUE(data.labels.equal(at::tensor({0, 1, 1}, at::kLong)));
  EXPECT_EQ(data.images[0][0][1][1].item<uint8_t>(), 30);
  EXPECT_EQ(data.images[0][0][0][0].item<uint8_t>(), 225);
  EXPECT_EQ(data.images[2][0][3][5].item<uint8_t>(), 20);
  // Converted to RGB on request: the three channels equal the grey value.
  auto rgb = fm::data::load_image_folder(dir.str(), 3);
  EXPECT_EQ(rgb.images.sizes(), (std::vector<int64_t>{3, 3, 4, 6}));
  EXPECT_TRUE(rgb.images.select(1, 0).equal(rgb.images.select(1, 2)));
}

TEST(ImageFolder, ErrorsNameTheProblem) {
  fmtest::TempDir dir;
  auto message = [&](const std::string& path) {
    try {
      fm::data::load_image_folder(path);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(dir / "missing").find("not a directory"), std::string::npos);
  EXPECT_NE(message(dir.str()).find("no class sub-folders"), std::string::npos);
  fs::create_directories(dir / "a");
  EXPECT_NE(message(dir.str()).find("holds no images"), std::string::npos);
  write_png(dir / "a/1.png", 4, 4, 1, 0);
  write_png(dir / "a/2.png", 5, 4, 1, 0);
  EXPECT_NE(message(dir.str()).find("2.png' is 5x4"), std::string::npos);
  fs::remove(dir / "a/2.png");
  std::ofstream(dir / "a/3.png") << "garbage, not a PNG";
  EXPECT_NE(message(dir.str()).find("3.png"), std::string::npos);
  EXPECT_THROW(fm::data::load_image_folder(dir.str(), 2), std::invalid_argument);
}

TEST(ImageData, DequantizationRoundTripsEveryPixelValue) {
  at::Tensor pixels = at::arange(256, at::kLong).to(at::kByte).repeat({50});
  auto gen = fmtest::generator(1);
  at::Tensor x = fm::data::pixels_to_unit_range(pixels, gen);
  EXPECT_GE(x.min().item<double>(), -1.0);
  EXPECT_LT(x.max().item<double>(), 1.0);
  EXPECT_TRUE(fm::data::unit_range_to_pixels(x).equal(pixels));
  EXPECT_TRUE(fm::data::unit_range_to_pixels(fm::data::pixels_to_unit_range(pixels)).equal(pixels));
  // Dequantization noise is uniform within each pixel's bin: its mean offset is 1/2 bin (1/256 in x).
  at::Tensor offset = (x + 1) * 128 - pixels.to(at::kFloat);
  EXPECT_NEAR(offset.mean().item<double>(), 0.5, 0.02);  // sd of the mean: 0.29 / sqrt(12800) ≈ 0.0026
}

TEST(ImageData, SamplerDrawsLabelledFlatImages) {
  fm::data::ImageDataset data{at::arange(10, at::kLong).to(at::kByte).view({10, 1, 1, 1}).expand({10, 1, 2, 2}).contiguous() * 20,
                              at::arange(10, at::kLong) % 3, {"a", "b", "c"}};
  auto sampler = fm::data::image_sampler(data);
  auto gen = fmtest::generator(2);
  auto batch = sampler(1000, gen);
  EXPECT_EQ(batch.x.sizes(), (std::vector<int64_t>{1000, 4}));
  // Each row is an image of the data set with its own label.
  at::Tensor index = at::div(fm::data::unit_range_to_pixels(batch.x).select(1, 0).to(at::kLong), 20, "floor");
  EXPECT_TRUE(batch.labels.equal(index % 3));
  EXPECT_EQ(at::bincount(index).size(0), 10);  // every image drawn
  EXPECT_THROW(fm::data::image_sampler({at::zeros({0, 1, 2, 2}, at::kByte), at::zeros({0}, at::kLong), {}}), std::invalid_argument);
}

TEST(ImageData, FashionMnistTestSplitIsBalanced) {
  auto test = fm::data::fashion_mnist_dataset("test", fm::data::kFashionMnistDir);
  EXPECT_EQ(test.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(test.class_names.size(), 10u);
  EXPECT_TRUE(at::bincount(test.labels).equal(at::full({10}, 1000, at::kLong)));
}
