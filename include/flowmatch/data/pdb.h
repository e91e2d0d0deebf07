#pragma once
/// \file
/// Protein backbone dihedral angles from PDB files (plain or gzip), for flows on the torus.
/// φ_i = dihedral(C_{i−1}, N_i, CA_i, C_i), ψ_i = dihedral(N_i, CA_i, C_i, N_{i+1}) over residues of
/// one chain that are bonded (C_{i−1}–N_i and C_i–N_{i+1} shorter than 2 Å); the first model only, the
/// first alternate location only. The residue classes of Lovell et al. (2003), as Ramachandran
/// benchmarks use them: glycine, proline, pre-proline (followed by a proline), general (the rest).

#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace flowmatch::data {

struct BackboneAngles {
  at::Tensor phi_psi;                 ///< (N, 2) float64 radians in (−π, π]
  std::vector<std::string> classes;   ///< per row: general, glycine, proline or pre-proline
};

/// The dihedral angle (radians, (−π, π]) of each row of four points (N, 3) each, IUPAC sign.
at::Tensor dihedral_angles(const at::Tensor& p0, const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& p3);

/// φ/ψ of every residue of `path` that has both. A malformed ATOM line is named by file and line
/// (std::invalid_argument); a file over 256 MiB (decompressed) is refused.
BackboneAngles read_backbone_angles(const std::string& path);

/// The residue classes: "general", "glycine", "proline", "pre-proline".
std::vector<std::string> residue_class_names();

}  // namespace flowmatch::data
