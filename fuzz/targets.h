#pragma once
// The fuzzed readers: each takes arbitrary bytes and returns true when they were accepted, false
// when the reader refused them with an exception (std::exception: the library's contract). A crash,
// a sanitizer report or a hang is a finding. Used by the libFuzzer programs (make fuzz) and by the
// regression test that replays fuzz/seeds and fuzz/regressions in `make test`.

#include <cstddef>
#include <cstdint>
#include <string>

namespace flowmatch_fuzz {

bool npy(const uint8_t* data, size_t size);         ///< io::decode_npy
bool idx(const uint8_t* data, size_t size);         ///< data::gunzip_if_compressed + decode_idx (64 MiB limit)
bool checkpoint(const uint8_t* data, size_t size);  ///< a whole checkpoint file, through load_model
/// The bytes as a checkpoint's payload behind a valid header (magic, length, CRC-32): LibTorch's
/// archive reader and our model description parser, which the checksum would otherwise shield.
bool checkpoint_payload(const uint8_t* data, size_t size);
bool config(const uint8_t* data, size_t size);      ///< --config file text for `train`
bool pt(const uint8_t* data, size_t size);          ///< a torch.save file through io::load_pt_tensors (both unpicklers)

/// The header write_checkpoint puts in front of `payload`.
std::string checkpoint_header(const std::string& payload);

}  // namespace flowmatch_fuzz
