"""How many wrong API tokens one client may present: the rate-limit logic,
with no I/O and no clock of its own (the caller passes `now`).

Policy (issue 8, hole 7): a source (the peer's IP address) that presented
`limit` wrong tokens within `window` seconds is refused (HTTP 429) until the
oldest of those failures is `window` seconds old; then one more attempt is
allowed, and so on. That is a sliding window: at most `limit` guesses per
`window`, however the attempts are spread.

Memory is bounded: at most `limit` timestamps per source and at most
`max_sources` sources, the least recently failing forgotten first. An
attacker with more addresses than that can make one forgotten early, which
only gives that address its `limit` guesses again; nothing grows.
"""

from __future__ import annotations

from collections import OrderedDict, deque

__all__ = ["FailureThrottle"]


class FailureThrottle:
    """Counts failures per source in a sliding window (see the module doc)."""

    def __init__(self, limit: int = 20, window: float = 60.0, max_sources: int = 10_000) -> None:
        if limit < 1 or window <= 0 or max_sources < 1:
            raise ValueError("limit, window and max_sources must be positive")
        self.limit = limit
        self.window = window
        self.max_sources = max_sources
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Sources currently remembered."""
        return len(self._failures)

    def retry_after(self, source: str, now: float) -> float:
        """Seconds until `source` may try again; 0.0 when it may now."""
        times = self._failures.get(source)
        if times is None:
            return 0.0
        if now - times[-1] >= self.window:
            del self._failures[source]  # every failure has aged out
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - now)

    def failed(self, source: str, now: float) -> bool:
        """Record one failure of `source`; True when it is now refused."""
        times = self._failures.get(source)
        if times is None:
            times = self._failures[source] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_sources:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(source)
        while times and now - times[0] >= self.window:
            times.popleft()
        times.append(now)
        return self.retry_after(source, now) > 0
