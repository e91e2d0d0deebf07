// Replays the fuzzers' seeds and kept findings (fuzz/seeds, fuzz/regressions) through the same
// reader entries that `make fuzz` drives, plus deterministic truncations and bit flips of every
// seed: valid seeds must be accepted, and nothing may crash (ASan/UBSan in make test-sanitize).
#include <filesystem>
#include <functional>
#include <map>

#include "../fuzz/targets.h"
#include "flowmatch/io/atomic_file.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using Target = std::function<bool(const uint8_t*, size_t)>;

const std::map<std::string, Target>& targets() {
  static const std::map<std::string, Target> all = {
      {"npy", flowmatch_fuzz::npy},
      {"idx", flowmatch_fuzz::idx},
      {"checkpoint", flowmatch_fuzz::checkpoint},
      {"checkpoint_payload", flowmatch_fuzz::checkpoint_payload},
      {"config", flowmatch_fuzz::config},
      {"pt", flowmatch_fuzz::pt}};
  return all;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().filename().string()[0] != '.') out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool run(const Target& target, const std::string& bytes) {
  return target(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace

TEST(FuzzRegressions, SeedsAreAcceptedAndTheirDamagedVariantsDoNotCrash) {
  for (const auto& [name, target] : targets()) {
    const auto seeds = files_in(std::string(FLOWMATCH_SOURCE_DIR) + "/fuzz/seeds/" + name);
    ASSERT_FALSE(seeds.empty()) << name;
    for (const auto& seed : seeds) {
      const std::string bytes = flowmatch::io::read_file(seed);
      EXPECT_TRUE(run(target, bytes)) << seed << " is valid and must be accepted";
      // Truncations at up to 64 places and single bit flips at up to 64 places.
      const size_t n = bytes.size(), stride = std::max<size_t>(1, n / 64);
      for (size_t cut = 0; cut < n; cut += stride) run(target, bytes.substr(0, cut));
      for (size_t at = 0; at < n; at += stride) {
        std::string flipped = bytes;
        flipped[at] = static_cast<char>(flipped[at] ^ (1 << (at % 8)));
        run(target, flipped);
      }
    }
  }
  // Damage a checksummed file must be refused (the flip above may land in the payload's unused
  // bytes for the payload target, but never passes the whole-file CRC).
  const std::string ckpt = flowmatch::io::read_file(std::string(FLOWMATCH_SOURCE_DIR) + "/fuzz/seeds/checkpoint/mlp-width4.ckpt");
  std::string flipped = ckpt;
  flipped[ckpt.size() / 2] = static_cast<char>(flipped[ckpt.size() / 2] ^ 1);
  EXPECT_FALSE(run(targets().at("checkpoint"), flipped));
  EXPECT_FALSE(run(targets().at("checkpoint"), ckpt.substr(0, ckpt.size() - 1)));
}

TEST(FuzzRegressions, KeptFindingsAreRefusedCleanly) {
  size_t replayed = 0;
  for (const auto& [name, target] : targets()) {
    for (const auto& file : files_in(std::string(FLOWMATCH_SOURCE_DIR) + "/fuzz/regressions/" + name)) {
      run(target, flowmatch::io::read_file(file));  // must return (accepted or refused), not crash
      ++replayed;
    }
  }
  RecordProperty("replayed", static_cast<int>(replayed));
}
