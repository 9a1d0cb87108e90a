"""Who may bind, and how often they may try: the sidecar checks senders'
passwords itself, closes the connection after every refused bind, locks a
(source IP, system_id) pair after five failures a minute, caps sessions per
account and connections per source. Real clients (smpplib, or raw sockets
where a test needs a second source IP) against the real listener and the
bundled carrier simulator, all on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import smpplib.exceptions

from gateway.bind_guard import BindGuard
from gateway.carrier_sim import CarrierSim, NoReceiverError, SimConfig
from gateway.config import Config, parse_config
from gateway.passwords import hash_password
from gateway.proxy import PassThrough, RelayContext, Sessions, start_listener
from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command, CommandStatus
from metrics import Metrics
from tests.esme import Esme
from tests.raw_smpp import RawPeer
from tests.waiting import wait_for

# The carrier knows the mapped credentials and two pass-through accounts.
CARRIER_CREDENTIALS = {"acme-up": "carrier", "beta": "beta-pw", "gamma": "gamma-pw"}
ACME_HASH = hash_password("acme-pw", n=1 << 12)  # cheap parameters: a test, not a vault


@dataclass
class Relay:
    ctx: RelayContext
    server: asyncio.Server
    port: int
    metrics: Metrics

    def esme(self) -> Esme:
        return Esme("127.0.0.1", self.port)

    async def raw(self, source: str | None = None) -> RawPeer:
        return await RawPeer.connect("127.0.0.1", self.port, source=source)

    def failures(self, reason: str) -> float:
        return self.metrics.registry.get_sample_value(
            "optout_bind_failures_total", {"reason": reason}) or 0.0


def config(carrier_port: int, smpp: dict[str, Any] | None = None,
           **acme: Any) -> Config:
    return parse_config({
        "smpp": {"listen": "127.0.0.1:0", **(smpp or {})},
        "upstream": {"address": f"127.0.0.1:{carrier_port}"},
        "accounts": [
            # Credentials mapped toward the carrier: the sidecar checks the
            # sender's password (a hash here).
            {"system_id": "acme", "app_id": "1", "upstream_system_id": "acme-up",
             "upstream_password": "carrier", "password_hash": ACME_HASH, **acme},
            # Nothing mapped, no password: the carrier decides.
            {"system_id": "beta", "app_id": "2"},
            # Nothing mapped, a plain password: both the sidecar and the carrier check.
            {"system_id": "gamma", "app_id": "3", "password": "gamma-pw"},
        ],
    })


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSim]:
    sim = CarrierSim(SimConfig(port=0, credentials=dict(CARRIER_CREDENTIALS)))
    await sim.start()
    yield sim
    await sim.stop()


async def start(cfg: Config, carrier: CarrierSim, guard: BindGuard | None = None) -> Relay:
    metrics = Metrics()
    ctx = RelayContext(cfg, metrics, PassThrough(), Sessions(), ("127.0.0.1", carrier.port),
                       bind_guard=guard if guard is not None else BindGuard())
    server = await start_listener(ctx, "127.0.0.1", 0)
    return Relay(ctx, server, server.sockets[0].getsockname()[1], metrics)


async def stop(relay: Relay) -> None:
    relay.server.close()
    for session in relay.ctx.sessions.all():
        session.sender.close("test over")
    await relay.server.wait_closed()


@pytest.fixture
async def relay(carrier: CarrierSim) -> AsyncIterator[Relay]:
    r = await start(config(carrier.port), carrier)
    yield r
    await stop(r)


async def smpplib_bind(relay: Relay, kind: str, system_id: str, password: str) -> int:
    """Bind with smpplib; the bind_resp's status (0 when bound)."""
    esme = relay.esme()
    try:
        await asyncio.to_thread(esme.bind, kind, system_id, password)
    except smpplib.exceptions.PDUError as exc:
        return int(exc.args[1])
    finally:
        esme.close()
    return 0


# --- hole 1: the sidecar checks senders' passwords ---------------------------------


@pytest.mark.parametrize("kind", ["tx", "rx", "trx"])
async def test_mapped_account_with_a_wrong_password_never_reaches_the_carrier(
    relay: Relay, carrier: CarrierSim, kind: str
) -> None:
    status = await smpplib_bind(relay, kind, "acme", "nope")
    assert status == CommandStatus.ESME_RINVPASWD
    assert carrier.bind_attempts == 0 and carrier.sessions == 0
    assert relay.failures("bad_password") == 1
    # Nobody is bound to receive: an MO for acme has no session to go to.
    with pytest.raises(NoReceiverError):
        await carrier.inject_mo("14155550123", "18005550100", "123456 is your code",
                                timeout=0.2)


