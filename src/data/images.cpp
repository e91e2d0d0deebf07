#include "flowmatch/data/images.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <stdexcept>

#include <ATen/ATen.h>
#include <stb_image.h>

#include "flowmatch/data/idx.h"

namespace flowmatch::data {

namespace fs = std::filesystem;

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

ImageDataset fashion_mnist_dataset(const std::string& split, const std::string& dir) {
  LabeledImages raw = load_fashion_mnist(split, dir);
  return {raw.images, raw.labels, fashion_mnist_class_names()};
}

namespace {
// Bounds on what an image folder may decode to.
constexpr int kMaxImageSide = 4096;
constexpr int64_t kMaxDecodedBytes = int64_t{8} << 30;

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp" || ext == ".tga" || ext == ".gif";
}

}  // namespace

ImageSplits image_splits(const std::string& data, const std::string& fashion_mnist_dir, int64_t channels) {
  ImageSplits s;
  try {
    if (data == "fashion-mnist") {
      s.train = fashion_mnist_dataset("train", fashion_mnist_dir);
      s.test = fashion_mnist_dataset("test", fashion_mnist_dir);
      s.held_out = true;
      s.target = "fashion-mnist";
      s.location = std::filesystem::absolute(fashion_mnist_dir).string();
    } else {
      s.train = load_image_folder(data, channels);
      s.test = s.train;
      s.target = "image-folder";
      s.location = std::filesystem::absolute(data).string();
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("--data " + data + ": " + e.what());
  }
  return s;
}

ImageDataset load_image_folder(const std::string& dir, int64_t channels) {
  if (channels != 0 && channels != 1 && channels != 3) {
    throw std::invalid_argument("image folder channels must be 0 (as the first image), 1 or 3, got " + std::to_string(channels));
  }
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw std::runtime_error("image folder '" + dir + "' is not a directory");
  std::vector<std::string> classes;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_directory()) classes.push_back(entry.path().filename().string());
  }
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) throw std::runtime_error("image folder '" + dir + "' has no class sub-folders (expected DIR/CLASS/IMAGE.png)");
  std::vector<at::Tensor> images;
  std::vector<int64_t> labels;
  int width = 0, height = 0;
  int64_t decoded_bytes = 0;
  for (size_t label = 0; label < classes.size(); ++label) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(fs::path(dir) / classes[label], ec)) {
      if (entry.is_regular_file() && is_image_file(entry.path())) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      int w = 0, h = 0, n = 0;
      // The header first: a small compressed file may decode to gigabytes.
      if (stbi_info(file.string().c_str(), &w, &h, &n) == 0) {
        throw std::runtime_error("image '" + file.string() + "': " + stbi_failure_reason());
      }
      if (static_cast<int64_t>(w) * h > int64_t{kMaxImageSide} * kMaxImageSide) {
        throw std::runtime_error("image '" + file.string() + "' is " + std::to_string(w) + "x" + std::to_string(h) + " pixels, more than " +
                                 std::to_string(kMaxImageSide) + "x" + std::to_string(kMaxImageSide));
      }
      decoded_bytes += static_cast<int64_t>(w) * h * 3;
      if (decoded_bytes > kMaxDecodedBytes) {
        throw std::runtime_error("image folder '" + dir + "' decodes to more than " + std::to_string(kMaxDecodedBytes >> 20) +
                                 " MiB (at '" + file.string() + "')");
      }
      if (channels == 0) channels = (n == 1 || n == 2) ? 1 : 3;
      unsigned char* data = stbi_load(file.string().c_str(), &w, &h, &n, static_cast<int>(channels));
      if (data == nullptr) throw std::runtime_error("image '" + file.string() + "': " + stbi_failure_reason());
      if (images.empty()) {
        width = w;
        height = h;
      } else if (w != width || h != height) {
        stbi_image_free(data);
        throw std::runtime_error("image '" + file.string() + "' is " + std::to_string(w) + "x" + std::to_string(h) +
                                 ", the others are " + std::to_string(width) + "x" + std::to_string(height));
      }
      at::Tensor hwc = at::from_blob(data, {h, w, channels}, at::kByte).clone();
      stbi_image_free(data);
      images.push_back(hwc.permute({2, 0, 1}).contiguous());
      labels.push_back(static_cast<int64_t>(label));
    }
  }
  if (images.empty()) throw std::runtime_error("image folder '" + dir + "' holds no images (.png, .jpg, .jpeg, .bmp, .tga, .gif)");
  return {at::stack(images), at::tensor(labels, at::kLong), classes};
}

at::Tensor pixels_to_unit_range(const at::Tensor& pixels, std::optional<at::Generator> generator) {
  at::Tensor p = pixels.to(at::kFloat);
  at::Tensor u = generator ? at::rand(p.sizes(), *generator, p.options()) : at::full_like(p, 0.5);
  return (p + u) * (2.0 / 256.0) - 1.0;
}

at::Tensor unit_range_to_pixels(const at::Tensor& x) {
  return ((x.to(at::kFloat) + 1.0) * 128.0).floor().clamp(0, 255).to(at::kByte);
}

LabeledSampler image_sampler(ImageDataset dataset) {
  if (!dataset.images.defined() || dataset.images.dim() != 4 || dataset.images.size(0) == 0) {
    throw std::invalid_argument("image_sampler: expected images of shape (N > 0, C, H, W)");
  }
  if (!dataset.labels.defined() || dataset.labels.dim() != 1 || dataset.labels.size(0) != dataset.images.size(0)) {
    throw std::invalid_argument("image_sampler: expected one label per image");
  }
  const int64_t n_images = dataset.images.size(0), d = dataset.pixels_per_image();
  at::Tensor flat = dataset.images.reshape({n_images, d}).contiguous();
  at::Tensor labels = dataset.labels.to(at::kLong).contiguous();
  return [flat, labels, n_images](int64_t n, at::Generator& generator) {
    at::Tensor index = at::randint(n_images, {n}, generator, at::TensorOptions().dtype(at::kLong));
    return LabeledBatch{pixels_to_unit_range(flat.index_select(0, index), generator), labels.index_select(0, index)};
  };
}

}  // namespace flowmatch::data
