"""Optional compiled hot path (everything else is in pyproject.toml).

When `buildtools/optout_build.py` decides a build compiles, the modules of
`gateway.speed.HOT_PATH_MODULES` are handed to setuptools as mypyc extension
modules; otherwise, or when mypyc or the C compiler fails for any reason,
the package is the same pure Python. The ``.py`` files are always shipped,
so `OPTOUT_PURE_PYTHON=1` can select them at run time too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup

sys.path.insert(0, str(Path(__file__).resolve().parent / "buildtools"))
import optout_build  # found through the path set just above


def extensions() -> list[Extension]:
    if not optout_build.building_code(sys.argv):
        return []
    decision = optout_build.plan(editable=False)
    if not decision.compile:
        optout_build.say(f"pure Python hot path: {decision.reason}")
        return []
    try:
        from mypyc.build import mypycify

        # One shared library, inside the gateway package (not top level,
        # where an editable install's finder would not find it).
        modules: list[Extension] = mypycify(optout_build.hot_path_sources(),
                                            group_name="gateway._hotpath", opt_level="3")
    except (Exception, SystemExit) as exc:  # mypyc missing, or mypy found errors
        optout_build.say(f"mypyc could not compile the hot path ({type(exc).__name__}: "
                         f"{exc}); installing the pure-Python modules")
        return []
    optout_build.say(f"compiling {len(modules)} extension modules with mypyc")
    return modules


cmdclass: dict[str, Any] = {"build_ext": optout_build.OptionalBuildExt}
setup(ext_modules=extensions(), cmdclass=cmdclass)
