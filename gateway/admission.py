"""Which sender connections the listener keeps: pools per source IP.

Theory of operation
-------------------
Four bounds, checked when a connection arrives (`admit`):

* `max_connections`: all connections, bound or not;
* `max_connections_per_ip`: all connections from one source (an IPv4
  address or an IPv6 /64, see `gateway.bind_guard.source_key`);
* `max_unbound_connections_per_ip`: connections from one source that have
  not bound yet;
* `max_unbound_connections`: connections that have not bound yet, all
  sources together.

Bound sessions are outside the two unbound pools, so sockets that never
bind cannot use up the room real sessions need: from one source they hit
the small per-IP unbound pool; from many sources they fill the global
unbound pool, and then each new connection closes the *oldest idle* one
(connected, no bind sent yet) instead of being refused. An idle socket
therefore lasts until `bind_timeout` or until newer connections push it
out, whichever comes first, and a real sender that binds as soon as it
connects still gets in. A connection that has sent a bind is never pushed
out (its bind is being decided); if every unbound connection is binding,
the newcomer is refused.

Pure bookkeeping: no sockets and no asyncio. The listener asks `admit`,
closes what it is told to, and reports `bind_started`, `bound` and
`release`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Admission", "Admitted", "Refused"]

C = TypeVar("C", bound=Hashable)

_IDLE, _BINDING, _BOUND = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Admitted(Generic[C]):
    """Keep the connection; close `evict` first (an idle one) if it is set."""

    evict: C | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Close the new connection; `reason` names the bound it hit."""

    reason: str


class Admission(Generic[C]):
    """Connection counts per source and per pool."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_connections_per_ip: int,
        max_unbound_connections: int,
        max_unbound_connections_per_ip: int,
    ) -> None:
        # A smaller pool can never be larger than the one it sits in.
        self.max_connections = max_connections
        self.max_per_ip = min(max_connections_per_ip, max_connections)
        self.max_unbound = min(max_unbound_connections, max_connections)
        self.max_unbound_per_ip = min(max_unbound_connections_per_ip, self.max_per_ip,
                                      self.max_unbound)
        self._conns: dict[C, tuple[str, int]] = {}
        self._per_ip: dict[str, int] = {}
        self._unbound_per_ip: dict[str, int] = {}
        self._unbound = 0
        # Idle connections (no bind sent yet), oldest first.
        self._idle: OrderedDict[C, None] = OrderedDict()

    @property
    def total(self) -> int:
        return len(self._conns)

    @property
    def unbound(self) -> int:
        return self._unbound

    def count(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    def admit(self, ip: str, conn: C) -> Admitted[C] | Refused:
        """A connection from `ip` arrived: keep it (maybe closing an idle one
        to make room) or refuse it."""
        if len(self._conns) >= self.max_connections:
            return Refused("max_connections")
        if self._per_ip.get(ip, 0) >= self.max_per_ip:
            return Refused("max_connections_per_ip")
        if self._unbound_per_ip.get(ip, 0) >= self.max_unbound_per_ip:
            return Refused("max_unbound_connections_per_ip")
        evict: C | None = None
        if self._unbound >= self.max_unbound:
            if not self._idle:
                return Refused("max_unbound_connections")
            evict = next(iter(self._idle))
            self.release(evict)
        self._conns[conn] = (ip, _IDLE)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._unbound_per_ip[ip] = self._unbound_per_ip.get(ip, 0) + 1
        self._unbound += 1
        self._idle[conn] = None
        return Admitted(evict)

    def bind_started(self, conn: C) -> None:
        """`conn` sent a bind: no longer idle, so never pushed out."""
        entry = self._conns.get(conn)
        if entry is not None and entry[1] == _IDLE:
            self._conns[conn] = (entry[0], _BINDING)
            self._idle.pop(conn, None)

    def bound(self, conn: C) -> None:
        """`conn` bound: it leaves the unbound pools."""
        entry = self._conns.get(conn)
        if entry is None or entry[1] == _BOUND:
            return
        ip = entry[0]
        self._conns[conn] = (ip, _BOUND)
        self._idle.pop(conn, None)
        self._leave_unbound(ip)

    def release(self, conn: C) -> None:
        """`conn` is gone (or being closed); unknown connections are ignored."""
        entry = self._conns.pop(conn, None)
        if entry is None:
            return
        ip, state = entry
        if state != _BOUND:
            self._idle.pop(conn, None)
            self._leave_unbound(ip)
        left = self._per_ip[ip] - 1
        if left:
            self._per_ip[ip] = left
        else:
            del self._per_ip[ip]

    def _leave_unbound(self, ip: str) -> None:
        self._unbound -= 1
        left = self._unbound_per_ip[ip] - 1
        if left:
            self._unbound_per_ip[ip] = left
        else:
            del self._unbound_per_ip[ip]
