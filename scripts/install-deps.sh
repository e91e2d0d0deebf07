#!/usr/bin/env bash
# Installs the Debian 12 packages flowmatch needs. Idempotent: a no-op when all are present.
# Works as root or through sudo; never downloads anything but Debian packages.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libgloo-dev
  # Debian's LibTorch calls the system BLAS (libblas.so.3); without an optimized alternative that is
  # the reference BLAS (about 5 GFLOP/s here). OpenBLAS, OpenMP flavour like LibTorch: about 100.
  libopenblas0-openmp
  liblemon-dev libcli11-dev nlohmann-json3-dev libstb-dev zlib1g-dev
  # Pictures: cairo draws them (anti-aliased), with DejaVu Sans for the text.
  libcairo2-dev fonts-dejavu-core
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  # Protein structures (PDB files) for the torus data set `--data proteins` (docs/MANIFOLDS.md).
  theseus-examples
  # The King James Bible (its `bible` program) for the character-level text of discrete flow matching.
  bible-kjv
  python3-torch python3-numpy python3-scipy python3-pytest pybind11-dev python3-dev
  # `pip install ./python` (offline, into a venv that sees Debian's torch), tested by make test.
  python3-pip python3-setuptools python3-wheel python3-venv
)

# `install-deps.sh --fuzz` (make fuzz) adds clang and its libFuzzer/sanitizer runtimes.
if [ "${1:-}" = "--fuzz" ]; then PACKAGES+=(clang-14 libclang-rt-14-dev); fi
# `install-deps.sh --browser` (make test-browser) adds Debian's Chromium, which opens the run pages.
if [ "${1:-}" = "--browser" ]; then PACKAGES+=(chromium); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: missing packages (${missing[*]}) and not root, no sudo" >&2; exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
