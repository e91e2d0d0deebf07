#pragma once
// Helpers shared by the tests: a temporary folder, tensor comparison, a seeded generator.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

namespace fmtest {

/// A fresh folder removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("flowmatch-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::all, ec);
    std::filesystem::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// A TCP port on 127.0.0.1 that was free a moment ago (for c10d rendezvous in tests).
inline int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

inline at::Generator generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

inline ::testing::AssertionResult AllClose(const at::Tensor& a, const at::Tensor& b, double rtol, double atol) {
  if (a.sizes() != b.sizes()) return ::testing::AssertionFailure() << "shapes differ: " << a.sizes() << " vs " << b.sizes();
  at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  at::Tensor err = (ad - bd).abs() - (bd.abs() * rtol + atol);
  const double worst = err.max().item<double>();
  if (worst > 0 || at::isnan(ad).any().item<bool>() || at::isnan(bd).any().item<bool>()) {
    return ::testing::AssertionFailure() << "max |a-b| = " << (ad - bd).abs().max().item<double>()
                                         << " exceeds rtol " << rtol << ", atol " << atol;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace fmtest
