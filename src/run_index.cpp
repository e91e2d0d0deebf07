#include "flowmatch/run_index.h"

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <vector>

#include "flowmatch/io/atomic_file.h"
#include "flowmatch/run.h"

namespace flowmatch {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string scalar_text(const json& v) {
  if (v.is_number_float()) {
    std::ostringstream s;
    s.precision(6);
    s << v.get<double>();
    return s.str();
  }
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// Rows "key" → value of a JSON object, nested objects as "outer.inner", arrays of scalars inline.
void flatten(const json& j, const std::string& prefix, std::vector<std::pair<std::string, std::string>>& rows) {
  for (const auto& [key, value] : j.items()) {
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (value.is_object()) {
      flatten(value, name, rows);
    } else if (value.is_array()) {
      const bool scalars = std::all_of(value.begin(), value.end(), [](const json& e) { return e.is_primitive(); });
      if (scalars && value.size() <= 16) {
        std::string s;
        for (const auto& e : value) s += (s.empty() ? "" : ", ") + scalar_text(e);
        rows.emplace_back(name, "[" + s + "]");
      } else {
        rows.emplace_back(name, std::to_string(value.size()) + " entries");
      }
    } else {
      rows.emplace_back(name, scalar_text(value));
    }
  }
}

json read_json(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return nullptr;
  try {
    return json::parse(io::read_file(path, 64 << 20));
  } catch (const std::exception&) {
    return nullptr;
  }
}

}  // namespace

std::string base64_encode(const std::string& bytes) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (i < bytes.size()) {
    const bool two = i + 1 < bytes.size();
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (two ? static_cast<uint8_t>(bytes[i + 1]) << 8 : 0);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += two ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

bool try_write_run_index(const Run& run) noexcept {
  try {
    if (run.is_model_file()) return false;
    write_run_index(run);
    return true;
  } catch (...) {
    return false;
  }
}

std::string write_run_index(const Run& run) {
  const std::string dir = run.dir();
  const json& config = run.config();
  std::ostringstream h;
  const std::string name = fs::path(dir).lexically_normal().filename().string();
  h << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" << escape(name) << " - flowmatch run</title>\n"
    << "<style>body{font-family:sans-serif;margin:1.5em;max-width:1500px}table{border-collapse:collapse}"
       "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:90%}td.v{font-family:monospace}"
       "figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{text-align:center;font-size:90%;color:#444}"
       "img{max-width:720px;border:1px solid #eee}pre{background:#f7f7f7;padding:0.8em;font-size:85%}</style></head><body>\n";
  h << "<h1>" << escape(name) << "</h1>\n<p>";
  const json& data = config.value("data", json::object());
  std::string data_name = "?";
  if (data.is_object() && data.contains("name") && data["name"].is_string() && !data["name"].get<std::string>().empty()) {
    data_name = data["name"].get<std::string>();
  } else if (config.contains("settings") && config["settings"].is_object()) {
    const json& s = config["settings"];
    data_name = s.value("data", json("")).is_string() && !s.value("data", json("")).get<std::string>().empty()
                    ? s["data"].get<std::string>()
                    : scalar_text(s.value("source", json("?"))) + " -> " + scalar_text(s.value("target", json("?")));
  }
  h << "data <b>" << escape(data_name) << "</b>";
  if (data.is_object() && data.contains("domain")) h << " (" << escape(scalar_text(data["domain"])) << ")";
  if (config.contains("model") && config["model"].is_object()) h << " &middot; model <b>" << escape(scalar_text(config["model"].value("type", json("?")))) << "</b>";
  if (config.contains("training") && config["training"].is_object()) {
    const json& t = config["training"];
    h << " &middot; " << escape(scalar_text(t.value("steps", json("?")))) << " steps of batch " << escape(scalar_text(t.value("batch", json("?"))));
  }
  try {
    h << " &middot; newest checkpoint <code>" << escape(fs::path(run.latest_checkpoint()).filename().string()) << "</code>";
  } catch (const std::exception&) {
    h << " &middot; no checkpoint yet";
  }
  h << "</p>\n";
  const json metrics = read_json(run.metrics_json());
  if (metrics.is_object()) {
    std::vector<std::pair<std::string, std::string>> rows;
    flatten(metrics, "", rows);
    h << "<h2>Metrics (metrics.json)</h2>\n<table><tr><th>metric</th><th>value</th></tr>\n";
    for (const auto& [k, v] : rows) h << "<tr><td>" << escape(k) << "</td><td class=\"v\">" << escape(v) << "</td></tr>\n";
    h << "</table>\n";
  }
  // Pictures: the loss curve, the evaluation's, then the rest by name.
  std::vector<fs::path> pictures;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec) && e.path().extension() == ".png") pictures.push_back(e.path());
  }
  auto rank = [](const fs::path& p) {
    const std::string f = p.filename().string();
    return f == "loss.png" ? 0 : f.rfind("eval", 0) == 0 ? 1 : 2;
  };
  std::sort(pictures.begin(), pictures.end(), [&](const fs::path& a, const fs::path& b) {
    return rank(a) != rank(b) ? rank(a) < rank(b) : a.filename() < b.filename();
  });
  if (!pictures.empty()) h << "<h2>Pictures</h2>\n";
  for (const auto& p : pictures) {
    const std::string file = p.filename().string();
    h << "<figure>";
    if (fs::file_size(p, ec) <= (16u << 20)) {
      std::string bytes;
      try {
        bytes = io::read_file(p.string(), 16u << 20);
      } catch (const std::exception&) {
      }
      if (!bytes.empty()) {
        h << "<img alt=\"" << escape(file) << "\" src=\"data:image/png;base64," << base64_encode(bytes) << "\">";
      } else {
        h << "<img alt=\"" << escape(file) << "\" src=\"" << escape(file) << "\">";
      }
    } else {
      h << "<img alt=\"" << escape(file) << "\" src=\"" << escape(file) << "\">";
    }
    h << "<figcaption>" << escape(file) << "</figcaption></figure>\n";
  }
  h << "<h2>Configuration</h2>\n<details><summary>config.json</summary><pre>" << escape(config.dump(2)) << "</pre></details>\n"
    << "<p style=\"color:#888;font-size:80%\">written by flowmatch " << escape(scalar_text(config.value("flowmatch_version", json("")))) << "</p>\n"
    // When the page has loaded: a picture the browser could not show is named under it, and the body
    // records how many showed (data-pictures="shown/all"; `make test-browser` reads it).
    << "<script>window.addEventListener('load',function(){var im=document.images,ok=0;"
       "for(var i=0;i<im.length;++i){if(im[i].complete&&im[i].naturalWidth>0){++ok;}else{var p=document.createElement('p');"
       "p.style.color='#b00';p.textContent='picture missing: '+im[i].alt;im[i].parentNode.appendChild(p);}}"
       "document.body.setAttribute('data-pictures',ok+'/'+im.length);});</script>\n"
    << "</body></html>\n";
  const std::string path = dir + "/index.html";
  io::write_file_atomic(path, h.str());
  return path;
}

}  // namespace flowmatch