async def test_mapped_account_with_its_password_binds_with_the_mapped_credentials(
    relay: Relay, carrier: CarrierSim
) -> None:
    esme = relay.esme()
    resp = await asyncio.to_thread(esme.bind, "trx", "acme", "acme-pw")
    assert resp.status == 0
    await wait_for(lambda: carrier.sessions == 1)
    assert [s["system_id"] for s in carrier.bound_sessions()] == ["acme-up"]
    submitted = await asyncio.to_thread(esme.submit, "14155550100")
    assert submitted.status == 0
    esme.close()


async def test_plain_password_is_checked_by_the_sidecar_then_by_the_carrier(
    relay: Relay, carrier: CarrierSim
) -> None:
    assert await smpplib_bind(relay, "trx", "gamma", "wrong") == CommandStatus.ESME_RINVPASWD
    assert carrier.bind_attempts == 0
    assert await smpplib_bind(relay, "trx", "gamma", "gamma-pw") == 0
    assert carrier.bind_attempts == 1


async def test_without_mapping_or_password_the_carrier_decides(
    relay: Relay, carrier: CarrierSim
) -> None:
    assert await smpplib_bind(relay, "trx", "beta", "wrong") == CommandStatus.ESME_RINVPASWD
    assert carrier.bind_attempts == 1  # asked, and its refusal passed back
    assert relay.failures("carrier_refused") == 1
    assert await smpplib_bind(relay, "trx", "beta", "beta-pw") == 0


# --- hole 2: a failed bind closes its connection ----------------------------------------


@pytest.mark.parametrize(
    ("system_id", "password", "status", "reason"),
    [
        ("acme", "nope", CommandStatus.ESME_RINVPASWD, "bad_password"),
        ("mallory", "x", CommandStatus.ESME_RINVSYSID, "unknown_system_id"),
        ("beta", "wrong", CommandStatus.ESME_RINVPASWD, "carrier_refused"),
    ],
)
async def test_a_failed_bind_is_answered_then_its_connection_closed(
    relay: Relay, system_id: str, password: str, status: int, reason: str
) -> None:
    peer = await relay.raw()
    resp = await peer.bind(system_id=system_id, password=password)
    assert resp.command_status == status
    assert await peer.closed()
    assert relay.failures(reason) == 1
    await wait_for(lambda: relay.ctx.connections == 0)


async def test_bind_guessing_locks_the_pair_and_only_that_pair(
    relay: Relay, carrier: CarrierSim
) -> None:
    for _ in range(5):
        peer = await relay.raw()
        assert (await peer.bind(system_id="acme", password="guess")).command_status == \
            CommandStatus.ESME_RINVPASWD
        assert await peer.closed()
    # Locked: even the right password is refused at once, without the carrier.
    peer = await relay.raw()
    assert (await peer.bind(system_id="acme", password="acme-pw")).command_status == \
        CommandStatus.ESME_RBINDFAIL
    assert await peer.closed()
    assert carrier.bind_attempts == 0
    assert relay.failures("locked_out") == 1
    # That account from another IP, and another account from this IP, still bind.
    other_ip = await relay.raw(source="127.0.0.2")
    assert (await other_ip.bind(system_id="acme", password="acme-pw")).command_status == 0
    assert await smpplib_bind(relay, "trx", "beta", "beta-pw") == 0
    other_ip.close()


async def test_carrier_refusals_count_toward_the_lockout_too(
    relay: Relay, carrier: CarrierSim
) -> None:
    for _ in range(5):
        assert await smpplib_bind(relay, "tx", "beta", "guess") == CommandStatus.ESME_RINVPASWD
    assert carrier.bind_attempts == 5
    assert await smpplib_bind(relay, "tx", "beta", "beta-pw") == CommandStatus.ESME_RBINDFAIL
    assert carrier.bind_attempts == 5  # the sixth never reached the carrier


async def test_the_lockout_ends_after_a_minute(carrier: CarrierSim) -> None:
    clock = [0.0]
    relay = await start(config(carrier.port), carrier, BindGuard(clock=lambda: clock[0]))
    try:
        for _ in range(5):
            assert await smpplib_bind(relay, "trx", "acme", "guess") == \
                CommandStatus.ESME_RINVPASWD
        clock[0] += 59
        assert await smpplib_bind(relay, "trx", "acme", "acme-pw") == \
            CommandStatus.ESME_RBINDFAIL
        clock[0] += 1.5
        assert await smpplib_bind(relay, "trx", "acme", "acme-pw") == 0
    finally:
        await stop(relay)


