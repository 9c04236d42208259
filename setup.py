"""Build hook: compiles sage_ext/sage_queue with CMake when SAGE_BUILD_NATIVE=1.

Without it, ``pip install .`` gives the pure-Python install (minimal profile).
With it, a failing native build fails the install with the compiler's output.
SAGE_NATIVE_DIR, when set (install.py sets it to <venv>/sage-native), is where the
module is written instead of the package directory.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE_DIR = Path(__file__).parent.resolve() / "sage_ext" / "sage_queue"


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def _cmake_executable():
    found = shutil.which("cmake")
    if found:
        return found
    try:  # the PyPI "cmake" package, installed by install.py when the machine lacks CMake
        import cmake

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        sys.exit("CMake not found: install it (apt-get install cmake, or pip install cmake)")


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        # install.py passes SAGE_NATIVE_DIR: the venv's own directory, so the module of a
        # --full venv lives in that venv and never in the (shared) source tree. Without it
        # (a wheel build), the module goes where setuptools puts it: into the package.
        out_dir = Path(os.environ.get("SAGE_NATIVE_DIR") or
                       Path(self.get_ext_fullpath(ext.name)).parent).resolve()
        build_type = os.environ.get("SAGE_BUILD_TYPE", "Release")
        build_temp = Path(self.build_temp).resolve() / build_type
        build_temp.mkdir(parents=True, exist_ok=True)
        configure = [
            _cmake_executable(), str(SOURCE_DIR),
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DSAGE_QUEUE_SANITIZE={'ON' if os.environ.get('SAGE_SANITIZE') == '1' else 'OFF'}",
        ]
        subprocess.run(configure, cwd=build_temp, check=True)
        subprocess.run([configure[0], "--build", ".", "-j2"], cwd=build_temp, check=True)

    def copy_extensions_to_source(self):
        # An editable build copies the module from build/ into the tree; built straight into
        # SAGE_NATIVE_DIR, there is nothing to copy, and the tree must stay without one.
        if not os.environ.get("SAGE_NATIVE_DIR"):
            super().copy_extensions_to_source()


native = os.environ.get("SAGE_BUILD_NATIVE") == "1"
setup(
    ext_modules=[CMakeExtension("sage_ext.sage_queue.python._native")] if native else [],
    cmdclass={"build_ext": CMakeBuild},
)
