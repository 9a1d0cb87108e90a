"""Failed-bind counting on a fake clock: five failures of one (source,
system_id) within a minute lock that pair for a minute, nobody else, and no
sequence of failures grows the guard without bound."""

from __future__ import annotations

from gateway.bind_guard import BindGuard, source_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(clock: FakeClock, **kw: int) -> BindGuard:
    return BindGuard(clock=clock, **kw)  # type: ignore[arg-type]


def test_five_failures_in_a_minute_lock_the_pair_for_a_minute() -> None:
    clock = FakeClock()
    g = guard(clock)
    for _ in range(4):
        assert not g.failed("10.0.0.1", "acme")
        clock.now += 10
    assert not g.locked("10.0.0.1", "acme")
    assert g.failed("10.0.0.1", "acme")  # the fifth, 40 s after the first
    assert g.locked("10.0.0.1", "acme")
    clock.now += 59.9
    assert g.locked("10.0.0.1", "acme")
    clock.now += 0.2
    assert not g.locked("10.0.0.1", "acme")


def test_failures_spread_over_more_than_a_minute_do_not_lock() -> None:
    clock = FakeClock()
    g = guard(clock)
    for _ in range(20):
        assert not g.failed("10.0.0.1", "acme")
        clock.now += 15.1  # never five within 60 s
    assert not g.locked("10.0.0.1", "acme")


def test_a_lock_touches_only_its_own_pair() -> None:
    clock = FakeClock()
    g = guard(clock)
    for _ in range(5):
        g.failed("10.0.0.1", "acme")
    assert g.locked("10.0.0.1", "acme")
    assert not g.locked("10.0.0.1", "beta")  # other accounts from that IP
    assert not g.locked("10.0.0.2", "acme")  # that account from other IPs


def test_failures_while_locked_do_not_extend_the_lock() -> None:
    clock = FakeClock()
    g = guard(clock)
    for _ in range(5):
        g.failed("10.0.0.1", "acme")
    for _ in range(50):
        clock.now += 1
        assert not g.failed("10.0.0.1", "acme")
    clock.now += 10.1
    assert not g.locked("10.0.0.1", "acme")


def test_a_successful_bind_forgets_the_failures() -> None:
    clock = FakeClock()
    g = guard(clock)
    for _ in range(4):
        g.failed("10.0.0.1", "acme")
    g.succeeded("10.0.0.1", "acme")
    assert len(g) == 0
    assert not g.failed("10.0.0.1", "acme")  # counting starts again


def test_cycling_system_ids_from_one_ip_keeps_memory_bounded_and_the_lock() -> None:
    clock = FakeClock()
    g = guard(clock, max_pairs_per_ip=64, max_pairs=1000)
    for _ in range(5):
        g.failed("10.0.0.1", "acme")
    for i in range(100_000):
        g.failed("10.0.0.1", f"guess{i}")
        if i % 1000 == 0:
            clock.now += 0.001
    assert len(g) <= 64
    assert g.locked("10.0.0.1", "acme")  # unlocked pairs were forgotten first


def test_many_sources_keep_memory_bounded() -> None:
    clock = FakeClock()
    g = guard(clock, max_pairs=500)
    for i in range(20_000):
        g.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"id{i % 7}")
    assert len(g) <= 500
    # The newest source is still counted.
    assert g.failed("10.9.9.9", "x") is False and len(g) <= 500


def test_expired_entries_are_dropped_as_they_are_met() -> None:
    clock = FakeClock()
    g = guard(clock)
    for i in range(30):
        g.failed("10.0.0.1", f"id{i}")
    clock.now += 61
    g.failed("10.0.0.1", "fresh")
    assert len(g) == 1


def test_sources_are_ipv4_addresses_or_ipv6_slash_64s() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("not an ip") == "not an ip"
