#pragma once
/// \file
/// The checkpoint container: a LibTorch archive wrapped in a header with a magic number,
/// the payload length and a CRC-32, written atomically. A truncated, corrupted or foreign
/// file is recognised before LibTorch parses it.

#include <string>
#include <vector>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

namespace flowmatch {

/// Serialises `archive`, prepends the header, and writes the file atomically (temporary file,
/// fsync, rename). Throws std::runtime_error naming the path on failure.
void write_checkpoint(const std::string& path, torch::serialize::OutputArchive& archive);

/// Verifies the header (magic, length, CRC-32) and loads the archive. Throws std::runtime_error
/// with "not a flowmatch checkpoint", "truncated" or "corrupted (checksum mismatch)" and the path.
void read_checkpoint(const std::string& path, torch::serialize::InputArchive& archive);

/// The same checks and load on a checkpoint file's bytes already in memory; `name` is used in
/// the messages in place of the path.
void read_checkpoint_bytes(const std::string& file, const std::string& name, torch::serialize::InputArchive& archive);

/// Checkpoint files `step-N.ckpt` in `dir`, sorted by N ascending (empty when none or no folder).
std::vector<std::string> list_checkpoints(const std::string& dir);

/// The step number N of a path ending in `step-N.ckpt`, or -1.
int64_t checkpoint_step(const std::string& path);

}  // namespace flowmatch
