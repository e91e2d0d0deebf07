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
#                                         suite, the timings (bench/gpu_eager.py and bench/unet_twin.py beside
#                                         flowmatch bench, eager and CUDA graphs, float32 and bf16 autocast),
#                                         and Dopri5 against torchdiffeq (there, not in Debian) on one field;
#                                         everything lands in OUT (default $OUT, else runs/gpu-check):
#                                         device.txt, build.log, ctest-cuda.log (backtrace-TEST.txt for a crash),
#                                         bench.jsonl (every timing, flowmatch's and PyTorch's, one JSON line each),
#                                         ctest.log, c10d.log: few files, since the device tool returns only 8.
#
# With the device tool: run(command="bash scripts/gpu-check.sh run", carry=[".gpu-deps"], timeout_s=560).
# GPU_CHECK_STAGES="cuda-tests unet" (say) runs only those stages after the build; GPU_CHECK_SUITE_S caps the
# suite (default 200 s; its processes run one thread each, as many at once as the machine has cores).
# GPU_CHECK_C10D=ON builds c10d into the main build too (off by default: distributed.cpp compiles against
# LibTorch 2.11, stage c10d, but has not been linked there), so that the launch tests can run.
# The work is ordered so that a run stopped at its limit has already written the most useful files.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build dependencies by Debian package; cairo's run-time libraries follow it (not glibc or libstdc++,
# which come with the machine).
DEPS=(nlohmann-json3-dev libgloo-dev liblemon-dev liblemon1.3.1 libcli11-dev libstb-dev libstb0 zlib1g-dev libgtest-dev libgmock-dev
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
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI); print(torch.cuda.get_device_name(0))' || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    nproc; grep -m1 "model name" /proc/cpuinfo || true
  } | tee "$out/device.txt"

  local jobs
  jobs=$(nproc)
  local t0=$SECONDS
  stage() { echo "== $1 ($((SECONDS - t0)) s)"; }
  # GPU_CHECK_STAGES picks stages after the build (default all): cuda-tests launch unet unet-cpu dopri5 suite c10d.
  want() { [[ " ${GPU_CHECK_STAGES:-cuda-tests launch unet unet-cpu dopri5 suite c10d} " == *" $1 "* ]]; }
  # One build, the targets the check needs; -k 0 so that one run shows every compile error. c10d stays
  # off here: step 6 compiles it alone, so that a c10d API change cannot stop the rest.
  stage build
  build() {  # $1: ON or OFF, CUDA graphs
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr;$lib/cmake;$deps/usr/share/cmake" \
      -DCMAKE_INCLUDE_PATH="$deps/usr/include" -DCMAKE_LIBRARY_PATH="$lib" \
      -DLEMON_INCLUDE_DIR="$deps/usr/include" -DCMAKE_CXX_FLAGS="-isystem $deps/usr/include" \
      -DFLOWMATCH_BUILD_PYTHON=OFF -DFLOWMATCH_BUILD_EXAMPLES=OFF -DFLOWMATCH_DISTRIBUTED="${GPU_CHECK_C10D:-OFF}" -DFLOWMATCH_CUDA_GRAPHS="$1" &&
    cmake --build build-gpu -j "$jobs" --target flowmatch_cli flowmatch_tests flowmatch_test_worker -- -k 0
  }
  if ! build ON > "$out/build.log" 2>&1; then
    grep -E "error|Error" "$out/build.log" | head -60 || true
    tail -5 "$out/build.log"
    # CUDA graphs have not been compiled before this check's first run: without them, the rest still runs.
    grep -q "cuda_graph" "$out/build.log" && build OFF > "$out/build-no-graphs.log" 2>&1 && echo "gpu-check: built without CUDA graphs (build.log has why)" ||
      { echo "gpu-check: the build failed (build.log)"; exit 1; }
  fi
  grep -hE "flowmatch: (c10d|CUDA)" "$out/build.log" "$out/build-no-graphs.log" 2>/dev/null | tail -2 || true
  local fm=build-gpu/apps/flowmatch/flowmatch

  # 1. The CUDA tests: the same solves, likelihoods, training steps and runs on the GPU as on the CPU;
  #    the captured solve against the eager one; bf16 autocast training against float32.
  want cuda-tests && stage "CUDA tests" && {
  (cd build-gpu && timeout 180 ctest -R '^Cuda\.' --output-on-failure) > "$out/ctest-cuda.log" 2>&1 || true
  grep -E "tests passed|Failed|\*\*\*|Passed|Skipped" "$out/ctest-cuda.log" | head -20 || true
  # A crashed test: its backtrace, where the machine has gdb.
  for t in $(grep -oE 'Cuda\.[A-Za-z0-9]+ \.+\*\*\*Exception' "$out/ctest-cuda.log" | cut -d' ' -f1); do
    command -v gdb > /dev/null && timeout 120 gdb -batch -ex run -ex bt --args build-gpu/tests/flowmatch_tests --gtest_filter="$t" > "$out/backtrace-$t.txt" 2>&1 || true
  done
  }

  # 2. Launch-bound work: Euler sampling and the batch-1 policy, eager and replayed as a CUDA graph, in
  #    flowmatch and in PyTorch on the same GPU.
  want launch && stage "sampling and policy latency" && {
  {
    timeout 120 "$fm" bench --device cuda --case sample-euler100 --case policy-latency || true
    timeout 120 python3 bench/gpu_eager.py || true
  } 2>&1 | tee -a "$out/bench.jsonl"
  }

  # 3. The U-Net side by side: flowmatch and its PyTorch twin (bench/unet_twin.py) on the same weights,
  #    float32 and bf16 autocast, on the GPU and then on the machine's CPU cores.
  want unet && stage "U-Net" && {
  "$fm" bench --case unet-twin --save-weights /tmp/gpu-check-unet.pt > /dev/null || true
  {
    local devices=cuda; want unet-cpu && devices="cuda cpu"
    for device in $devices; do
      local steps=5000 twin_steps=100
      [ "$device" = cpu ] && steps=500 twin_steps=10
      timeout 120 "$fm" bench --device "$device" --case unet-train --case unet-sample --threads "$jobs" --train-steps $steps || true
      timeout 120 "$fm" bench --device "$device" --case unet-train --threads "$jobs" --train-steps $steps --autocast-bf16 || true
      timeout 120 python3 bench/unet_twin.py --weights /tmp/gpu-check-unet.pt --device "$device" --threads "$jobs" --train-steps $twin_steps || true
      timeout 120 python3 bench/unet_twin.py --weights /tmp/gpu-check-unet.pt --device "$device" --threads "$jobs" --train-steps $twin_steps --autocast bf16 || true
      # The twin reading each step's loss back, as our trainer does: what that sync costs.
      if [ "$device" = cuda ]; then
        timeout 120 python3 bench/unet_twin.py --weights /tmp/gpu-check-unet.pt --device cuda --threads "$jobs" --train-steps $twin_steps --read-loss || true
      fi
    done
  } 2>&1 | tee -a "$out/bench.jsonl"
  }

  # 4. Dopri5 at equal achieved error: torchdiffeq's and ours on the same field and points (CPU).
  want dopri5 && stage "Dopri5 against torchdiffeq" && {
  {
    timeout 120 python3 bench/dopri5_torchdiffeq.py --weights .gpu-deps/field.pt || true
    timeout 120 "$fm" bench --case dopri5-norms --weights .gpu-deps/field.pt || true
  } 2>&1 | tee -a "$out/bench.jsonl"
  }

  # 5. The test suite (CPU and CUDA tests alike), without the documentation examples (they need the
  #    Debian data sets), the install test and the distributed ones (c10d is off in this build; they insist on it).
  want suite && stage "test suite" && {
  local skip='Docs\.|Install\.|Distributed|DataParallel'
  [ "${GPU_CHECK_C10D:-OFF}" = ON ] && skip='Docs\.|Install\.'
  (cd build-gpu && OMP_NUM_THREADS=1 timeout "${GPU_CHECK_SUITE_S:-200}" ctest -j "$jobs" -E "$skip" --timeout 150) > "$out/ctest.log" 2>&1 || true
  grep -E "tests passed|Total Test" "$out/ctest.log" | head -3 || true
  # Failures split by cause: what that machine lacks (Debian's data packages, ../shared/data, numpy or
  # torch in python3, c10d, which this build leaves off) against everything else, each with its reason.
  [ -f build-gpu/Testing/Temporary/LastTest.log ] && python3 scripts/ctest_failures.py build-gpu/Testing/Temporary/LastTest.log "$out/ctest.log" | tee -a "$out/ctest.log" || true
  }

  # 6. c10d (Gloo, NCCL) against this LibTorch: its one source compiled alone.
  if want c10d; then
  stage "c10d compile"
  {
    cmake -S . -B build-gpu-c10d -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLOWMATCH_UNITY_BUILD=OFF -DFLOWMATCH_USE_PCH=OFF \
      -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr;$lib/cmake;$deps/usr/share/cmake" \
      -DCMAKE_INCLUDE_PATH="$deps/usr/include" -DCMAKE_LIBRARY_PATH="$lib" \
      -DLEMON_INCLUDE_DIR="$deps/usr/include" -DCMAKE_CXX_FLAGS="-isystem $deps/usr/include" \
      -DFLOWMATCH_BUILD_PYTHON=OFF -DFLOWMATCH_BUILD_EXAMPLES=OFF -DFLOWMATCH_BUILD_TESTS=OFF -DFLOWMATCH_BUILD_APPS=OFF
    timeout 120 cmake --build build-gpu-c10d --target CMakeFiles/flowmatch.dir/src/distributed.cpp.o
  } > "$out/c10d.log" 2>&1 && c10d_built=1 || { grep -E "error" "$out/c10d.log" | head -10 || true; echo "c10d: see c10d.log"; }
  grep -E "flowmatch: c10d" "$out/c10d.log" || true
  # Without Gloo's headers the file compiles with c10d left out, which checks nothing.
  if [ -n "${c10d_built:-}" ]; then
    grep -q "flowmatch: c10d Gloo ON" "$out/c10d.log" && echo "c10d: distributed.cpp compiles with c10d" ||
      echo "c10d: configure found no c10d Gloo headers, so distributed.cpp compiled without c10d (no check)"
  fi
  fi
  stage done
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash scripts/gpu-check.sh prepare | run [OUT]" >&2; exit 2 ;;
esac
