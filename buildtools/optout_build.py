"""Build support: compile the hot path with mypyc when possible.

Two roles, one decision (`plan`):

* the PEP 517 build backend named in pyproject.toml: setuptools' own, except
  that a wheel build that will compile asks for mypy (and the runtime
  dependencies, so mypy sees the same types as `mypy --strict` does) in its
  isolated build environment; an editable or pure build asks for nothing
  more than setuptools;
* `setup.py` calls `plan` and `hot_path_sources` to decide whether to hand
  mypyc's extensions to setuptools at all.

Compiled when: a wheel or build_ext (not an editable install: there the
``.py`` files you edit must be what runs), no ``OPTOUT_PURE_PYTHON=1``,
a C compiler and Python's headers present. Any failure after that falls back
to pure Python (setup.py's `OptionalBuildExt`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401 - the hooks we do not change
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent.parent
PURE_ENV = "OPTOUT_PURE_PYTHON"
MYPY_REQUIREMENT = "mypy>=1.10"
# setup.py commands that produce installable code (not metadata-only runs
# such as egg_info / dist_info, and not editable_wheel).
_BUILD_COMMANDS = {"bdist_wheel", "build", "build_ext", "install", "bdist"}


@dataclass(frozen=True)
class Plan:
    compile: bool
    reason: str


def c_compiler() -> str | None:
    """The C compiler setuptools would use, if it exists here."""
    cc = os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc")
    return shutil.which(cc.split()[0]) if cc.split() else None


def plan(*, editable: bool) -> Plan:
    """Whether this build compiles the hot path, and why (or why not)."""
    if os.environ.get(PURE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off"):
        return Plan(False, f"{PURE_ENV} is set")
    if editable:
        return Plan(False, "editable install: the .py files run as edited "
                           "(compile in place with `python setup.py build_ext --inplace`)")
    if c_compiler() is None:
        return Plan(False, "no C compiler found (set CC, or install gcc)")
    include = sysconfig.get_paths().get("include", "")
    if not (Path(include) / "Python.h").is_file():
        return Plan(False, f"no Python.h in {include} (Debian: apt-get install python3-dev)")
    return Plan(True, "C compiler and Python headers found")


def building_code(argv: list[str]) -> bool:
    """True when setup.py was run to build code, not just metadata."""
    return "editable_wheel" not in argv and bool(_BUILD_COMMANDS & set(argv[1:]))


def hot_path_sources(root: Path = ROOT) -> list[str]:
    """The files of `gateway.speed.HOT_PATH_MODULES`, read from the source
    (not imported: the build must not need the runtime dependencies)."""
    tree = ast.parse((root / "gateway" / "speed.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id == "HOT_PATH_MODULES" and node.value is not None):
            modules: tuple[str, ...] = ast.literal_eval(node.value)
            return [str(Path(*name.split(".")).with_suffix(".py")) for name in modules]
    raise RuntimeError("gateway/speed.py has no HOT_PATH_MODULES")


#: Written next to the compiled modules: {module: sha256 of the .py compiled}.
RECORD = Path("gateway") / "_hotpath_build.json"


def source_digests(root: Path = ROOT) -> dict[str, str]:
    digests = {}
    for source in hot_path_sources(root):
        module = source.removesuffix(".py").replace("/", ".")
        digests[module] = hashlib.sha256((root / source).read_bytes()).hexdigest()
    return digests


def _runtime_dependencies() -> list[str]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project.get("dependencies", []))


def say(message: str) -> None:
    print(f"optout-sidecar build: {message}", file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: on any error it removes what
    it built (a half-compiled set could not import) and leaves pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler or linker failure
            self._fall_back(exc)
            return
        if self.extensions:
            self._record_sources()

    def _record_sources(self) -> None:
        """What was compiled, by content, so `optout-sidecar version` can tell
        when a source changed after an in-place build (gateway/speed.py)."""
        record = json.dumps(source_digests(), indent=1, sort_keys=True)
        targets = [Path(self.build_lib) / RECORD]
        if self.inplace:
            targets.append(ROOT / RECORD)
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(record)

    def _fall_back(self, exc: BaseException) -> None:
        for ext in self.extensions:
            for path in {Path(self.get_ext_fullpath(ext.name)),
                         Path(self.build_lib) / self.get_ext_filename(ext.name)}:
                path.unlink(missing_ok=True)
        say(f"compiling the hot path failed ({type(exc).__name__}: {exc}); "
             "installing the pure-Python modules")


# --- PEP 517 hooks that differ from setuptools' ----------------------------------


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    if plan(editable=False).compile:
        requires += [MYPY_REQUIREMENT, *_runtime_dependencies()]
    return requires


if __name__ == "__main__":  # python buildtools/optout_build.py [--editable] [--list]
    decision = plan(editable="--editable" in sys.argv)
    print(f"{'compile' if decision.compile else 'pure Python'}: {decision.reason}")
    if "--list" in sys.argv:
        print("\n".join(hot_path_sources()))
