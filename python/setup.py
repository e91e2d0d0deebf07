"""`pip install ./python`: builds the compiled module flowmatch._core with this repository's CMake build
(against Debian's python3-torch, LibTorch and pybind11; nothing is downloaded) and installs the package
with its type stubs. There is no pyproject.toml on purpose: pip then builds with the setuptools already
installed, so the install works offline. Into a virtual environment that sees Debian's torch:

    python3 -m venv --system-site-packages venv && venv/bin/pip install ./python

FLOWMATCH_BUILD_DIR reuses an existing CMake build folder (e.g. build/ after `make python`); otherwise
the build goes to build-pip/ at the repository's root (the library and the module only, a few minutes).
"""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if not os.path.exists(os.path.join(ROOT, "CMakeLists.txt")):
            raise RuntimeError(f"flowmatch: the repository's CMakeLists.txt is not at {ROOT}; install from a checkout")
        build_dir = os.path.abspath(os.environ.get("FLOWMATCH_BUILD_DIR") or os.path.join(ROOT, "build-pip"))
        if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            subprocess.check_call(["cmake", "-S", ROOT, "-B", build_dir, *generator, "-DCMAKE_BUILD_TYPE=Release",
                                   "-DFLOWMATCH_BUILD_TESTS=OFF", "-DFLOWMATCH_BUILD_APPS=OFF",
                                   "-DFLOWMATCH_BUILD_EXAMPLES=OFF", f"-DPython3_EXECUTABLE={sys.executable}"])
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "flowmatch_python", "-j", str(os.cpu_count() or 1)])
        built = glob.glob(os.path.join(build_dir, "python", "flowmatch", "_core*.so"))
        if len(built) != 1:
            raise RuntimeError(f"flowmatch: expected one compiled module in {build_dir}/python/flowmatch, found {built}")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built[0], target)


setup(
    name="flowmatch",
    version="0.1.0",
    description="Flow matching in C++ (LibTorch): couplings, paths, solvers, likelihoods, manifolds, discrete flows",
    packages=["flowmatch"],
    package_data={"flowmatch": ["__init__.pyi", "py.typed"]},
    ext_modules=[Extension("flowmatch._core", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.9",
    zip_safe=False,
)
