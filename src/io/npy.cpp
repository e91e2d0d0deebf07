#include "flowmatch/io/npy.h"

#include <cctype>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <ATen/ATen.h>

#include "flowmatch/io/atomic_file.h"

namespace flowmatch::io {

namespace {

constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr int64_t kMaxElements = int64_t{1} << 40;

struct Dtype {
  const char* descr;
  at::ScalarType type;
  size_t size;
};
const Dtype kDtypes[] = {{"<f4", at::kFloat, 4}, {"<f8", at::kDouble, 8}, {"<i8", at::kLong, 8},
                         {"<i4", at::kInt, 4},   {"|u1", at::kByte, 1},   {"|b1", at::kBool, 1}};

[[noreturn]] void fail(const std::string& why) { throw std::runtime_error("invalid .npy: " + why); }

// A tiny parser for the header's Python dict literal.
struct HeaderParser {
  const std::string& s;
  size_t i = 0;
  void skip() {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  }
  bool eat(char c) {
    skip();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("header: expected '") + c + "' at offset " + std::to_string(i));
  }
  std::string string_literal() {
    skip();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail("header: expected a string at offset " + std::to_string(i));
    const char quote = s[i++];
    const size_t start = i;
    while (i < s.size() && s[i] != quote) ++i;
    if (i >= s.size()) fail("header: unterminated string");
    return s.substr(start, i++ - start);
  }
  bool boolean() {
    skip();
    if (s.compare(i, 4, "True") == 0) {
      i += 4;
      return true;
    }
    if (s.compare(i, 5, "False") == 0) {
      i += 5;
      return false;
    }
    fail("header: expected True or False at offset " + std::to_string(i));
  }
  std::vector<int64_t> shape() {
    expect('(');
    std::vector<int64_t> dims;
    while (!eat(')')) {
      skip();
      if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i]))) fail("header: bad shape entry at offset " + std::to_string(i));
      int64_t v = 0;
      while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
        if (v > kMaxElements) fail("header: dimension too large");
        v = v * 10 + (s[i++] - '0');
      }
      dims.push_back(v);
      if (!eat(',')) {
        expect(')');
        break;
      }
    }
    return dims;
  }
};

}  // namespace

std::string encode_npy(const at::Tensor& tensor) {
  if (!tensor.defined()) throw std::invalid_argument("encode_npy: undefined tensor");
  at::Tensor t = tensor.to(at::kCPU).contiguous();
  const Dtype* dtype = nullptr;
  for (const auto& d : kDtypes)
    if (d.type == t.scalar_type()) dtype = &d;
  if (dtype == nullptr) throw std::invalid_argument(std::string("encode_npy: unsupported dtype ") + c10::toString(t.scalar_type()));
  std::string shape = "(";
  for (int64_t k = 0; k < t.dim(); ++k) shape += (k > 0 ? ", " : "") + std::to_string(t.size(k));
  if (t.dim() == 1) shape += ",";
  shape += ")";
  std::string header = std::string("{'descr': '") + dtype->descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t unpadded = 6 + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out(kNpyMagic, 6);
  out += '\x01';
  out += '\x00';
  if (header.size() > 65535) throw std::invalid_argument("encode_npy: header too long");
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * dtype->size);
  return out;
}

at::Tensor decode_npy(const std::string& bytes) {
  if (bytes.size() < 10 || bytes.compare(0, 6, std::string(kNpyMagic, 6)) != 0) fail("missing \\x93NUMPY magic");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail("truncated header");
    for (int k = 3; k >= 0; --k) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + k]);
    offset = 12;
  } else {
    fail("unsupported format version " + std::to_string(major) + " (expected 1, 2 or 3)");
  }
  if (header_len > bytes.size() - offset) fail("truncated header (" + std::to_string(header_len) + " bytes announced)");
  const std::string header = bytes.substr(offset, header_len);
  offset += header_len;

  HeaderParser p{header};
  std::string descr;
  bool fortran = false, have_descr = false, have_order = false, have_shape = false;
  std::vector<int64_t> shape;
  p.expect('{');
  while (!p.eat('}')) {
    const std::string key = p.string_literal();
    p.expect(':');
    if (key == "descr") {
      descr = p.string_literal();
      have_descr = true;
    } else if (key == "fortran_order") {
      fortran = p.boolean();
      have_order = true;
    } else if (key == "shape") {
      shape = p.shape();
      have_shape = true;
    } else {
      fail("header: unknown key '" + key + "'");
    }
    if (!p.eat(',')) {
      p.expect('}');
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape) fail("header lacks descr, fortran_order or shape");
  if (descr == "<u1" || descr == "=u1") descr = "|u1";
  if (descr == "<b1" || descr == "=b1") descr = "|b1";
  const Dtype* dtype = nullptr;
  for (const auto& d : kDtypes)
    if (descr == d.descr) dtype = &d;
  if (dtype == nullptr) {
    fail("unsupported dtype '" + descr + "' (expected little-endian <f4, <f8, <i8, <i4, |u1 or |b1)");
  }
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d != 0 && count > kMaxElements / d) fail("shape has too many elements");
    count *= d;
  }
  const size_t expected = static_cast<size_t>(count) * dtype->size;
  const size_t available = bytes.size() - offset;
  if (available < expected) {
    fail("truncated data (" + std::to_string(available) + " bytes, shape needs " + std::to_string(expected) + ")");
  }
  if (available > expected) fail("trailing bytes after the data (" + std::to_string(available - expected) + ")");
  std::vector<int64_t> dims = shape;
  if (fortran) std::reverse(dims.begin(), dims.end());
  at::Tensor t = at::empty(dims, at::TensorOptions().dtype(dtype->type));
  if (expected > 0) std::memcpy(t.data_ptr(), bytes.data() + offset, expected);
  if (fortran && t.dim() > 1) {
    std::vector<int64_t> perm(static_cast<size_t>(t.dim()));
    for (int64_t k = 0; k < t.dim(); ++k) perm[static_cast<size_t>(k)] = t.dim() - 1 - k;
    t = t.permute(perm).contiguous();
  }
  return t;
}

void save_npy(const std::string& path, const at::Tensor& tensor) { write_file_atomic(path, encode_npy(tensor)); }

at::Tensor load_npy(const std::string& path) {
  const std::string bytes = read_file(path);
  try {
    return decode_npy(bytes);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("'" + path + "': " + e.what());
  }
}

}  // namespace flowmatch::io
