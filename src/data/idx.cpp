#include "flowmatch/data/idx.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>
#include <stdexcept>

#include <ATen/ATen.h>
#include <zlib.h>

#include "flowmatch/io/atomic_file.h"

namespace flowmatch::data {

namespace {

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw std::runtime_error("'" + name + "': " + what);
}

uint32_t big_endian_u32(const std::string& b, size_t offset) {
  return (uint32_t(static_cast<unsigned char>(b[offset])) << 24) | (uint32_t(static_cast<unsigned char>(b[offset + 1])) << 16) |
         (uint32_t(static_cast<unsigned char>(b[offset + 2])) << 8) | uint32_t(static_cast<unsigned char>(b[offset + 3]));
}

}  // namespace

std::string gunzip_if_compressed(const std::string& bytes, const std::string& name, int64_t max_bytes) {
  if (bytes.size() < 2 || static_cast<unsigned char>(bytes[0]) != 0x1f || static_cast<unsigned char>(bytes[1]) != 0x8b) {
    return bytes;
  }
  z_stream stream{};
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) fail(name, "cannot start gzip decompression");
  std::string out;
  char chunk[1 << 16];
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  size_t left = bytes.size();
  int status = Z_OK;
  while (status != Z_STREAM_END) {
    if (stream.avail_in == 0 && left > 0) {
      const uInt take = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
      stream.avail_in = take;
      left -= take;
    }
    stream.next_out = reinterpret_cast<Bytef*>(chunk);
    stream.avail_out = sizeof chunk;
    status = inflate(&stream, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END) {
      const std::string message = stream.msg ? stream.msg : "error " + std::to_string(status);
      inflateEnd(&stream);
      if (status == Z_BUF_ERROR) fail(name, "gzip stream is truncated");
      fail(name, "gzip stream is corrupted (" + message + ")");
    }
    out.append(chunk, sizeof chunk - stream.avail_out);
    if (static_cast<int64_t>(out.size()) > max_bytes) {
      inflateEnd(&stream);
      fail(name, "decompresses to more than " + std::to_string(max_bytes) + " bytes (limit)");
    }
    if (status == Z_OK && stream.avail_in == 0 && left == 0 && stream.avail_out != 0) {
      inflateEnd(&stream);
      fail(name, "gzip stream is truncated");
    }
  }
  inflateEnd(&stream);
  return out;
}

