#include "flowmatch/io/atomic_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace flowmatch::io {

namespace fs = std::filesystem;

namespace {
std::string system_error(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}
}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  // Never rename over something that is not a regular file: a symlink, a device (as root, --out
  // /dev/null would replace /dev/null), a folder.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    throw std::runtime_error("'" + path + "' exists and is not a regular file (" +
                             (S_ISLNK(st.st_mode) ? "a symbolic link" : S_ISDIR(st.st_mode) ? "a folder" : "a device or other special file") +
                             "); refusing to replace it");
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(system_error("cannot create", tmp));
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (w < 0) {
      if (errno == EINTR) continue;
      const std::string message = system_error("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error(message);
    }
    written += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string message = system_error("cannot flush", tmp);
    ::unlink(tmp.c_str());
    throw std::runtime_error(message);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string message = system_error("cannot rename into", path);
    ::unlink(tmp.c_str());
    throw std::runtime_error(message);
  }
  // Make the rename itself durable.
  const std::string dir = fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string read_file(const std::string& path, uint64_t max_bytes) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw std::runtime_error("'" + path + "' is a folder, expected a file");
  // Only regular files (after links): /dev/zero or a pipe would be read without end.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) throw std::runtime_error("'" + path + "' is not a regular file (a device, pipe or socket)");
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
      throw std::runtime_error("'" + path + "' has " + std::to_string(st.st_size) + " bytes, more than the " +
                               std::to_string(max_bytes) + " this reader accepts");
    }
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(system_error("cannot open", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw std::runtime_error(system_error("cannot read", path));
  return buffer.str();
}

void ensure_writable_directory(const std::string& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw std::runtime_error("'" + dir + "' exists and is not a folder");
  }
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create folder '" + dir + "': " + ec.message());
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw std::runtime_error(system_error("cannot write into folder", dir));
  }
}

}  // namespace flowmatch::io
