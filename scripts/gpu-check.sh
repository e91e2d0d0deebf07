#!/usr/bin/env bash
# The GPU check (issue "Performance II"): flowmatch built against a CUDA LibTorch, its CUDA tests and
# test suite run on the GPU machine, and the same work timed in flowmatch and in PyTorch eager there.
# Two halves, since the GPU machine can fetch nothing:
#
#   bash scripts/gpu-check.sh prepare    here, on Debian 12: downloads the Debian packages of the build
#                                         dependencies that machine lacks (headers, cairo and its libraries,
#                                         GoogleTest) into .gpu-deps/ (git-ignored). Nothing else is fetched.
#   bash scripts/gpu-check.sh run [OUT]  there (python3 with PyTorch 2.x + CUDA, CMake, ninja): unpacks them
#                                         under /tmp/gpu-deps, configures against PyTorch's LibTorch
#                                         (torch.utils.cmake_prefix_path), builds, runs the CUDA tests
#                                         (tests/test_cuda.cpp, skipped on machines without CUDA), the test
#                                         suite, the timings, and Dopri5 against torchdiffeq (there, not in
#                                         Debian) on one field; everything lands in OUT (default $OUT, else
#                                         runs/gpu-check): device.txt, build.log, ctest-cuda.log, ctest.log,
#                                         bench-unet-*.json, twin-unet-*.json, dopri5-*.json.
#
# With the device tool: run(command="bash scripts/gpu-check.sh run", carry=[".gpu-deps"], timeout_s=600).
# The work is ordered so that a run stopped at its limit has already written the most useful files.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build dependencies by Debian package; cairo's run-time libraries follow it (not glibc or libstdc++,
# which come with the machine).
DEPS=(nlohmann-json3-dev liblemon-dev liblemon1.3.1 libcli11-dev libstb-dev libstb0 zlib1g-dev libgtest-dev libgmock-dev
      libcairo2-dev libcairo2 libpixman-1-0 libfontconfig1 fontconfig-config libfreetype6 libpng16-16 libbrotli1 libexpat1
      libx11-6 libx11-data libxext6 libxrender1 libxcb1 libxcb-render0 libxcb-shm0 libxau6 libxdmcp6 libbsd0 libmd0
      fonts-dejavu-core)

prepare() {
  mkdir -p .gpu-deps
  (cd .gpu-deps && apt-get download "${DEPS[@]}")
  # The field of the Dopri5 work-precision comparison (torchdiffeq is on the GPU machine, not in Debian).
  /usr/bin/python3 ../shared/bench/ref_likelihood_2d.py --threads 1 --save-weights .gpu-deps/field.pt > /dev/null
  du -sh .gpu-deps
}

run() {
  local out=${1:-${OUT:-runs/gpu-check}}
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  local deps=/tmp/gpu-deps
  [ -d .gpu-deps ] || { echo "gpu-check: no .gpu-deps/ (run 'bash scripts/gpu-check.sh prepare' here first, then carry it)" >&2; exit 2; }
  mkdir -p "$deps"
  for f in .gpu-deps/*.deb; do
    if command -v dpkg-deb > /dev/null; then dpkg-deb -x "$f" "$deps"
    else (t=$(mktemp -d) && cd "$t" && ar x "$OLDPWD/$f" && tar -xf data.tar.* -C "$deps" && rm -rf "$t"); fi
  done
  local lib="$deps/usr/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # fontconfig from the unpacked tree, with DejaVu from there too.
  cat > "$deps/fonts.conf" <<EOF
<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig><dir>$deps/usr/share/fonts</dir><dir>/usr/share/fonts</dir><cachedir>/tmp/gpu-deps-fontcache</cachedir></fontconfig>
EOF
  export FONTCONFIG_FILE="$deps/fonts.conf"

  local torch_prefix
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  {
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI); print(torch.cuda.get_device_name(0))'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    nproc
  } | tee "$out/device.txt"

  local jobs
  jobs=$(nproc)
  {
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr;$lib/cmake;$deps/usr/share/cmake" \
      -DCMAKE_INCLUDE_PATH="$deps/usr/include" -DCMAKE_LIBRARY_PATH="$lib" \
      -DLEMON_INCLUDE_DIR="$deps/usr/include" -DCMAKE_CXX_FLAGS="-isystem $deps/usr/include" \
      -DFLOWMATCH_BUILD_PYTHON=OFF -DFLOWMATCH_BUILD_EXAMPLES=OFF
    cmake --build build-gpu -j "$jobs"
  } > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; echo "gpu-check: the build failed (build.log)"; exit 1; }
  local fm=build-gpu/apps/flowmatch/flowmatch

  # 1. The CUDA tests: the same solves, likelihoods, training steps and runs on the GPU as on the CPU.
  (cd build-gpu && ctest -R '^Cuda\.' --output-on-failure) > "$out/ctest-cuda.log" 2>&1 || true
  tail -5 "$out/ctest-cuda.log"

  # 2. The U-Net side by side: flowmatch and its PyTorch twin (bench/unet_twin.py) on the same weights.
  "$fm" bench --case unet-twin --save-weights "$out/unet.pt" > /dev/null
  for device in cuda cpu; do
    local threads=$jobs
    "$fm" bench --device "$device" --case unet-train --case unet-sample --threads "$threads" --train-steps 2000 > "$out/bench-unet-$device.json"
    python3 bench/unet_twin.py --weights "$out/unet.pt" --device "$device" --threads "$threads" --train-steps 40 > "$out/twin-unet-$device.json"
  done
  cat "$out"/bench-unet-*.json "$out"/twin-unet-*.json

  # 3. Dopri5 at equal achieved error: torchdiffeq's and ours on the same field and points (CPU).
  python3 bench/dopri5_torchdiffeq.py --weights .gpu-deps/field.pt > "$out/dopri5-torchdiffeq.json" || true
  "$fm" bench --case dopri5-norms --weights .gpu-deps/field.pt > "$out/dopri5-flowmatch.json" || true
  cat "$out/dopri5-torchdiffeq.json" "$out/dopri5-flowmatch.json"

  # 4. The test suite (CPU and CUDA tests alike), without the documentation examples (they need the
  #    Debian data sets) and the install test.
  (cd build-gpu && ctest -j "$jobs" -E 'Docs\.|Install\.' --timeout 300) > "$out/ctest.log" 2>&1 || true
  tail -15 "$out/ctest.log"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash scripts/gpu-check.sh prepare | run [OUT]" >&2; exit 2 ;;
esac
