#pragma once
/// \file
/// The checkpoint container (format 2): a header with a magic number, the payload length and a
/// CRC-32, then a JSON description and the raw bytes of named tensors, written atomically. The
/// reader is ours from the first byte to the last: every length, offset, dtype and shape is checked
/// against the file before a tensor is allocated, so a truncated, corrupted, foreign or crafted file
/// is refused with a named reason (LibTorch's TorchScript-archive reader, used by format 1, crashed on
/// crafted payloads under fuzzing, see docs/RELIABILITY.md).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

namespace flowmatch {

/// What a checkpoint holds: a JSON object of metadata and CPU tensors by name.
struct CheckpointContents {
  nlohmann::json meta = nlohmann::json::object();
  std::map<std::string, at::Tensor> tensors;
};

/// The whole file's bytes (header + payload). Tensors must be dense; they are copied contiguous
/// from any device. Throws std::invalid_argument for an unsupported dtype.
std::string encode_checkpoint(const CheckpointContents& contents);

/// Checks and decodes a file's bytes; `name` is used in the messages ("'NAME': checkpoint is
/// truncated ...", "not a flowmatch checkpoint", "corrupted (checksum mismatch)", "... format 1 ...").
CheckpointContents decode_checkpoint(const std::string& file, const std::string& name);

/// encode_checkpoint, written atomically (temporary file, fsync, rename). Throws std::runtime_error
/// naming the path on failure.
void write_checkpoint(const std::string& path, const CheckpointContents& contents);

/// Reads and decodes; errors name the path.
CheckpointContents read_checkpoint(const std::string& path);

/// Checkpoint files `step-N.ckpt` in `dir`, sorted by N ascending (empty when none or no folder).
std::vector<std::string> list_checkpoints(const std::string& dir);

/// The step number N of a path ending in `step-N.ckpt`, or -1.
int64_t checkpoint_step(const std::string& path);

}  // namespace flowmatch
