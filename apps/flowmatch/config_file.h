#pragma once
// --config FILE for every subcommand, and the usage-error type (exit 2). Depends on CLI11 only, so
// the config fuzzer builds without LibTorch.

#include <istream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fmcli {

/// A usage error (exit 2): bad flags or values, a missing run folder.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Expands `--config FILE` (TOML or INI, as CLI11 reads them) after the subcommand into flags,
/// skipping keys that the command line sets itself. Keys may sit at the top level or in a section
/// named after the command ([train]). `launch` passes its command's flags on untouched.
std::vector<std::string> expand_config_file(const std::vector<std::string>& args);

/// The same with the file's text from `in` (`file` names it in errors); the --config flag in
/// `args` is dropped.
std::vector<std::string> expand_config_stream(const std::vector<std::string>& args, std::istream& in,
                                              const std::string& file);

}  // namespace fmcli
