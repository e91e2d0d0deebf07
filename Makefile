# flowmatch: the two commands a newcomer needs are `make demo` and `make test`.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
FLOWMATCH = ./$(BUILD_DIR)/apps/flowmatch/flowmatch
DEMO_RUN ?= runs/demo

.PHONY: all deps configure build test demo clean bench-coupling python test-sanitize fuzz bench bench-profile test-browser

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release > $(BUILD_DIR).configure.log 2>&1 \
	  || { cat $(BUILD_DIR).configure.log; exit 1; }

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The Python package (pybind11, against Debian's python3-torch): build/python/flowmatch/.
# Use it with PYTHONPATH=build/python /usr/bin/python3. `make build` builds it too; `pip install ./python` installs it.
python: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target flowmatch_python

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# Opt-in: run pages (RUN/index.html) opened in headless Chromium; every picture on them must load.
# Installs Debian's chromium (large) on first use; screenshots land in build/test-browser/*/page.png.
test-browser: configure
	@bash scripts/install-deps.sh --browser
	cmake --build $(BUILD_DIR) -j $(JOBS) --target flowmatch_cli
	bash scripts/test-browser.sh $(FLOWMATCH) $(BUILD_DIR)/test-browser

# The test suite under AddressSanitizer and UndefinedBehaviorSanitizer (our code instrumented; LibTorch is
# not, so leak reports from its static state are off). The Python module is left out: it would need the
# sanitizer runtime preloaded into the interpreter.
test-sanitize: deps
	@cmake -S . -B $(BUILD_DIR)-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLOWMATCH_USE_PCH=OFF \
	  -DFLOWMATCH_BUILD_PYTHON=OFF -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  > $(BUILD_DIR)-sanitize.configure.log 2>&1 || { cat $(BUILD_DIR)-sanitize.configure.log; exit 1; }
	cmake --build $(BUILD_DIR)-sanitize -j $(JOBS)
	cd $(BUILD_DIR)-sanitize && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS)

# The benchmark set (flowmatch bench: training, sampling, likelihood, coupling, GEMM peak, MLP roofline),
# one JSON object per case, 1 thread; figures and commands in docs/BENCHMARKS.md. Not part of make test.
bench: build
	$(FLOWMATCH) bench --out $(BUILD_DIR)/bench.json

# Each libFuzzer program (IDX, .npy, checkpoint, checkpoint payload, config) for FUZZ_SECONDS under
# ASan + UBSan, built with Debian's clang-14; findings land in fuzz/regressions/ (replayed by make test).
FUZZ_SECONDS ?= 60
fuzz:
	@bash scripts/install-deps.sh --fuzz
	@cmake -S . -B $(BUILD_DIR)-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
	  -DFLOWMATCH_BUILD_FUZZ=ON -DFLOWMATCH_BUILD_TESTS=OFF -DFLOWMATCH_BUILD_APPS=OFF -DFLOWMATCH_BUILD_EXAMPLES=OFF \
	  -DFLOWMATCH_BUILD_PYTHON=OFF -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-sanitize=vptr" \
	  > $(BUILD_DIR)-fuzz.configure.log 2>&1 || { cat $(BUILD_DIR)-fuzz.configure.log; exit 1; }
	cmake --build $(BUILD_DIR)-fuzz -j $(JOBS)
	bash fuzz/run.sh $(BUILD_DIR)-fuzz $(FUZZ_SECONDS)

# The main job on the embedded default: 8gaussians -> moons, the reference's network, batch,
# learning rate and sigma (see README), trained, evaluated and pictured under runs/demo.
demo: configure
	@test -x $(FLOWMATCH) || echo "demo: first run: building the flowmatch command line only (a few minutes on 2 cores; the test suite is not built)"
	cmake --build $(BUILD_DIR) -j $(JOBS) --target flowmatch_cli
	@rm -rf $(DEMO_RUN)
	$(FLOWMATCH) train --out $(DEMO_RUN) --config configs/demo.toml
	$(FLOWMATCH) eval --run $(DEMO_RUN)
	$(FLOWMATCH) sample --run $(DEMO_RUN) --n 10000 --trajectories 200 --out $(DEMO_RUN)/samples.npy
	@awk -F'[:,]' '/"w2_euler100"/ { w = $$2 + 0; printf "demo: W2(Euler 100, n=2000) = %.3f, goal <= 0.40 %s; pictures and metrics in $(DEMO_RUN)/ (open $(DEMO_RUN)/index.html)\n", w, (w <= 0.40 ? "met" : "NOT met") }' $(DEMO_RUN)/metrics.json

# Coupling time per minibatch (256, 1024, 4096), flowmatch vs scipy on the same matrices, 1 thread,
# one run (docs/BENCHMARKS.md). About two minutes, most of it at 4096.
bench-coupling: deps
	@cmake -S . -B $(BUILD_DIR)-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLOWMATCH_BUILD_BENCH=ON \
	  -DFLOWMATCH_BUILD_TESTS=OFF -DFLOWMATCH_BUILD_APPS=OFF -DFLOWMATCH_BUILD_EXAMPLES=OFF > /dev/null
	cmake --build $(BUILD_DIR)-bench -j $(JOBS) --target bench_coupling
	@rm -rf $(BUILD_DIR)-bench/minibatches
	./$(BUILD_DIR)-bench/bench/bench_coupling $(BUILD_DIR)-bench/minibatches
	/usr/bin/python3 bench/coupling_scipy.py $(BUILD_DIR)-bench/minibatches

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR)-bench $(BUILD_DIR)-sanitize $(BUILD_DIR)-fuzz $(BUILD_DIR)-fuzz.configure.log $(BUILD_DIR).configure.log $(BUILD_DIR)-sanitize.configure.log

# Where one 2-D training step and one Euler step spend their time (µs per component, 1 thread).
bench-profile: deps
	@cmake -S . -B $(BUILD_DIR)-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLOWMATCH_BUILD_BENCH=ON \
	  -DFLOWMATCH_BUILD_TESTS=OFF -DFLOWMATCH_BUILD_APPS=OFF -DFLOWMATCH_BUILD_EXAMPLES=OFF > /dev/null
	cmake --build $(BUILD_DIR)-bench -j $(JOBS) --target bench_profile_step
	./$(BUILD_DIR)-bench/bench/bench_profile_step
