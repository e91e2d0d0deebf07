#pragma once
/// \file
/// RUN/index.html: one self-contained page per run folder, for people to look before they read: the
/// run's data, model and steps, its metrics (metrics.json) as a table, the loss curve and every other
/// picture in the folder (embedded, so the page can be mailed or moved alone), and config.json.
/// `Run::train`, `Run::evaluate` and `Run::write_samples` (for samples inside the run folder) rewrite
/// it; a page that cannot be written never fails them.

#include <string>

namespace flowmatch {

class Run;

/// Writes RUN/index.html atomically and returns its path. Pictures larger than 16 MiB are linked, not
/// embedded. std::runtime_error when the page cannot be written.
std::string write_run_index(const Run& run);

/// write_run_index for the commands that write a run: false (and nothing thrown) when the page could
/// not be written or the run is a stand-in for a model file (no folder of its own).
bool try_write_run_index(const Run& run) noexcept;

/// The standard base64 encoding (RFC 4648, with padding) of `bytes`.
std::string base64_encode(const std::string& bytes);

}  // namespace flowmatch