async def test_max_binds_caps_concurrent_sessions_of_an_account(carrier: CarrierSim) -> None:
    relay = await start(config(carrier.port, max_binds=2), carrier)
    try:
        first, second = relay.esme(), relay.esme()
        for esme in (first, second):
            assert (await asyncio.to_thread(esme.bind, "trx", "acme", "acme-pw")).status == 0
        assert await smpplib_bind(relay, "trx", "acme", "acme-pw") == \
            CommandStatus.ESME_RBINDFAIL
        assert relay.failures("max_binds") == 1
        assert carrier.bind_attempts == 2
        await asyncio.to_thread(first.unbind)
        first.close()
        await wait_for(lambda: carrier.sessions == 1)
        assert await smpplib_bind(relay, "trx", "acme", "acme-pw") == 0  # a slot again
        second.close()
    finally:
        await stop(relay)


# --- connection pools per source IP ---------------------------------------------------


async def test_connections_per_ip_are_capped_and_other_ips_unaffected(
    carrier: CarrierSim
) -> None:
    relay = await start(config(carrier.port, {"max_connections_per_ip": 3}), carrier)
    try:
        bound = [await relay.raw() for _ in range(3)]
        for peer in bound:
            assert (await peer.bind(system_id="beta", password="beta-pw")).command_status == 0
        extra = await relay.raw()
        assert await extra.closed()  # the fourth from 127.0.0.1
        elsewhere = await relay.raw(source="127.0.0.2")
        assert (await elsewhere.bind(system_id="beta", password="beta-pw")).command_status == 0
        refused = relay.metrics.registry.get_sample_value(
            "optout_connections_refused_total", {"reason": "max_connections_per_ip"})
        assert refused == 1
        for peer in [*bound, elsewhere]:
            peer.close()
    finally:
        await stop(relay)


async def test_idle_sockets_from_one_ip_cannot_take_its_bound_share(
    carrier: CarrierSim
) -> None:
    relay = await start(config(carrier.port, {"max_connections_per_ip": 10,
                                              "max_unbound_connections_per_ip": 2}), carrier)
    try:
        idle = [await relay.raw(), await relay.raw()]
        await wait_for(lambda: relay.ctx.connections == 2)
        third = await relay.raw()
        assert await third.closed()  # a third idle socket from this IP
        idle[0].close()  # one idle slot back: a real sender binds through it
        await wait_for(lambda: relay.ctx.connections == 1)
        assert await smpplib_bind(relay, "trx", "beta", "beta-pw") == 0
        idle[1].close()
    finally:
        await stop(relay)


async def test_idle_sockets_from_many_ips_cannot_starve_a_real_bind(
    carrier: CarrierSim
) -> None:
    relay = await start(config(carrier.port, {"max_unbound_connections": 3}), carrier)
    try:
        idle = []
        for i in range(2, 5):
            idle.append(await relay.raw(source=f"127.0.0.{i}"))
            # In order: "oldest" must mean the first one.
            await wait_for(lambda: relay.ctx.connections == len(idle))
        # The unbound pool is full of idle sockets; a real sender still binds,
        # and the oldest idle socket is the one that goes.
        assert await smpplib_bind(relay, "trx", "beta", "beta-pw") == 0
        assert await idle[0].closed()
        # The newer idle sockets were left alone: the newest can still bind.
        assert (await idle[2].bind(system_id="beta", password="beta-pw")).command_status == 0
        for peer in idle:
            peer.close()
    finally:
        await stop(relay)


# --- hole 9: log amplification ---------------------------------------------------------


