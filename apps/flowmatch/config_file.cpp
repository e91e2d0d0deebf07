// --config FILE: flags from a TOML/INI file (CLI11's own parser), for the subcommand that asks.

#include "config_file.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <CLI/CLI.hpp>

namespace fmcli {

namespace fs = std::filesystem;

std::vector<std::string> expand_config_file(const std::vector<std::string>& args) {
  if (args.size() < 2 || args[1] == "launch") return args;  // launch passes its command's flags on untouched
  std::string file;
  std::vector<std::string> rest;
  for (size_t k = 1; k < args.size(); ++k) {
    if (args[k] == "--config") {
      if (k + 1 >= args.size()) throw UsageError("--config needs a file name");
      file = args[++k];
    } else if (args[k].rfind("--config=", 0) == 0) {
      file = args[k].substr(9);
    } else {
      rest.push_back(args[k]);
    }
  }
  if (file.empty()) return args;
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw UsageError("config file '" + file + "' does not exist");
  std::ifstream in(file);
  if (!in) throw UsageError("config file '" + file + "' cannot be opened");
  return expand_config_stream(args, in, file);
}

std::vector<std::string> expand_config_stream(const std::vector<std::string>& args, std::istream& in,
                                              const std::string& file) {
  std::vector<std::string> rest;
  for (size_t k = 1; k < args.size(); ++k) {
    if (args[k] == "--config") {
      ++k;
    } else if (args[k].rfind("--config=", 0) != 0) {
      rest.push_back(args[k]);
    }
  }
  const std::string command = rest.empty() ? std::string() : rest.front();
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_config(in);
  } catch (const std::exception& e) {
    throw UsageError("config file '" + file + "' cannot be read: " + e.what());
  }
  auto given = [&](const std::string& name) {
    for (const auto& a : rest)
      if (a == "--" + name || a.rfind("--" + name + "=", 0) == 0) return true;
    return false;
  };
  std::vector<std::string> injected;
  for (const auto& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section markers
    // [model]: type = NAME is --model NAME; every other key is a network option (--model-option KEY=VALUE).
    const bool model_section = command == "train" && item.parents.size() == 1 && item.parents[0] == "model";
    if (!item.parents.empty() && !model_section && !(item.parents.size() == 1 && item.parents[0] == command)) {
      std::string section;
      for (const auto& p : item.parents) section += (section.empty() ? "" : ".") + p;
      throw UsageError("config file '" + file + "': section [" + section + "] is not '" + command +
                       "' (put keys at the top level or under [" + command + "]" + (command == "train" ? " or [model]" : "") + ")");
    }
    std::string name = item.name;
    std::replace(name.begin(), name.end(), '_', '-');
    if (model_section) {
      if (name == "type") {
        if (!given("model") && item.inputs.size() == 1) injected.push_back("--model=" + item.inputs[0]);
      } else {
        std::string value;
        for (const auto& v : item.inputs) value += (value.empty() ? "" : ",") + v;
        injected.push_back("--model-option=" + item.name + "=" + (item.inputs.size() > 1 ? "[" + value + "]" : value));
      }
      continue;
    }
    if (given(name)) continue;
    if (item.inputs.size() == 1) {
      injected.push_back("--" + name + "=" + item.inputs[0]);
    } else {
      injected.push_back("--" + name);
      for (const auto& v : item.inputs) injected.push_back(v);
    }
  }
  std::vector<std::string> out = {args[0]};
  if (!rest.empty()) out.push_back(rest.front());
  out.insert(out.end(), injected.begin(), injected.end());
  if (rest.size() > 1) out.insert(out.end(), rest.begin() + 1, rest.end());
  return out;
}

}  // namespace fmcli
