"""Bind guessing: failed binds counted per (source IP, system_id).

Theory of operation
-------------------
Every failed bind (wrong password, unknown system_id, a carrier refusal) is
reported with `failed(ip, system_id)`. When one pair has `threshold`
failures within `window` seconds it is *locked* for `lockout` seconds:
`locked()` says so, and the listener refuses that pair's binds at once
(ESME_RBINDFAIL) without checking a password or asking the carrier. Other
system_ids from the same IP, and the same system_id from other IPs, are
not affected, so an attacker cannot lock a real sender out from elsewhere.
A successful bind forgets the pair's failures.

The lockout is fixed: binds refused while locked do not extend it, so a
sender whose password was fixed gets in one `lockout` after the last
counted failure, however often it retried meanwhile.

Memory is bounded whatever a client sends. At most `max_pairs_per_ip`
system_ids are tracked per IP and `max_pairs` in all; when a new pair would
exceed a bound, the least recently failed pair of that IP (or of the least
recently seen IP) is forgotten, unlocked pairs first. Entries whose
failures and lockout have both expired are dropped as they are met. An
attacker cycling system_ids therefore only churns its own entries: to
unlock one pair it must first get `max_pairs_per_ip` others locked, five
failed binds each.

Pure: no asyncio, no sockets; time comes from the injected `clock`.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["BindGuard", "source_key"]


@dataclass(slots=True)
class _Pair:
    # Times of the recent failures, oldest first (at most `threshold`).
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class BindGuard:
    """Counts failed binds and says which (IP, system_id) pairs are locked."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        window: float = 60.0,
        lockout: float = 60.0,
        max_pairs: int = 10000,
        max_pairs_per_ip: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.lockout = lockout
        self.max_pairs = max_pairs
        self.max_pairs_per_ip = max_pairs_per_ip
        self._clock = clock
        # ip -> system_id -> pair; both orders are least recently failed first.
        self._by_ip: OrderedDict[str, OrderedDict[str, _Pair]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        """Pairs tracked now (for tests and bounds checks)."""
        return self._size

    def locked(self, ip: str, system_id: str) -> bool:
        """True while this pair's binds must be refused without trying them."""
        pairs = self._by_ip.get(ip)
        pair = pairs.get(system_id) if pairs is not None else None
        return pair is not None and pair.locked_until > self._clock()

    def failed(self, ip: str, system_id: str) -> bool:
        """Count one failed bind; True if it locked the pair just now."""
        now = self._clock()
        pairs = self._by_ip.get(ip)
        if pairs is None:
            pairs = self._by_ip[ip] = OrderedDict()
        else:
            self._by_ip.move_to_end(ip)
            self._drop_expired(pairs, now)
        pair = pairs.get(system_id)
        if pair is None:
            self._make_room(ip, pairs)
            pair = pairs[system_id] = _Pair()
            self._size += 1
        else:
            pairs.move_to_end(system_id)
        if pair.locked_until > now:
            return False  # already locked: the lockout is not extended
        cutoff = now - self.window
        recent = [t for t in pair.failures if t > cutoff]
        recent.append(now)
        if len(recent) >= self.threshold:
            pair.failures = []
            pair.locked_until = now + self.lockout
            return True
        pair.failures = recent
        return False

    def succeeded(self, ip: str, system_id: str) -> None:
        """A bind of this pair succeeded: forget its failures."""
        pairs = self._by_ip.get(ip)
        if pairs is not None and pairs.pop(system_id, None) is not None:
            self._size -= 1
            if not pairs:
                del self._by_ip[ip]

    # --- bounds -----------------------------------------------------------------

    def _expired(self, pair: _Pair, now: float) -> bool:
        return pair.locked_until <= now and (
            not pair.failures or pair.failures[-1] <= now - self.window
        )

    def _drop_expired(self, pairs: OrderedDict[str, _Pair], now: float) -> None:
        for system_id in [s for s, p in pairs.items() if self._expired(p, now)]:
            del pairs[system_id]
            self._size -= 1

    def _make_room(self, ip: str, pairs: OrderedDict[str, _Pair]) -> None:
        """Before adding a pair for `ip`: keep both bounds."""
        if len(pairs) >= self.max_pairs_per_ip:
            self._evict_one(pairs)
        while self._size >= self.max_pairs:
            # The least recently seen IP other than this one gives way (or this
            # one, if it is the only one).
            victim_ip = next(iter(self._by_ip))
            if victim_ip == ip and len(self._by_ip) > 1:
                self._by_ip.move_to_end(ip)
                victim_ip = next(iter(self._by_ip))
            victims = self._by_ip[victim_ip]
            self._drop_expired(victims, self._clock())
            if len(victims) >= 1 and self._size >= self.max_pairs:
                self._evict_one(victims)
            if not victims and victim_ip != ip:
                del self._by_ip[victim_ip]

    def _evict_one(self, pairs: OrderedDict[str, _Pair]) -> None:
        now = self._clock()
        victim = next((s for s, p in pairs.items() if p.locked_until <= now), None)
        if victim is None:
            victim = next(iter(pairs))
        del pairs[victim]
        self._size -= 1


def source_key(host: str) -> str:
    """The unit that per-IP limits count: the IPv4 address, or the /64 of an
    IPv6 address (one subscriber usually holds a whole /64, so counting
    single IPv6 addresses would let one client look like billions).
    IPv4-mapped IPv6 addresses count as their IPv4 address."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # a Unix socket path or similar: counted as given
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)