at::Tensor decode_idx(const std::string& b, const std::string& name, int64_t max_bytes) {
  if (b.size() < 4) fail(name, "IDX file is truncated (" + std::to_string(b.size()) + " bytes, the header needs at least 4)");
  if (b[0] != 0 || b[1] != 0) {
    fail(name, "not an IDX file (magic starts with bytes " + std::to_string(static_cast<unsigned char>(b[0])) + ", " +
                   std::to_string(static_cast<unsigned char>(b[1])) + "; expected 0, 0)");
  }
  const unsigned type = static_cast<unsigned char>(b[2]);
  at::ScalarType dtype;
  switch (type) {
    case 0x08: dtype = at::kByte; break;
    case 0x09: dtype = at::kChar; break;
    case 0x0B: dtype = at::kShort; break;
    case 0x0C: dtype = at::kInt; break;
    case 0x0D: dtype = at::kFloat; break;
    case 0x0E: dtype = at::kDouble; break;
    default: fail(name, "IDX element type 0x" + [&] {
                          char hex[8];
                          std::snprintf(hex, sizeof hex, "%02x", type);
                          return std::string(hex);
                        }() + " is unknown (expected 08, 09, 0b, 0c, 0d or 0e)");
  }
  const size_t ndim = static_cast<unsigned char>(b[3]);
  if (ndim < 1 || ndim > 8) fail(name, "IDX has " + std::to_string(ndim) + " dimensions (expected 1 to 8)");
  const size_t header = 4 + 4 * ndim;
  if (b.size() < header) {
    fail(name, "IDX header is truncated (" + std::to_string(b.size()) + " bytes, " + std::to_string(ndim) +
                   " dimensions need " + std::to_string(header) + ")");
  }
  const int64_t element = static_cast<int64_t>(c10::elementSize(dtype));
  std::vector<int64_t> shape;
  int64_t count = 1;
  for (size_t d = 0; d < ndim; ++d) {
    const uint32_t n = big_endian_u32(b, 4 + 4 * d);
    if (n == 0) fail(name, "IDX dimension " + std::to_string(d) + " is 0");
    // count · element stays below max_bytes ≤ 2^62 at every step, so the products cannot overflow.
    if (static_cast<int64_t>(n) > max_bytes / element / count) {
      fail(name, "IDX dimensions describe more than " + std::to_string(max_bytes) + " bytes (limit)");
    }
    count *= n;
    shape.push_back(n);
  }
  const uint64_t expected = static_cast<uint64_t>(count * element);
  const uint64_t have = b.size() - header;
  if (have < expected) {
    fail(name, "IDX payload is truncated (" + std::to_string(have) + " of " + std::to_string(expected) + " bytes)");
  }
  if (have > expected) fail(name, "IDX payload has " + std::to_string(have - expected) + " trailing bytes");
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype));
  auto* dst = static_cast<unsigned char*>(out.data_ptr());
  const auto* src = reinterpret_cast<const unsigned char*>(b.data() + header);
  if (element == 1) {
    std::memcpy(dst, src, expected);
  } else {
    for (int64_t i = 0; i < count; ++i)  // big-endian to the machine's (little-endian) order
      for (int64_t k = 0; k < element; ++k) dst[i * element + k] = src[i * element + (element - 1 - k)];
  }
  if (at::isFloatingType(dtype)) {
    at::Tensor bad = at::logical_not(at::isfinite(out)).reshape(-1).nonzero();
    if (bad.numel() > 0) {
      fail(name, "IDX element " + std::to_string(bad[0][0].item<int64_t>()) + " (flat index) is NaN or Inf");
    }
  }
  return out;
}

at::Tensor read_idx(const std::string& path, int64_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw std::runtime_error("'" + path + "': no such IDX file");
  return decode_idx(gunzip_if_compressed(io::read_file(path), path, max_bytes), path, max_bytes);
}

LabeledImages load_fashion_mnist(const std::string& split, const std::string& dir) {
  if (split != "train" && split != "test") {
    throw std::invalid_argument("Fashion-MNIST split must be train or test, got " + split);
  }
  const std::string prefix = split == "train" ? "train" : "t10k";
  auto find = [&](const std::string& stem) {
    for (const std::string& candidate : {dir + "/" + stem + ".gz", dir + "/" + stem}) {
      std::error_code ec;
      if (std::filesystem::is_regular_file(candidate, ec)) return candidate;
    }
    throw std::runtime_error("Fashion-MNIST file " + dir + "/" + stem + "[.gz] not found (Debian: apt install dataset-fashion-mnist)");
  };
  const std::string image_file = find(prefix + "-images-idx3-ubyte"), label_file = find(prefix + "-labels-idx1-ubyte");
  at::Tensor images = read_idx(image_file), labels = read_idx(label_file);
  if (images.dim() != 3 || images.scalar_type() != at::kByte) {
    throw std::runtime_error("'" + image_file + "': expected uint8 images (N, rows, columns)");
  }
  if (labels.dim() != 1 || labels.scalar_type() != at::kByte) throw std::runtime_error("'" + label_file + "': expected uint8 labels (N)");
  if (labels.size(0) != images.size(0)) {
    throw std::runtime_error("'" + label_file + "' has " + std::to_string(labels.size(0)) + " labels for " +
                             std::to_string(images.size(0)) + " images");
  }
  if (labels.max().item<int64_t>() > 9) throw std::runtime_error("'" + label_file + "': a label is above 9");
  return {images.unsqueeze(1), labels.to(at::kLong)};
}

}  // namespace flowmatch::data