async def test_unsolicited_responses_give_bounded_logs_and_a_closed_connection(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    esme = relay.esme()
    assert (await asyncio.to_thread(esme.bind, "trx", "beta", "beta-pw")).status == 0
    caplog.set_level(logging.DEBUG, logger="optout")
    caplog.clear()
    flooder = await relay.raw()
    burst = b"".join(
        codec.encode(codec.make_pdu(Command.SUBMIT_SM_RESP, sequence_number=i + 1,
                                    message_id=b"x"))
        for i in range(5000))
    await flooder.send_bytes(burst)
    assert await flooder.closed()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 8, [r.getMessage() for r in warnings]
    assert any(r.getMessage() == "too_many_protocol_violations" for r in warnings)
    violations = relay.metrics.registry.get_sample_value(
        "optout_protocol_violations_total", {"side": "sender"})
    assert violations == 100  # the rest was never read
    # The other sender was never disturbed.
    assert (await asyncio.to_thread(esme.submit, "14155550100")).status == 0
    esme.close()


async def test_requests_in_the_wrong_state_count_as_violations_too(relay: Relay) -> None:
    peer = await relay.raw()
    for _ in range(99):
        await peer.send(codec.make_pdu(Command.SUBMIT_SM, destination_addr=b"14155550100"))
    for _ in range(99):
        resp = await peer.read()  # each is still answered
        assert resp.command_status == CommandStatus.ESME_RINVBNDSTS
    await peer.send(codec.make_pdu(Command.SUBMIT_SM, destination_addr=b"14155550100"))
    assert (await peer.read()).command_status == CommandStatus.ESME_RINVBNDSTS
    assert await peer.closed()


async def test_a_client_looping_past_its_cap_gets_a_log_line_not_one_per_socket(
    carrier: CarrierSim, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await start(config(carrier.port, {"max_unbound_connections_per_ip": 1}), carrier)
    try:
        caplog.set_level(logging.INFO, logger="optout")
        holder = await relay.raw()
        await wait_for(lambda: relay.ctx.connections == 1)
        for _ in range(200):
            extra = await relay.raw()
            assert await extra.closed()
        refused = relay.metrics.registry.get_sample_value(
            "optout_connections_refused_total", {"reason": "max_unbound_connections_per_ip"})
        assert refused == 200
        lines = [r for r in caplog.records if r.name.startswith("optout")]
        assert len(lines) <= 2, [r.getMessage() for r in lines]
        holder.close()
    finally:
        await stop(relay)


async def test_a_late_answer_to_a_timed_out_request_is_not_a_violation() -> None:
    """A slow carrier's late submit_sm_resp is dropped quietly; it must not
    count toward closing the carrier leg."""
    from gateway.link import Link, LinkSettings

    carrier_side: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
        asyncio.Queue()

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await carrier_side.put((r, w))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    class Owner:
        def link_request(self, link: Link, header: Any, raw: bytes) -> None: ...
        def link_room(self, link: Link) -> None: ...
        def link_closed(self, link: Link, reason: str) -> None: ...

    loop = asyncio.get_running_loop()
    metrics = Metrics()
    _, link = await loop.create_connection(
        lambda: Link(LinkSettings("upstream", response_timeout=0.3), Owner(), metrics),
        "127.0.0.1", port)
    reader, writer = await carrier_side.get()
    try:
        answer = link.request(codec.encode(codec.make_pdu(
            Command.SUBMIT_SM, destination_addr=b"14155550100")))
        assert await asyncio.wait_for(answer, 5) == (None, None)  # timed out
        frames = b""
        while len(frames) < 16:
            frames += await reader.read(65536)
        seq = int.from_bytes(frames[12:16], "big")
        late = codec.make_pdu(Command.SUBMIT_SM_RESP, sequence_number=seq, message_id=b"1")
        # ... and a response to nothing at all, which is one.
        stray = codec.make_pdu(Command.SUBMIT_SM_RESP, sequence_number=seq + 1000,
                               message_id=b"2")
        writer.write(codec.encode(late) + codec.encode(stray))
        await writer.drain()
        await wait_for(lambda: link.violations > 0)
        assert link.violations == 1
    finally:
        link.close("test over")
        writer.close()
        server.close()
        await server.wait_closed()


async def test_a_burst_of_guesses_on_many_connections_learns_no_more_than_five(
    relay: Relay, carrier: CarrierSim
) -> None:
    """Ten binds sent at once on ten connections, the right password last:
    the ones decided after the fifth failure are answered "locked", so the
    right password is not confirmed."""
    peers = [await relay.raw() for _ in range(10)]
    passwords = [f"guess{i}" for i in range(9)] + ["acme-pw"]
    for peer, password in zip(peers, passwords, strict=True):
        await peer.send(codec.make_pdu(Command.BIND_TRANSCEIVER, system_id=b"acme",
                                       password=password.encode(), interface_version=0x34))
    statuses = [(await peer.read_command(Command.BIND_TRANSCEIVER_RESP)).command_status
                for peer in peers]
    assert statuses.count(CommandStatus.ESME_RINVPASWD) <= 6  # two hash checks run at once
    assert statuses[-1] == CommandStatus.ESME_RBINDFAIL
    assert carrier.bind_attempts == 0
    for peer in peers:
        assert await peer.closed()
