"""Connection pools per source: idle sockets fill only the unbound pools, a
bound session is outside them, and when all sources together fill the
unbound pool the oldest idle connection gives way to the newcomer."""

from __future__ import annotations

from gateway.admission import Admission, Admitted, Refused


def pools(total: int = 100, per_ip: int = 5, unbound: int = 6,
          unbound_per_ip: int = 3) -> Admission[str]:
    return Admission(max_connections=total, max_connections_per_ip=per_ip,
                     max_unbound_connections=unbound,
                     max_unbound_connections_per_ip=unbound_per_ip)


def test_idle_sockets_from_one_source_stop_at_its_unbound_pool() -> None:
    a = pools()
    for i in range(3):
        assert a.admit("10.0.0.1", f"idle{i}") == Admitted()
    assert a.admit("10.0.0.1", "idle3") == Refused("max_unbound_connections_per_ip")
    assert a.admit("10.0.0.2", "other") == Admitted()  # other sources unaffected


def test_bound_sessions_leave_the_unbound_pool_up_to_the_per_ip_cap() -> None:
    a = pools()
    for i in range(5):
        assert isinstance(a.admit("10.0.0.1", f"s{i}"), Admitted)
        a.bind_started(f"s{i}")
        a.bound(f"s{i}")
    assert a.unbound == 0 and a.count("10.0.0.1") == 5
    assert a.admit("10.0.0.1", "s5") == Refused("max_connections_per_ip")
    a.release("s0")
    assert a.admit("10.0.0.1", "s5") == Admitted()


def test_a_full_unbound_pool_closes_the_oldest_idle_connection_for_a_new_one() -> None:
    a = pools(unbound=4, unbound_per_ip=2)
    a.admit("10.0.0.1", "old")
    a.admit("10.0.0.1", "binding")
    a.bind_started("binding")
    a.admit("10.0.0.2", "idle2")
    a.admit("10.0.0.3", "idle3")
    assert a.admit("10.0.0.4", "new") == Admitted(evict="old")
    assert a.admit("10.0.0.5", "newer") == Admitted(evict="idle2")  # "binding" is kept
    a.bind_started("idle3")
    a.bind_started("new")
    a.bind_started("newer")
    assert a.admit("10.0.0.6", "last") == Refused("max_unbound_connections")
    a.release("old")  # the evicted connection's own close changes nothing
    assert a.unbound == 4 and a.total == 4


def test_the_global_cap_comes_first_and_pools_never_exceed_it() -> None:
    a = pools(total=2, per_ip=50, unbound=100, unbound_per_ip=10)
    assert (a.max_per_ip, a.max_unbound, a.max_unbound_per_ip) == (2, 2, 2)
    a.admit("10.0.0.1", "a")
    a.admit("10.0.0.2", "b")
    assert a.admit("10.0.0.3", "c") == Refused("max_connections")


def test_release_restores_every_count() -> None:
    a = pools()
    for i in range(3):
        a.admit("10.0.0.1", f"c{i}")
    a.bind_started("c1")
    a.bound("c2")
    for i in range(3):
        a.release(f"c{i}")
        a.release(f"c{i}")  # twice is harmless
    assert (a.total, a.unbound, a.count("10.0.0.1")) == (0, 0, 0)
    assert a.admit("10.0.0.1", "again") == Admitted()
