#include "flowmatch/io/json.h"
#include "flowmatch/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <regex>
#include <stdexcept>

#include <zlib.h>

#include <ATen/ATen.h>

#include "flowmatch/io/atomic_file.h"

namespace flowmatch {

namespace fs = std::filesystem;

namespace {

// Layout: "FMCKPT" (6 bytes), format version (u16 LE), payload length (u64 LE), CRC-32 of the
// payload (u32 LE), reserved (u32); payload: description length (u64 LE), the description (JSON
// {"meta": {...}, "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}), then the tensor
// bytes (little-endian, C order) at their offsets.
constexpr char kCheckpointMagic[6] = {'F', 'M', 'C', 'K', 'P', 'T'};
constexpr uint16_t kVersion = 2;
constexpr size_t kHeaderSize = 24;
constexpr int64_t kMaxDimension = int64_t{1} << 40;

uint32_t crc_of(const char* data, size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (size > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data), chunk);
    data += chunk;
    size -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

template <typename T>
void put(std::string& out, T value) {
  for (size_t k = 0; k < sizeof(T); ++k) out += static_cast<char>((static_cast<uint64_t>(value) >> (8 * k)) & 0xff);
}

template <typename T>
T get(const std::string& in, size_t offset) {
  uint64_t v = 0;
  for (size_t k = 0; k < sizeof(T); ++k) v |= static_cast<uint64_t>(static_cast<unsigned char>(in[offset + k])) << (8 * k);
  return static_cast<T>(v);
}

const std::vector<std::pair<at::ScalarType, std::string>>& dtype_names() {
  static const std::vector<std::pair<at::ScalarType, std::string>> names = {
      {at::kFloat, "float32"}, {at::kDouble, "float64"}, {at::kHalf, "float16"}, {at::kBFloat16, "bfloat16"},
      {at::kLong, "int64"},    {at::kInt, "int32"},      {at::kByte, "uint8"},  {at::kBool, "bool"}};
  return names;
}

[[noreturn]] void fail(const std::string& name, const std::string& what) { throw std::runtime_error("'" + name + "': " + what); }

}  // namespace

std::string encode_checkpoint(const CheckpointContents& contents) {
  nlohmann::json entries = nlohmann::json::array();
  std::string blob;
  for (const auto& [tensor_name, value] : contents.tensors) {
    if (!value.defined()) throw std::invalid_argument("checkpoint tensor '" + tensor_name + "' is undefined");
    std::string dtype;
    for (const auto& [type, type_name] : dtype_names())
      if (type == value.scalar_type()) dtype = type_name;
    if (dtype.empty()) {
      throw std::invalid_argument("checkpoint tensor '" + tensor_name + "' has unsupported dtype " +
                                  std::string(c10::toString(value.scalar_type())));
    }
    const at::Tensor t = value.detach().to(at::kCPU).contiguous();
    const size_t nbytes = t.numel() * t.element_size();
    entries.push_back({{"name", tensor_name}, {"dtype", dtype}, {"shape", t.sizes().vec()}, {"offset", blob.size()}, {"nbytes", nbytes}});
    blob.append(static_cast<const char*>(t.data_ptr()), nbytes);
  }
  const std::string description = nlohmann::json{{"meta", contents.meta}, {"tensors", entries}}.dump();
  std::string payload;
  put<uint64_t>(payload, description.size());
  payload += description;
  payload += blob;
  std::string file(kCheckpointMagic, sizeof kCheckpointMagic);
  put<uint16_t>(file, kVersion);
  put<uint64_t>(file, payload.size());
  put<uint32_t>(file, crc_of(payload.data(), payload.size()));
  put<uint32_t>(file, 0);
  file += payload;
  return file;
}

void write_checkpoint(const std::string& path, const CheckpointContents& contents) {
  io::write_file_atomic(path, encode_checkpoint(contents));
}

CheckpointContents read_checkpoint(const std::string& path) { return decode_checkpoint(io::read_file(path), path); }

CheckpointContents decode_checkpoint(const std::string& file, const std::string& path) {
  if (file.size() < kHeaderSize || std::memcmp(file.data(), kCheckpointMagic, sizeof kCheckpointMagic) != 0) {
    fail(path, "not a flowmatch checkpoint (bad magic)");
  }
  const auto version = get<uint16_t>(file, 6);
  if (version == 1) {
    fail(path, "checkpoint format 1 (a LibTorch archive, written by flowmatch 0.1 before the format change) is "
               "no longer read; retrain the run");
  }
  if (version != kVersion) {
    fail(path, "unsupported checkpoint version " + std::to_string(version) + " (expected " + std::to_string(kVersion) + ")");
  }
  const auto length = get<uint64_t>(file, 8);
  const auto crc = get<uint32_t>(file, 16);
  const uint64_t have = file.size() - kHeaderSize;
  if (have < length) {
    fail(path, "checkpoint is truncated (" + std::to_string(have) + " of " + std::to_string(length) + " payload bytes)");
  }
  if (have > length) fail(path, "checkpoint has trailing bytes (corrupted)");
  if (crc_of(file.data() + kHeaderSize, length) != crc) fail(path, "checkpoint is corrupted (checksum mismatch)");

  // The payload: from here on the checksum matched, but a crafted file may still lie.
  const char* payload = file.data() + kHeaderSize;
  if (length < 8) fail(path, "checkpoint payload is too short for its description");
  uint64_t description_length = 0;
  for (int k = 0; k < 8; ++k) description_length |= static_cast<uint64_t>(static_cast<unsigned char>(payload[k])) << (8 * k);
  if (description_length > length - 8) fail(path, "checkpoint description length exceeds the payload");
  nlohmann::json description;
  try {
    description = io::parse_json(payload + 8, payload + 8 + description_length, "checkpoint description");
  } catch (const std::runtime_error& e) {
    fail(path, std::string(e.what()).find("nested deeper") != std::string::npos ? e.what()
                                                                                 : std::string("checkpoint description is not JSON: ") + e.what());
  }
  const uint64_t blob_size = length - 8 - description_length;
  const char* blob = payload + 8 + description_length;
  if (!description.is_object() || !description.contains("meta") || !description["meta"].is_object() ||
      !description.contains("tensors") || !description["tensors"].is_array()) {
    fail(path, "checkpoint description lacks 'meta' (object) or 'tensors' (array)");
  }
  CheckpointContents out;
  out.meta = description["meta"];
  for (const auto& entry : description["tensors"]) {
    auto field = [&](const char* key) -> const nlohmann::json& {
      if (!entry.is_object() || !entry.contains(key)) fail(path, std::string("checkpoint tensor entry lacks '") + key + "'");
      return entry[key];
    };
    const auto& name_json = field("name");
    if (!name_json.is_string()) fail(path, "checkpoint tensor name is not a string");
    const std::string tensor_name = name_json.get<std::string>();
    const auto& dtype_json = field("dtype");
    at::ScalarType dtype = at::kFloat;
    bool known = false;
    for (const auto& [type, type_name] : dtype_names())
      if (dtype_json.is_string() && dtype_json.get<std::string>() == type_name) dtype = type, known = true;
    if (!known) fail(path, "checkpoint tensor '" + tensor_name + "' has unknown dtype " + dtype_json.dump());
    const auto& shape_json = field("shape");
    if (!shape_json.is_array() || shape_json.size() > 16) fail(path, "checkpoint tensor '" + tensor_name + "' has a bad shape");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : shape_json) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(kMaxDimension)) {
        fail(path, "checkpoint tensor '" + tensor_name + "' has a bad dimension " + d.dump());
      }
      const uint64_t n = d.get<uint64_t>();
      if (n != 0 && numel > static_cast<uint64_t>(kMaxDimension) / n) fail(path, "checkpoint tensor '" + tensor_name + "' is too large");
      numel *= n;
      shape.push_back(static_cast<int64_t>(n));
    }
    const auto& offset_json = field("offset");
    const auto& nbytes_json = field("nbytes");
    if (!offset_json.is_number_unsigned() || !nbytes_json.is_number_unsigned()) {
      fail(path, "checkpoint tensor '" + tensor_name + "' has a bad offset or size");
    }
    const uint64_t offset = offset_json.get<uint64_t>(), nbytes = nbytes_json.get<uint64_t>();
    if (nbytes != numel * c10::elementSize(dtype)) {
      fail(path, "checkpoint tensor '" + tensor_name + "' has " + std::to_string(nbytes) + " bytes for its shape");
    }
    if (offset > blob_size || nbytes > blob_size - offset) {
      fail(path, "checkpoint tensor '" + tensor_name + "' lies outside the file");
    }
    if (out.tensors.count(tensor_name)) fail(path, "checkpoint tensor '" + tensor_name + "' appears twice");
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
    if (nbytes > 0) std::memcpy(t.data_ptr(), blob + offset, nbytes);
    if (dtype == at::kBool && nbytes > 0) {
      // Only 0 and 1 are bools; anything else is undefined behaviour in C++.
      const auto* b = reinterpret_cast<const unsigned char*>(blob + offset);
      for (uint64_t k = 0; k < nbytes; ++k)
        if (b[k] > 1) fail(path, "checkpoint tensor '" + tensor_name + "' holds a bool that is neither 0 nor 1");
    }
    out.tensors.emplace(tensor_name, t);
  }
  return out;
}

int64_t checkpoint_step(const std::string& path) {
  // At most 15 digits (steps below 10^15): a stray step-999999999999999999.ckpt is not a checkpoint name.
  static const std::regex pattern(R"(step-(\d{1,15})\.ckpt)");
  std::smatch m;
  const std::string name = fs::path(path).filename().string();
  if (!std::regex_match(name, m, pattern)) return -1;
  return std::stoll(m[1].str());
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const int64_t step = checkpoint_step(entry.path().string());
    if (step >= 0) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

}  // namespace flowmatch
