"""Structured logging: one JSON object per line, one line per event.

Phone numbers and message text are personal data and must not reach log
files by default (SPEC section 3). Call sites never format them directly:
they pass them through `phone()` and `text()`, which mask unless the
operator switched `[logging] unmask = true` for a debugging session.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

_unmask = False
# Fields every line carries (a worker's number and pid with `[smpp] workers`).
_context: dict[str, Any] = {}


def configure(level: str = "INFO", *, unmask: bool = False) -> None:
    """Send the sidecar's logs to stderr as JSON lines."""
    configure_masking(unmask=unmask)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our own events say, with full URLs
    # that can hold phone numbers (e.g. /unsubscribed/{address}/{number}).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def set_context(**fields: Any) -> None:
    """Add `fields` to every log line of this process (e.g. which worker)."""
    _context.update(fields)


def configure_masking(*, unmask: bool) -> None:
    """Switch masking of numbers and text (`[logging] unmask`)."""
    global _unmask
    _unmask = unmask


def phone(number: str | bytes | None) -> str:
    """A phone number as it may appear in a log line."""
    if number is None:
        return "-"
    if isinstance(number, bytes):
        number = number.decode("latin-1")
    if _unmask:
        return number
    if len(number) <= 6:  # short codes and inbound ids are not personal data
        return number
    return number[:5] + "*" * (len(number) - 7) + number[-2:]


def text(value: str | bytes | None) -> str:
    """Message text as it may appear in a log line."""
    if value is None:
        return "-"
    if _unmask:
        return value if isinstance(value, str) else value.decode("latin-1")
    return f"<{len(value)} chars>"


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields (already masked by the caller)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


class Throttle:
    """At most one log line per `interval` seconds per key, for events a
    client can repeat at will (refused connections, locked-out binds): one
    line per event would let a client write the disk full. `allow(key)`
    returns None to stay silent, or how many events were silenced since the
    last line (to log with it). Keys must come from a small fixed set."""

    def __init__(self, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._silenced: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._silenced[key] = self._silenced.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._silenced.pop(key, 0)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if _context:
            out.update(_context)
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
