#include "flowmatch/data/pdb.h"

#include <array>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>
#include <stdexcept>

#include <ATen/ATen.h>

#include "flowmatch/data/idx.h"
#include "flowmatch/io/atomic_file.h"

namespace flowmatch::data {

at::Tensor dihedral_angles(const at::Tensor& p0, const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& p3) {
  at::Tensor b0 = p0 - p1, b1 = p2 - p1, b2 = p3 - p2;
  b1 = b1 / b1.norm(2, 1, true).clamp_min(1e-12);
  at::Tensor v = b0 - (b0 * b1).sum(1, true) * b1;
  at::Tensor w = b2 - (b2 * b1).sum(1, true) * b1;
  at::Tensor x = (v * w).sum(1);
  at::Tensor y = (at::cross(b1, v, 1) * w).sum(1);
  return at::atan2(y, x);
}

std::vector<std::string> residue_class_names() { return {"general", "glycine", "proline", "pre-proline"}; }

namespace {

struct Residue {
  std::string name;
  char chain = ' ';
  std::array<double, 3> n{}, ca{}, c{};
  bool has_n = false, has_ca = false, has_c = false;
};

double coordinate(const std::string& line, size_t at, const std::string& where) {
  const std::string text = line.substr(at, 8);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  while (end && *end == ' ') ++end;
  if (end == text.c_str() || (end && *end != '\0') || !std::isfinite(v)) {
    throw std::invalid_argument(where + ": coordinate '" + text + "' is not a number");
  }
  return v;
}

double distance(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  return std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));
}

}  // namespace

BackboneAngles read_backbone_angles(const std::string& path) {
  const std::string text = gunzip_if_compressed(io::read_file(path), path, int64_t{256} << 20);
  std::vector<Residue> residues;
  std::string key;  // chain + residue number + insertion code of the residue being read
  std::istringstream in(text);
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.rfind("ENDMDL", 0) == 0) break;  // the first model only
    if (line.rfind("ATOM  ", 0) != 0) continue;
    const std::string where = "'" + path + "' line " + std::to_string(number);
    if (line.size() < 54) throw std::invalid_argument(where + ": an ATOM record needs 54 columns, got " + std::to_string(line.size()));
    const char alt = line[16];
    if (alt != ' ' && alt != 'A' && alt != '1') continue;
    std::string atom = line.substr(12, 4);
    atom.erase(0, atom.find_first_not_of(' '));
    atom.erase(atom.find_last_not_of(' ') + 1);
    if (atom != "N" && atom != "CA" && atom != "C") continue;
    const std::string this_key = line.substr(21, 6);  // chain, residue number, insertion code
    if (residues.empty() || this_key != key) {
      key = this_key;
      Residue r;
      r.name = line.substr(17, 3);
      r.chain = line[21];
      residues.push_back(r);
    }
    Residue& r = residues.back();
    const std::array<double, 3> p{coordinate(line, 30, where), coordinate(line, 38, where), coordinate(line, 46, where)};
    if (atom == "N") r.n = p, r.has_n = true;
    if (atom == "CA") r.ca = p, r.has_ca = true;
    if (atom == "C") r.c = p, r.has_c = true;
  }
  auto complete = [](const Residue& r) { return r.has_n && r.has_ca && r.has_c; };
  auto bonded = [&](const Residue& a, const Residue& b) { return a.chain == b.chain && complete(a) && complete(b) && distance(a.c, b.n) < 2.0; };
  std::vector<double> p0, p1, p2, p3, q0, q1, q2, q3;
  BackboneAngles out;
  auto push = [](std::vector<double>& v, const std::array<double, 3>& p) { v.insert(v.end(), p.begin(), p.end()); };
  for (size_t i = 1; i + 1 < residues.size(); ++i) {
    const Residue &prev = residues[i - 1], &r = residues[i], &next = residues[i + 1];
    if (!bonded(prev, r) || !bonded(r, next)) continue;
    push(p0, prev.c), push(p1, r.n), push(p2, r.ca), push(p3, r.c);   // φ
    push(q0, r.n), push(q1, r.ca), push(q2, r.c), push(q3, next.n);    // ψ
    out.classes.push_back(r.name == "GLY" ? "glycine" : r.name == "PRO" ? "proline" : next.name == "PRO" ? "pre-proline" : "general");
  }
  if (out.classes.empty()) {
    out.phi_psi = at::empty({0, 2}, at::kDouble);
    return out;
  }
  auto t = [](const std::vector<double>& v) { return at::tensor(v, at::kDouble).reshape({-1, 3}); };
  at::Tensor phi = dihedral_angles(t(p0), t(p1), t(p2), t(p3));
  at::Tensor psi = dihedral_angles(t(q0), t(q1), t(q2), t(q3));
  out.phi_psi = at::stack({phi, psi}, 1);
  return out;
}

}  // namespace flowmatch::data
