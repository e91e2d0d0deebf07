#pragma once
/// \file
/// IDX files (LeCun's MNIST format, also Fashion-MNIST's), plain or gzip-compressed: the magic
/// number, the element type, the dimensions and the payload length are checked against the file
/// (and against `max_bytes`) before anything is allocated.

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

namespace flowmatch::data {

/// Largest decompressed size accepted by default (Fashion-MNIST's training images are 47 MB).
constexpr int64_t kDefaultIdxMaxBytes = int64_t{1} << 30;

/// Decodes IDX bytes (already decompressed): uint8/int8/int16/int32/float32/float64 elements,
/// 1 to 8 dimensions, big-endian, into a tensor of that dtype and shape. `name` is used in errors
/// ("'NAME': IDX ..."). Throws std::runtime_error naming what is wrong (magic, type, dimension,
/// truncated or trailing payload, size over `max_bytes`).
at::Tensor decode_idx(const std::string& bytes, const std::string& name, int64_t max_bytes = kDefaultIdxMaxBytes);

/// Inflates gzip bytes, refusing output over `max_bytes` (a "zip bomb") and naming a truncated or
/// corrupted stream. Bytes that do not start with the gzip magic are returned unchanged.
std::string gunzip_if_compressed(const std::string& bytes, const std::string& name,
                                 int64_t max_bytes = kDefaultIdxMaxBytes);

/// Reads an IDX file, gzip-compressed (.gz) or plain, checking it as above.
at::Tensor read_idx(const std::string& path, int64_t max_bytes = kDefaultIdxMaxBytes);

/// Fashion-MNIST as installed by Debian's dataset-fashion-mnist.
constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Images (N, 1, 28, 28) uint8 and labels (N) int64 in [0, 10) of the "train" (60 000) or "test"
/// (10 000) split, from `dir` (files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]). Throws
/// std::runtime_error naming the file when one is missing or malformed, or when the counts differ.
struct LabeledImages {
  at::Tensor images, labels;
};
LabeledImages load_fashion_mnist(const std::string& split, const std::string& dir = kFashionMnistDir);

}  // namespace flowmatch::data
