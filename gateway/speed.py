"""Which implementation runs: the compiled or the pure-Python hot path, and
uvloop or asyncio's own event loop.

The per-PDU path -- framing and the header, sequence renumbering, the relay
and its window, the submit_sm peek, the number normalisation and the index
look-up -- is ordinary typed Python in the modules of `HOT_PATH_MODULES`.
When a C compiler is there at install time, `setup.py` compiles exactly
these modules with mypyc (into extension modules of the same names, which
Python imports in preference to the ``.py`` files next to them); when it is
not, or the compile fails, or ``OPTOUT_PURE_PYTHON=1`` is set at install
time, the same ``.py`` files run as they are. Nothing else differs, as with
aiohttp's optional C parser.

At run time:

* ``OPTOUT_PURE_PYTHON=1`` makes `optout-sidecar` import the ``.py`` files
  even where compiled modules are installed (`prefer_pure_python`, called by
  ``gateway/__init__.py``, so before any hot-path module is imported in a
  process that imports `gateway` first, as the CLI does), e.g. to rule the
  compiled code out when chasing a bug, or to compare both on one
  installation.
* `[smpp] event_loop` (or ``OPTOUT_EVENT_LOOP``, which wins) chooses the
  event loop: ``"auto"`` takes uvloop when it is installed
  (``pip install '.[fast]'``), ``"asyncio"`` never does, ``"uvloop"``
  insists on it.

This module imports nothing of the hot path itself, so it can decide before
those modules load.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

__all__ = [
    "EVENT_LOOPS",
    "HOT_PATH_MODULES",
    "LOOP_ENV",
    "PURE_ENV",
    "EventLoopChoice",
    "HotPathStatus",
    "choose_event_loop",
    "hot_path_status",
    "prefer_pure_python",
    "run",
]

#: The modules mypyc compiles (setup.py reads this tuple). Each must stay
#: mypyc-clean: no `cls.__new__` tricks, no attributes added from outside,
#: no monkey-patching of their functions in tests.
HOT_PATH_MODULES: tuple[str, ...] = (
    "gateway.smpp.framing",
    "gateway.smpp.pdu",
    "gateway.smpp.session",
    "gateway.link",
    "gateway.proxy",
    "gateway.enforcement",
    "rules.numbers",
    "rules.index",
    "rules.decision",
    "metrics.batch",
)

PURE_ENV = "OPTOUT_PURE_PYTHON"
LOOP_ENV = "OPTOUT_EVENT_LOOP"
EVENT_LOOPS = ("auto", "asyncio", "uvloop")

T = TypeVar("T")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


# --- compiled or pure ---------------------------------------------------------------


def _is_extension(path: str | None) -> bool:
    return path is not None and path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


class _PureSourceFinder(importlib.abc.MetaPathFinder):
    """Finds the ``.py`` file of a hot-path module, so it is imported instead
    of the compiled extension module beside it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in HOT_PATH_MODULES or path is None:
            return None
        leaf = fullname.rpartition(".")[2]
        for directory in path:
            source = Path(directory) / f"{leaf}.py"
            if source.is_file():
                return importlib.util.spec_from_file_location(fullname, source)
        return None  # no source shipped: the normal import decides


_finder = _PureSourceFinder()


def prefer_pure_python(force: bool | None = None) -> list[str]:
    """With ``OPTOUT_PURE_PYTHON`` set (or `force`), make later imports of
    the hot-path modules load their ``.py`` files. Returns the hot-path
    modules that were already imported compiled (too late for those)."""
    if not (_env_flag(PURE_ENV) if force is None else force):
        return []
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    return [name for name in HOT_PATH_MODULES
            if name in sys.modules and _is_extension(getattr(sys.modules[name], "__file__", None))]


@dataclass(frozen=True)
class HotPathStatus:
    """What `hot_path_status` found."""

    compiled: tuple[str, ...]
    pure: tuple[str, ...]
    #: Compiled modules whose ``.py`` beside them differs from the one they
    #: were compiled from (an in-place build in a checkout edited since):
    #: the edit is not what runs.
    stale: tuple[str, ...]

    @property
    def kind(self) -> str:
        """"compiled", "pure" or "mixed" (some modules compiled, some not)."""
        if not self.pure:
            return "compiled"
        return "pure" if not self.compiled else "mixed"

    def describe(self) -> str:
        if self.kind == "compiled":
            text = f"compiled (mypyc, {len(self.compiled)} modules)"
        elif self.kind == "pure":
            text = "pure Python"
            if _env_flag(PURE_ENV):
                text += f" ({PURE_ENV} is set)"
        else:
            text = f"mixed: compiled {', '.join(self.compiled)}; pure {', '.join(self.pure)}"
        if self.stale:
            text += (f"; STALE compiled modules (their .py changed since the build): "
                     f"{', '.join(self.stale)}")
        return text


def hot_path_status() -> HotPathStatus:
    """Imports the hot-path modules (as the sidecar would) and reports which
    of them are compiled extension modules."""
    compiled: list[str] = []
    pure: list[str] = []
    stale: list[str] = []
    record = _build_record()
    for name in HOT_PATH_MODULES:
        module = importlib.import_module(name)
        path = getattr(module, "__file__", None)
        if _is_extension(path):
            assert path is not None
            compiled.append(name)
            source = Path(path).parent / f"{name.rpartition('.')[2]}.py"
            if source.is_file() and record.get(name) != _digest(source):
                stale.append(name)
        else:
            pure.append(name)
    return HotPathStatus(tuple(compiled), tuple(pure), tuple(stale))


def _build_record() -> dict[str, str]:
    """{module: sha256 of the .py it was compiled from}, written by setup.py."""
    try:
        data = json.loads((Path(__file__).parent / "_hotpath_build.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the event loop ----------------------------------------------------------------


class EventLoopError(Exception):
    """``event_loop = "uvloop"`` but uvloop cannot be imported."""


@dataclass(frozen=True)
class EventLoopChoice:
    """The loop to run on: `factory` None means asyncio's default."""

    factory: Callable[[], asyncio.AbstractEventLoop] | None
    description: str


def choose_event_loop(setting: str = "auto") -> EventLoopChoice:
    """The event loop for `setting` ("auto", "asyncio", "uvloop"); the
    ``OPTOUT_EVENT_LOOP`` environment variable overrides it."""
    env = os.environ.get(LOOP_ENV, "").strip().lower()
    source = LOOP_ENV if env else "[smpp] event_loop"
    setting = env or setting
    if setting not in EVENT_LOOPS:
        raise EventLoopError(f"{source} must be one of {', '.join(EVENT_LOOPS)}, got {setting!r}")
    if setting == "asyncio":
        return EventLoopChoice(None, f"asyncio (uvloop off by {source})")
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if setting == "uvloop":
            raise EventLoopError(
                f"{source} = uvloop, but uvloop is not installed "
                "(pip install 'optout-sidecar[fast]')") from None
        return EventLoopChoice(None, "asyncio (uvloop not installed)")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return EventLoopChoice(factory, f"uvloop {getattr(uvloop, '__version__', '?')}")


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    with asyncio.Runner(loop_factory=choice.factory) as runner:
        return runner.run(main)
