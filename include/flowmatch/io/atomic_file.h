#pragma once
/// \file
/// Writing files so that a reader never sees a partial one: write to a temporary name in the
/// same folder, flush and fsync, then rename over the destination.

#include <cstdint>
#include <string>

namespace flowmatch::io {

/// Writes `bytes` to `path` atomically. Throws std::runtime_error naming the path and the
/// system error; on failure the temporary file is removed and `path` is untouched. A `path` that
/// exists and is not a regular file (a symbolic link, a device, a folder) is refused, never replaced.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// The largest file `read_file` reads unless told otherwise (16 GiB).
constexpr uint64_t kMaxReadBytes = uint64_t{16} << 30;

/// Reads a whole regular file of at most `max_bytes`; throws std::runtime_error naming the path when
/// it cannot be read, is not a regular file (a device such as /dev/zero, a pipe) or is larger.
std::string read_file(const std::string& path, uint64_t max_bytes = kMaxReadBytes);

/// Creates `dir` (and parents) if needed and checks that a file can be created in it.
/// Throws std::runtime_error naming the folder when it cannot.
void ensure_writable_directory(const std::string& dir);

}  // namespace flowmatch::io
