#pragma once
/// \file
/// NumPy .npy files (format versions 1.0, 2.0 and 3.0; C order; little-endian float32,
/// float64, int64, int32, uint8 and bool).

#include <string>

#include <ATen/Tensor.h>

namespace flowmatch::io {

/// Encodes a tensor as .npy bytes (contiguous copy; CPU).
std::string encode_npy(const at::Tensor& tensor);
/// Decodes .npy bytes; validates magic, version, header, dtype, order and that the data length
/// matches the shape. Throws std::runtime_error with a one-line reason.
at::Tensor decode_npy(const std::string& bytes);

/// Writes atomically (temporary file + rename).
void save_npy(const std::string& path, const at::Tensor& tensor);
/// Reads and decodes; errors name the file.
at::Tensor load_npy(const std::string& path);

}  // namespace flowmatch::io
