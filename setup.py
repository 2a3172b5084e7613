"""The wheel builds the shims itself: `python -m build` (or `pip install .`) needs no make step.

pyproject.toml holds the metadata; this file adds only the two things a declarative setup
cannot say:
- build_py first runs the shim build (`shim_build.build.main`, the same entry point as `make
  setup`), so the wheel carries spy/libp11spy*.so as package data. In the isolated build
  environment p11spy is not installed, so the fact tables the C is generated from are loaded
  from this source tree as `p11spy.facts` (the package root `common/` as `p11spy`).
- bdist_wheel names the wheel for what it holds, read from the shims' ELF dynamic sections
  (spy/elf.py): native code, so a platform tag, `manylinux2014_<arch>` only when every
  shim needs nothing that policy does not allow (glibc symbols up to 2.17, no RUNPATH, no other
  library), else `linux_<arch>`; and a Python tag of `py3`, unless a shim links libpython (as
  the cffi-embedded build does), then `cp3XX` of the interpreter that built it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py as _build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # an older setuptools (pyproject.toml asks for a new one)
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the build scripts, shim_build/
SHIMS = ("libp11spy.so", "libp11spy-2.so", "libp11spy-preload.so", "libp11spy-replay.so",
         "libp11spy-replay-2.so")
DECODER = ROOT / "decoder" / "formats" / "p11spy" / "libp11json.so"  # decode --json's


def _load(name: str, path: Path) -> ModuleType:
    """Import a file of this tree as the module `name` (a folder as a package), unless a module
    of that name is already loaded."""
    if name in sys.modules:
        return sys.modules[name]
    folder = path.is_dir()
    spec = importlib.util.spec_from_file_location(
        name, path / "__init__.py" if folder else path,
        submodule_search_locations=[str(path)] if folder else None)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_shims() -> None:
    _load("p11spy", ROOT / "common")
    _load("p11spy.facts", ROOT / "facts")
    from shim_build.build import main

    argv, sys.argv = sys.argv, sys.argv[:1]  # the build's own options, not setup.py's
    try:
        if main() != 0:
            raise SystemExit("the shim build failed")
    finally:
        sys.argv = argv


class build_py(_build_py):
    def run(self) -> None:
        # An editable install (`make setup`) leaves the shims to `make`, which rebuilds them
        # when their sources change.
        if not getattr(self, "editable_mode", False):
            build_shims()
            self.__dict__.pop("data_files", None)  # list package data again, with the shims
        super().run()


class NativeDistribution(Distribution):
    """Holds native code (the shims) though it has no Python extension: so the wheel is
    installed into platlib and is not called pure."""

    def has_ext_modules(self) -> bool:
        return True


class bdist_wheel(_bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        shims = [ROOT / "spy" / so for so in SHIMS] + [DECODER]
        if not all(so.is_file() for so in shims):
            # an editable install (`make setup` on a fresh clone): make builds the shims after
            # it, and nothing is shipped under this tag
            return super().get_tag()
        elf = _load("p11spy_elf", ROOT / "spy" / "elf.py")  # the reader p11spy bundle uses
        _, _, plat = super().get_tag()
        needs = [elf.needs(so) for so in shims]
        if all(elf.manylinux2014(n) for n in needs):
            plat = plat.replace("linux_", "manylinux2014_", 1)
        libpython = any(lib.startswith("libpython") for n in needs for lib in n.libraries)
        python = f"cp{sys.version_info[0]}{sys.version_info[1]}" if libpython else "py3"
        return python, "none", plat


setup(distclass=NativeDistribution, cmdclass={"build_py": build_py, "bdist_wheel": bdist_wheel})
