#include "targets.h"

#include <unistd.h>

#include <exception>
#include <filesystem>
#include <sstream>

#include <zlib.h>

#include "../apps/flowmatch/config_file.h"
#include "flowmatch/data/idx.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/io/pt.h"
#include "flowmatch/train.h"

namespace flowmatch_fuzz {

namespace {
std::string bytes(const uint8_t* data, size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

template <typename F>
bool accepted(F&& f) {
  try {
    f();
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

// load_model reads a path: one scratch file per process (in RAM-backed /dev/shm when there is one).
std::string scratch_file() {
  static const std::string path = [] {
    std::error_code ec;
    const std::string dir = std::filesystem::is_directory("/dev/shm", ec) ? "/dev/shm" : std::filesystem::temp_directory_path().string();
    return dir + "/flowmatch-fuzz-" + std::to_string(::getpid()) + ".ckpt";
  }();
  return path;
}

bool load_checkpoint_file(const std::string& file) {
  const std::string path = scratch_file();
  flowmatch::io::write_file_atomic(path, file);
  const bool ok = accepted([&] { flowmatch::load_model(path); });
  std::error_code ec;
  std::filesystem::remove(path, ec);
  return ok;
}
}  // namespace

bool pt(const uint8_t* data, size_t size) {
  const std::string path = scratch_file() + ".pt";
  flowmatch::io::write_file_atomic(path, bytes(data, size));
  const bool ok = accepted([&] { flowmatch::io::load_pt_tensors(path); });
  std::error_code ec;
  std::filesystem::remove(path, ec);
  return ok;
}

bool npy(const uint8_t* data, size_t size) {
  return accepted([&] { flowmatch::io::decode_npy(bytes(data, size)); });
}

bool idx(const uint8_t* data, size_t size) {
  constexpr int64_t limit = int64_t{64} << 20;
  return accepted([&] { flowmatch::data::decode_idx(flowmatch::data::gunzip_if_compressed(bytes(data, size), "fuzz", limit), "fuzz", limit); });
}

bool checkpoint(const uint8_t* data, size_t size) { return load_checkpoint_file(bytes(data, size)); }

std::string checkpoint_header(const std::string& payload) {
  std::string h = "FMCKPT";
  auto put = [&](uint64_t v, int n) {
    for (int k = 0; k < n; ++k) h += static_cast<char>((v >> (8 * k)) & 0xff);
  };
  put(2, 2);  // format version
  put(payload.size(), 8);
  put(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(payload.data()), static_cast<uInt>(payload.size())), 4);
  put(0, 4);
  return h;
}

bool checkpoint_payload(const uint8_t* data, size_t size) {
  const std::string payload = bytes(data, size);
  return load_checkpoint_file(checkpoint_header(payload) + payload);
}

bool config(const uint8_t* data, size_t size) {
  return accepted([&] {
    std::istringstream in(bytes(data, size));
    fmcli::expand_config_stream({"flowmatch", "train", "--config", "fuzz.toml"}, in, "fuzz.toml");
  });
}

}  // namespace flowmatch_fuzz
