"""The SMPP relay with a real client (smpplib) and the bundled carrier
simulator, all on loopback: what a sender sees when it points its binds at
the sidecar instead of the carrier."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import smpplib.exceptions

from gateway.carrier_sim import CarrierSim, SimConfig
from gateway.config import Config, parse_config
from gateway.proxy import PassThrough, RelayContext, Sessions, start_listener
from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command, CommandStatus
from gateway.smpp.pdu import Tlv
from metrics import Metrics
from tests.certs import self_signed
from tests.esme import Esme
from tests.raw_smpp import RawPeer
from tests.waiting import wait_for

CREDENTIALS = {"acme": "secret", "beta": "beta-pw"}


@dataclass
class Relay:
    ctx: RelayContext
    server: asyncio.Server
    host: str
    port: int
    metrics: Metrics

    def esme(self, timeout: float = 5.0) -> Esme:
        return Esme(self.host, self.port, timeout=timeout)

    async def raw(self) -> RawPeer:
        return await RawPeer.connect(self.host, self.port)


def relay_config(carrier_port: int, **smpp: Any) -> Config:
    return parse_config({
        "smpp": {"listen": "127.0.0.1:0", **smpp},
        "upstream": {"address": f"127.0.0.1:{carrier_port}"},
        "accounts": [
            {"system_id": "acme", "app_id": "1400000001"},
            {"system_id": "beta", "app_id": "1400000002"},
        ],
    })


@pytest.fixture
async def carrier() -> AsyncIterator[CarrierSim]:
    sim = CarrierSim(SimConfig(port=0, credentials=dict(CREDENTIALS)))
    await sim.start()
    yield sim
    await sim.stop()


async def start_relay(config: Config, carrier: CarrierSim) -> Relay:
    metrics = Metrics()
    ctx = RelayContext(config, metrics, PassThrough(), Sessions(), ("127.0.0.1", carrier.port))
    server = await start_listener(ctx, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    return Relay(ctx, server, host, port, metrics)


async def stop_relay(relay: Relay) -> None:
    relay.server.close()
    for session in relay.ctx.sessions.all():
        session.sender.close("test over")
    await relay.server.wait_closed()


@pytest.fixture
async def relay(carrier: CarrierSim) -> AsyncIterator[Relay]:
    r = await start_relay(relay_config(carrier.port), carrier)
    yield r
    await stop_relay(r)


def sessions_gauge(metrics: Metrics, side: str, bind_type: str) -> float:
    value = metrics.registry.get_sample_value(
        "optout_sessions", {"side": side, "bind_type": bind_type})
    return value or 0.0


# --- binds ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tx", "rx", "trx"])
async def test_smpplib_binds_through_the_sidecar(relay: Relay, carrier: CarrierSim,
                                                  kind: str) -> None:
    esme = relay.esme()
    resp = await asyncio.to_thread(esme.bind, kind)
    assert resp.status == 0
    await wait_for(lambda: sessions_gauge(relay.metrics, "sender", kind) == 1)
    assert sessions_gauge(relay.metrics, "upstream", kind) == 1
    await asyncio.to_thread(esme.unbind)
    esme.close()
    await wait_for(lambda: sessions_gauge(relay.metrics, "sender", kind) == 0)


async def test_wrong_password_refusal_comes_from_the_carrier(relay: Relay) -> None:
    esme = relay.esme()
    with pytest.raises(smpplib.exceptions.PDUError) as info:
        await asyncio.to_thread(esme.bind, "trx", "acme", "wrong")
    assert info.value.args[1] == CommandStatus.ESME_RINVPASWD
    esme.close()
    assert relay.ctx.sessions.all() == []


async def test_unknown_system_id_is_refused_without_asking_the_carrier(
    relay: Relay, carrier: CarrierSim
) -> None:
    peer = await relay.raw()
    resp = await peer.bind(system_id="mallory", password="x")
    assert resp.command_status == CommandStatus.ESME_RINVSYSID
    assert carrier.bind_attempts == 0
    peer.close()


async def test_submit_before_bind_gets_invalid_bind_status(relay: Relay) -> None:
    peer = await relay.raw()
    await peer.send(codec.make_pdu(Command.SUBMIT_SM, destination_addr=b"14155550100"))
    resp = await peer.read()
    assert resp.command_id == Command.SUBMIT_SM_RESP
    assert resp.command_status == CommandStatus.ESME_RINVBNDSTS
    peer.close()


async def test_bind_while_bound_gets_already_bound(relay: Relay) -> None:
    peer = await relay.raw()
    assert (await peer.bind()).command_status == 0
    again = await peer.bind()
    assert again.command_status == CommandStatus.ESME_RALYBND
    peer.close()


async def test_unknown_command_gets_generic_nack(relay: Relay) -> None:
    peer = await relay.raw()
    await peer.bind()
    await peer.send_bytes(struct.pack(">IIII", 16, 0x00000077, 0, 42))
    nack = await peer.read()
    assert nack.command_id == Command.GENERIC_NACK
    assert nack.command_status == CommandStatus.ESME_RINVCMDID
    assert nack.sequence_number == 42
    peer.close()


# --- relaying ---------------------------------------------------------------------------


async def test_vendor_tlv_reaches_the_carrier_byte_for_byte(relay: Relay,
                                                             carrier: CarrierSim) -> None:
    peer = await relay.raw()
    await peer.bind()
    submit = codec.make_pdu(
        Command.SUBMIT_SM, source_addr_ton=1, source_addr_npi=1, source_addr=b"18005550100",
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=b"14155550100",
        short_message=b"hello", tlvs=[Tlv(0x1400, b"\x01\x02vendor"), Tlv(0x3FFF, b"")],
    )
    sent = codec.encode(submit)
    seq = await peer.send(submit)
    resp = await peer.read_command(Command.SUBMIT_SM_RESP)
    assert resp.sequence_number == seq and resp.command_status == 0
    (received,) = await carrier.wait_for_submits(1)
    raw = carrier.received_raw[0]
    assert raw[16:] == codec.encode(submit)[16:] == sent[16:]
    assert received.get_tlv(0x1400) == b"\x01\x02vendor"
    peer.close()


async def test_sequence_numbers_are_mapped_back(relay: Relay, carrier: CarrierSim) -> None:
    peer = await relay.raw()
    await peer.bind()
    seqs = [0x7FFFFFF0, 5, 5000]
    for seq in seqs:
        await peer.send(codec.make_pdu(Command.SUBMIT_SM, sequence_number=seq,
                                       destination_addr=b"14155550100", short_message=b"x"))
    got = {(await peer.read_command(Command.SUBMIT_SM_RESP)).sequence_number for _ in seqs}
    assert got == set(seqs)
    peer.close()


async def test_receipt_returns_to_the_session_that_submitted(relay: Relay) -> None:
    acme, beta = relay.esme(), relay.esme()
    await asyncio.to_thread(acme.bind, "trx", "acme", "secret")
    await asyncio.to_thread(beta.bind, "trx", "beta", "beta-pw")
    resp = await asyncio.to_thread(acme.submit, "14155550100", b"hi", registered_delivery=1)
    assert resp.status == 0
    receipt = await asyncio.to_thread(acme.wait_deliver)
    assert b"stat:DELIVRD" in receipt.short_message
    assert resp.message_id in receipt.short_message
    # Sentinel: beta's own receipt, for a submit made after acme's receipt was
    # delivered, is the first (and only) deliver_sm beta reads.
    own = await asyncio.to_thread(beta.submit, "14155550101", b"hi", registered_delivery=1)
    assert own.status == 0
    first = await asyncio.to_thread(beta.wait_deliver)
    assert own.message_id in first.short_message
    assert beta.delivered.empty()
    acme.close()
    beta.close()


async def test_injected_mo_reaches_the_senders_receiver(relay: Relay,
                                                         carrier: CarrierSim) -> None:
    rx = relay.esme()
    await asyncio.to_thread(rx.bind, "rx")
    await wait_for(lambda: carrier.sessions >= 1)
    status_task = asyncio.create_task(carrier.inject_mo("14155550123", "18005550100", "hello"))
    mo = await asyncio.to_thread(rx.wait_deliver)
    assert mo.short_message == b"hello"
    assert await status_task == 0  # the sender's deliver_sm_resp reached the carrier
    rx.close()


# --- upkeep and teardown --------------------------------------------------------------


async def test_enquire_link_is_answered_by_the_sidecar(relay: Relay,
                                                       carrier: CarrierSim) -> None:
    peer = await relay.raw()
    await peer.bind()
    seq = await peer.send(codec.make_pdu(Command.ENQUIRE_LINK))
    resp = await peer.read_command(Command.ENQUIRE_LINK_RESP)
    assert resp.sequence_number == seq
    peer.close()


async def test_idle_legs_get_enquire_link(carrier: CarrierSim) -> None:
    relay = await start_relay(relay_config(carrier.port, enquire_link_interval=0.2), carrier)
    try:
        peer = await relay.raw()
        await peer.bind()
        probe = await peer.read(timeout=5)  # we stay silent, so the sidecar asks
        assert probe.command_id == Command.ENQUIRE_LINK
        await peer.send(codec.response_for(probe))
        peer.close()
    finally:
        await stop_relay(relay)


async def test_leg_that_stops_answering_is_closed(carrier: CarrierSim) -> None:
    relay = await start_relay(
        relay_config(carrier.port, enquire_link_interval=0.2, response_timeout=0.3), carrier)
    try:
        peer = await relay.raw()
        await peer.bind()
        # Never answer the sidecar's enquire_link: it must give up on us.
        assert await peer.closed(timeout=5)
        await wait_for(lambda: relay.ctx.sessions.all() == [])
    finally:
        await stop_relay(relay)


async def test_sender_unbind_unbinds_the_carrier_leg(relay: Relay, carrier: CarrierSim) -> None:
    esme = relay.esme()
    await asyncio.to_thread(esme.bind, "trx")
    await wait_for(lambda: carrier.sessions == 1)
    resp = await asyncio.to_thread(esme.unbind)
    assert resp.command == "unbind_resp" and resp.status == 0
    await wait_for(lambda: carrier.sessions == 0)
    assert carrier.unbinds_received == 1
    esme.close()


async def test_carrier_unbind_unbinds_the_sender(relay: Relay, carrier: CarrierSim) -> None:
    peer = await relay.raw()
    await peer.bind()
    await wait_for(lambda: carrier.sessions == 1)
    unbind_task = asyncio.create_task(carrier.unbind_all())
    unbind = await peer.read_command(Command.UNBIND)
    await peer.send(codec.response_for(unbind))
    await unbind_task
    assert await peer.closed()
    await wait_for(lambda: relay.ctx.sessions.all() == [])


async def test_carrier_drop_closes_the_sender_session(relay: Relay, carrier: CarrierSim) -> None:
    peer = await relay.raw()
    await peer.bind()
    await wait_for(lambda: carrier.sessions == 1)
    await carrier.drop_connections()
    assert await peer.closed()
    await wait_for(lambda: relay.ctx.sessions.all() == [])
    assert sessions_gauge(relay.metrics, "sender", "trx") == 0


async def test_sender_drop_closes_the_carrier_leg(relay: Relay, carrier: CarrierSim) -> None:
    esme = relay.esme()
    await asyncio.to_thread(esme.bind, "trx")
    await wait_for(lambda: carrier.sessions == 1)
    esme.client._socket.shutdown(socket.SHUT_RDWR)
    esme.close()
    await wait_for(lambda: carrier.sessions == 0)
    await wait_for(lambda: relay.ctx.sessions.all() == [])


async def test_outstanding_submit_is_not_left_hanging_when_carrier_drops(
    relay: Relay, carrier: CarrierSim
) -> None:
    carrier.config.answer_submits = False  # the carrier takes submits and never answers
    peer = await relay.raw()
    await peer.bind()
    await peer.send(codec.make_pdu(Command.SUBMIT_SM, destination_addr=b"14155550100"))
    await carrier.wait_for_submits(1)
    await carrier.drop_connections()
    assert await peer.closed()  # answered or closed: here closed, like a carrier drop
    await wait_for(lambda: relay.ctx.sessions.all() == [])


# --- hostile input -------------------------------------------------------------------------


async def test_garbage_and_oversized_length_do_not_disturb_other_sessions(
    relay: Relay, carrier: CarrierSim
) -> None:
    good = relay.esme()
    await asyncio.to_thread(good.bind, "trx")

    garbage = await relay.raw()
    await garbage.send_bytes(b"\x00\x00\x00\x05hello world, not smpp")
    nack = await garbage.read()
    assert nack.command_id == Command.GENERIC_NACK
    assert nack.command_status == CommandStatus.ESME_RINVCMDLEN
    assert await garbage.closed()

    huge = await relay.raw()
    await huge.bind()
    await huge.send_bytes(struct.pack(">IIII", 0xFFFFFFFF, Command.SUBMIT_SM, 0, 9))
    nack = await huge.read()
    assert nack.command_id == Command.GENERIC_NACK
    assert await huge.closed()

    resp = await asyncio.to_thread(good.submit, "14155550100", b"still fine")
    assert resp.status == 0
    good.close()


# --- flow control and TLS ---------------------------------------------------------------------


async def test_full_window_pauses_and_timeouts_answer_the_sender(carrier: CarrierSim) -> None:
    carrier.config.answer_submits = False  # a carrier that has stopped answering
    relay = await start_relay(relay_config(carrier.port, window=4, response_timeout=0.3),
                              carrier)
    try:
        peer = await relay.raw()
        await peer.bind()
        for _ in range(10):
            await peer.send(codec.make_pdu(Command.SUBMIT_SM, destination_addr=b"14155550100"))
        statuses = [(await peer.read_command(Command.SUBMIT_SM_RESP, timeout=10)).command_status
                    for _ in range(10)]
        # Every submit is answered (temporary error: the outcome is unknown)...
        assert statuses == [CommandStatus.ESME_RSYSERR] * 10
        # ...in windows of 4: reading paused instead of queueing the rest.
        registry = relay.metrics.registry
        assert (registry.get_sample_value("optout_window_full_total", {"side": "sender"}) or 0) >= 2
        assert registry.get_sample_value(
            "optout_response_timeouts_total", {"side": "upstream"}) == 10
        (session,) = relay.ctx.sessions.all()
        assert session.upstream is not None and session.upstream.outstanding == 0
        peer.close()
    finally:
        await stop_relay(relay)


async def test_tls_on_the_listener_and_the_upstream_leg(tmp_path: Any) -> None:
    import ssl

    from gateway.server import listener_tls, upstream_tls

    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sim = CarrierSim(SimConfig(port=0, credentials=dict(CREDENTIALS), tls=server_ctx))
    await sim.start()
    config = parse_config({
        "smpp": {"listen": "127.0.0.1:0", "tls_cert": cert, "tls_key": key},
        "upstream": {"address": f"127.0.0.1:{sim.port}", "tls": True, "tls_ca": cert},
        "accounts": [{"system_id": "acme", "app_id": "1"}],
    })
    metrics = Metrics()
    ctx = RelayContext(config, metrics, PassThrough(), Sessions(), ("127.0.0.1", sim.port),
                       upstream_tls(config))
    server = await start_listener(ctx, "127.0.0.1", 0, listener_tls(config))
    port = server.sockets[0].getsockname()[1]
    try:
        client_ctx = ssl.create_default_context(cafile=cert)
        client_ctx.check_hostname = False  # smpplib wraps without server_hostname
        esme = Esme("127.0.0.1", port)
        esme.client._ssl_context = client_ctx
        await asyncio.to_thread(esme.bind, "trx")
        resp = await asyncio.to_thread(esme.submit, "14155550100", b"over tls twice")
        assert resp.status == 0
        (received,) = await sim.wait_for_submits(1)
        assert received.get_bytes("short_message") == b"over tls twice"
        esme.close()
    finally:
        server.close()
        for session in ctx.sessions.all():
            session.sender.close("test over")
        await sim.stop()


async def test_a_sidecar_stops_promptly_when_its_tls_carrier_went_away_first(
    tmp_path: Any,
) -> None:
    """Given a sidecar whose carrier leg is TLS, and the carrier gone just as
    the reply sender checks that its port answers, when the sidecar stops,
    then it stops at once. (The TLS set-up swallowed the reply sender's
    cancellation on Python 3.11, and stop() then waited for ever.)"""
    import ssl

    from gateway.server import Sidecar

    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sim = CarrierSim(SimConfig(port=0, credentials=dict(CREDENTIALS), tls=server_ctx))
    await sim.start()
    sidecar = Sidecar(parse_config({
        "smpp": {"listen": "127.0.0.1:0"},
        "http": {"listen": "127.0.0.1:0"},
        "upstream": {"address": f"127.0.0.1:{sim.port}", "tls": True, "tls_ca": cert},
        "store": {"url": f"sqlite:///{tmp_path}/s.db"},
        "accounts": [{"system_id": "acme", "app_id": "1"}],
    }), metrics=Metrics())
    await sidecar.start()
    await sim.stop()

    await asyncio.wait_for(sidecar.stop(drain_timeout=10.0), timeout=3.0)


async def test_nothing_is_left_behind_after_many_sessions(relay: Relay,
                                                          carrier: CarrierSim) -> None:
    import os

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def one_session(i: int) -> None:
        peer = await relay.raw()
        await peer.bind()
        await peer.send(codec.make_pdu(Command.SUBMIT_SM, destination_addr=b"14155550100"))
        if i % 3 == 0:
            peer.close()  # drop with a request in flight
        elif i % 3 == 1:
            await peer.read_command(Command.SUBMIT_SM_RESP)
            await peer.send(codec.make_pdu(Command.UNBIND))
            await peer.read_command(Command.UNBIND_RESP)
            peer.close()
        else:
            await peer.read_command(Command.SUBMIT_SM_RESP)
            await carrier.drop_connections()
            assert await peer.closed()

    await one_session(1)  # warm up lazily created objects
    await wait_for(lambda: relay.ctx.sessions.all() == [] and carrier.sessions == 0)
    fds, tasks = open_fds(), len(asyncio.all_tasks())
    for i in range(30):
        await one_session(i)
    await wait_for(lambda: relay.ctx.sessions.all() == [] and carrier.sessions == 0)
    await wait_for(lambda: open_fds() <= fds and len(asyncio.all_tasks()) <= tasks)
    assert sessions_gauge(relay.metrics, "sender", "trx") == 0


async def test_account_credentials_are_mapped_toward_the_carrier() -> None:
    sim = CarrierSim(SimConfig(port=0, credentials={"acme-up": "carrier"}))
    await sim.start()
    config = parse_config({
        "smpp": {"listen": "127.0.0.1:0"},
        "upstream": {"address": f"127.0.0.1:{sim.port}"},
        "accounts": [{"system_id": "acme", "app_id": "1", "upstream_system_id": "acme-up",
                      "upstream_password": "carrier", "password": "local-pw"}],
    })
    relay = await start_relay(config, sim)
    try:
        peer = await relay.raw()
        # The sender keeps its own credentials; the carrier sees the mapped ones.
        assert (await peer.bind(system_id="acme", password="local-pw")).command_status == 0
        await wait_for(lambda: sim.sessions == 1)
        assert [s["system_id"] for s in sim.bound_sessions()] == ["acme-up"]
        peer.close()
    finally:
        await stop_relay(relay)
        await sim.stop()


async def test_a_refused_bind_closes_the_connection_and_a_new_one_may_retry(
    relay: Relay,
) -> None:
    # Reverses c8a5538: one connection per attempt makes guessing cost a TCP
    # handshake each, and the per-(IP, system_id) lockout counts them.
    peer = await relay.raw()
    refused = await peer.bind(system_id="acme", password="wrong")
    assert refused.command_status == CommandStatus.ESME_RINVPASWD
    assert await peer.closed()
    retry = await relay.raw()
    accepted = await retry.bind(system_id="acme", password="secret")
    assert accepted.command_status == 0
    await wait_for(lambda: len(relay.ctx.sessions.all()) == 1)
    retry.close()


async def test_connections_past_the_limit_are_closed_at_once(carrier: CarrierSim) -> None:
    relay = await start_relay(relay_config(carrier.port, max_connections=2), carrier)
    try:
        first, second = await relay.raw(), await relay.raw()
        third = await relay.raw()
        assert await third.closed()  # over the limit: closed on arrival
        assert (await first.bind()).command_status == 0  # the others work
        second.close()
        await wait_for(lambda: relay.ctx.connections == 1)
        fourth = await relay.raw()  # room again
        assert (await fourth.bind(system_id="beta", password="beta-pw")).command_status == 0
        first.close()
        fourth.close()
    finally:
        await stop_relay(relay)


@pytest.mark.parametrize("verify", [False, True])
async def test_upstream_tls_without_verification_is_a_warning_at_start(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, verify: bool
) -> None:
    """Turning certificate checks off toward the carrier is allowed (test SMSCs
    have self-signed certificates) but never silent. The warning is about the
    configuration, so it comes at start, before any carrier answers (the
    carrier's port here is closed)."""
    import logging

    from gateway.server import Sidecar

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    config = parse_config({
        "smpp": {"listen": "127.0.0.1:0"},
        "http": {"listen": "127.0.0.1:0"},
        "upstream": {"address": f"127.0.0.1:{closed_port}", "tls": True,
                     "tls_verify": verify},
        "store": {"url": f"sqlite:///{tmp_path}/s.db"},
    })
    caplog.set_level(logging.INFO, logger="optout.server")
    sidecar = Sidecar(config, metrics=Metrics())
    try:
        await sidecar.start()
    finally:
        await sidecar.stop()
    warnings = [r for r in caplog.records if r.getMessage() == "upstream_tls_unverified"]
    if verify:
        assert warnings == []
    else:
        (warning,) = warnings
        assert warning.levelno == logging.WARNING
        assert warning.fields["upstream"] == f"127.0.0.1:{closed_port}"  # type: ignore[attr-defined]
