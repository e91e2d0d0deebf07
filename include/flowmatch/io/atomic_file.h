#pragma once
/// \file
/// Writing files so that a reader never sees a partial one: write to a temporary name in the
/// same folder, flush and fsync, then rename over the destination.

#include <string>

namespace flowmatch::io {

/// Writes `bytes` to `path` atomically. Throws std::runtime_error naming the path and the
/// system error; on failure the temporary file is removed and `path` is untouched.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// Reads a whole file; throws std::runtime_error naming the path when it cannot be read.
std::string read_file(const std::string& path);

/// Creates `dir` (and parents) if needed and checks that a file can be created in it.
/// Throws std::runtime_error naming the folder when it cannot.
void ensure_writable_directory(const std::string& dir);

}  // namespace flowmatch::io
