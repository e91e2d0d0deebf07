#include "flowmatch/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <regex>
#include <stdexcept>

#include <zlib.h>

#include "flowmatch/io/atomic_file.h"

namespace flowmatch {

namespace fs = std::filesystem;

namespace {

// Layout: "FMCKPT" (6 bytes), format version (u16 LE), payload length (u64 LE),
// CRC-32 of the payload (u32 LE), reserved (u32), then the LibTorch archive.
constexpr char kMagic[6] = {'F', 'M', 'C', 'K', 'P', 'T'};
constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderSize = 24;

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

}  // namespace

void write_checkpoint(const std::string& path, torch::serialize::OutputArchive& archive) {
  std::string payload;
  archive.save_to([&payload](const void* data, size_t size) {
    payload.append(static_cast<const char*>(data), size);
    return size;
  });
  std::string file(kMagic, sizeof kMagic);
  put<uint16_t>(file, kVersion);
  put<uint64_t>(file, payload.size());
  put<uint32_t>(file, crc_of(payload.data(), payload.size()));
  put<uint32_t>(file, 0);
  file += payload;
  io::write_file_atomic(path, file);
}

void read_checkpoint(const std::string& path, torch::serialize::InputArchive& archive) {
  read_checkpoint_bytes(io::read_file(path), path, archive);
}

void read_checkpoint_bytes(const std::string& file, const std::string& path, torch::serialize::InputArchive& archive) {
  if (file.size() < kHeaderSize || std::memcmp(file.data(), kMagic, sizeof kMagic) != 0) {
    throw std::runtime_error("'" + path + "' is not a flowmatch checkpoint (bad magic)");
  }
  const auto version = get<uint16_t>(file, 6);
  if (version != kVersion) {
    throw std::runtime_error("'" + path + "': unsupported checkpoint version " + std::to_string(version) +
                             " (expected " + std::to_string(kVersion) + ")");
  }
  const auto length = get<uint64_t>(file, 8);
  const auto crc = get<uint32_t>(file, 16);
  if (file.size() - kHeaderSize < length) {
    throw std::runtime_error("'" + path + "': checkpoint is truncated (" + std::to_string(file.size() - kHeaderSize) +
                             " of " + std::to_string(length) + " payload bytes)");
  }
  if (file.size() - kHeaderSize > length) {
    throw std::runtime_error("'" + path + "': checkpoint has trailing bytes (corrupted)");
  }
  if (crc_of(file.data() + kHeaderSize, length) != crc) {
    throw std::runtime_error("'" + path + "': checkpoint is corrupted (checksum mismatch)");
  }
  try {
    archive.load_from(file.data() + kHeaderSize, length);
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + path + "': checkpoint payload cannot be read: " + std::string(e.what()).substr(0, 200));
  }
}

int64_t checkpoint_step(const std::string& path) {
  static const std::regex pattern(R"(step-(\d{1,18})\.ckpt)");
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
