"""Hardening of the SMPP data path against hostile or careless input
(issue 8, holes 3 and 4), end to end: smpplib or a raw peer as the sender,
the bundled simulator as the carrier, a real SQLite file.

* Any destination spelling a carrier could route to an opted-out subscriber
  is decided as that subscriber; anything that is not a clean number after
  normalisation is refused with ESME_RINVDSTADR and never forwarded.
* A failure while handling an MO answers the carrier 0x64 (it redelivers)
  and leaves every session bound and working.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command, CommandStatus
from gateway.smpp.pdu import SmeAddress, Tlv
from rules.model import MoOutcome
from tests.raw_smpp import RawPeer
from tests.sentinel import arrivals_before_sentinel
from tests.test_enforcement_e2e import (
    ALICE,
    ALICE_DIGITS,
    BOB_DIGITS,
    INBOUND,
    INBOUND_DIGITS,
    World,
    bound_trx,
    mo,
    raw_submit,
    start_world,
    stop_world,
    submit,
)

ESME_RINVDSTADR = 0x0B
BLOCKED = 0x45

#: (destination_addr, dest_addr_ton, dest_addr_npi): spellings of Alice
#: (+1 415 555 0123) that carriers route to her.
ALICE_SPELLINGS: list[tuple[bytes, int, int]] = [
    (b"14155550123", 1, 1),
    (b"+14155550123", 1, 1),
    (b"0014155550123", 1, 1),        # international prefix, most of the world
    (b"01114155550123", 1, 1),       # international prefix, North America
    (b"0014155550123", 0, 0),
    (b"01114155550123", 2, 1),
    (b"4155550123", 2, 1),           # national
    (b"4155550123", 0, 0),
    (b"14155550123", 4, 1),          # TON 4 (subscriber number)
    (b"14155550123", 5, 0),          # TON 5 (alphanumeric) holding digits
    (b"4155550123", 5, 0),
    (b"14155550123", 3, 9),
    (b"14155550123", 6, 18),
    (b"14155550123#", 1, 1),         # keypad decorations
    (b"*14155550123", 1, 1),
    (b"(415) 555-0123", 0, 0),       # separators
    (b"+1-415-555-0123", 1, 1),
    (b"+1 (415) 555.0123", 1, 1),
    (b"1 415 555 0123", 4, 1),
]

#: Destinations that are not a number a carrier could route to a subscriber.
JUNK: list[tuple[bytes, int, int]] = [
    (b"", 1, 1),
    (b"ACME", 5, 0),
    (b"1415555O123", 1, 1),          # a letter O
    (b"#31#14155550123", 1, 1),      # a service code inside
    (b"14155550123;", 1, 1),
    (b"++14155550123", 1, 1),
    (b"5550123", 4, 1),              # no area code
    (b"\xff\xfe14155550123", 1, 1),
]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(tmp_path)
    yield w
    await stop_world(w)


# --- hole 4: a failing MO handler --------------------------------------------------


async def test_an_mo_the_handler_cannot_take_gets_0x64_and_every_session_stays_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sender bound as a transceiver, and an MO handler that fails once
    # (as it did for a stored reply text holding a lone surrogate).
    esme = await bound_trx(world)
    service = world.sidecar.service
    assert service is not None
    real = service.handle_mo
    failures = 0

    async def broken_once(*args: object, **kwargs: object) -> MoOutcome:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise UnicodeEncodeError("utf-8", "bye \ud800", 4, 5, "surrogates not allowed")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "handle_mo", broken_once)
    sessions_before = world.carrier.sessions

    # When the carrier delivers a STOP on the sender's session,
    # then the carrier is told to try again later (temporary error) ...
    status = await mo(world, "STOP", system_id="acme")
    assert status == CommandStatus.ESME_RX_T_APPN
    assert failures == 1

    # ... and nothing was closed: the redelivered STOP reaches the sender's
    # receiver and is committed, and the same bind still submits.
    redelivery = asyncio.create_task(mo(world, "STOP", system_id="acme"))
    forwarded = await asyncio.to_thread(esme.wait_deliver)
    assert forwarded.short_message == b"STOP"
    assert await redelivery == 0
    assert world.carrier.sessions == sessions_before
    assert (await submit(esme, ALICE_DIGITS)).status == 0x45  # now opted out
    assert (await submit(esme, BOB_DIGITS)).status == 0
    esme.close()


# --- hole 3: destination spellings -------------------------------------------------


async def opted_out_alice(world: World) -> RawPeer:
    assert await mo(world, "STOP") == 0  # from Alice, on the sidecar's own bind
    peer = await world.raw()
    bound = await peer.bind(system_id="acme")
    assert bound.command_status == 0
    return peer


def texts_for(world: World, mark: int, command: int) -> list[bytes]:
    return [p.message_bytes() for p in world.carrier.received[mark:] if p.command_id == command]


async def test_every_spelling_of_an_opted_out_number_is_blocked_in_submit_sm(
    world: World,
) -> None:
    # Given Alice texted STOP,
    peer = await opted_out_alice(world)
    mark = len(world.carrier.received)

    # when the sender addresses her in every way a carrier would route,
    for i, (addr, ton, npi) in enumerate(ALICE_SPELLINGS):
        seq = await peer.send(codec.make_pdu(
            Command.SUBMIT_SM, source_addr_ton=1, source_addr_npi=1,
            source_addr=INBOUND_DIGITS.encode(), dest_addr_ton=ton, dest_addr_npi=npi,
            destination_addr=addr, short_message=b"sale %d" % i))
        resp = await peer.read_command(Command.SUBMIT_SM_RESP)

        # then each is refused as blocked (permanent),
        assert (resp.sequence_number, resp.command_status) == (seq, BLOCKED), addr

    # and none of them reached the carrier.
    arrived = await arrivals_before_sentinel(
        world.carrier, mark, lambda text: raw_submit(peer, BOB_DIGITS, text))
    assert not [p for p in arrived if p.message_bytes().startswith(b"sale")]
    peer.close()


async def test_a_destination_that_is_not_a_number_gets_0x0b_and_is_never_forwarded(
    world: World,
) -> None:
    peer = await world.raw()
    await peer.bind(system_id="acme")
    mark = len(world.carrier.received)
    for i, (addr, ton, npi) in enumerate(JUNK):
        for command, body in ((Command.SUBMIT_SM, {"short_message": b"junk %d" % i}),
                              (Command.DATA_SM, {"tlvs": [Tlv(0x0424, b"junk %d" % i)]})):
            seq = await peer.send(codec.make_pdu(
                command, dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr, **body))
            resp = await peer.read_command(command | 0x80000000)
            assert (resp.sequence_number, resp.command_status) == (seq, ESME_RINVDSTADR), addr
    arrived = await arrivals_before_sentinel(
        world.carrier, mark, lambda text: raw_submit(peer, BOB_DIGITS, text))
    assert not [p for p in arrived if p.message_bytes().startswith(b"junk")]
    invalid = world.metrics.registry.get_sample_value(
        "optout_submit_invalid_destination_total", {"app_id": "1400000001"})
    assert invalid == 2 * len(JUNK)
    peer.close()


async def test_submit_multi_refuses_spellings_and_junk_per_destination(world: World) -> None:
    # Given Alice opted out,
    peer = await opted_out_alice(world)
    spelled = [SmeAddress(ton, npi, addr) for addr, ton, npi in ALICE_SPELLINGS]
    junk = [SmeAddress(ton, npi, addr) for addr, ton, npi in JUNK if addr]
    bob = SmeAddress(1, 1, BOB_DIGITS.encode())

    # when one submit_multi goes to her spelt every way, to junk, and to Bob,
    await peer.send(codec.make_pdu(
        Command.SUBMIT_MULTI, source_addr_ton=1, source_addr_npi=1,
        source_addr=INBOUND_DIGITS.encode(), dest_address=[*spelled, *junk, bob],
        short_message=b"multi sale"))
    resp = await peer.read_command(Command.SUBMIT_MULTI_RESP)

    # then only Bob is forwarded; Alice's spellings are listed blocked and
    # the junk listed with ESME_RINVDSTADR.
    assert resp.command_status == 0
    refused = {(u.addr, u.ton): u.error_status_code for u in resp.unsuccess_smes()}
    assert refused == {**{(d.addr, d.ton): BLOCKED for d in spelled},
                       **{(d.addr, d.ton): ESME_RINVDSTADR for d in junk}}
    (forwarded,) = [r for r in world.carrier.received if r.command_id == Command.SUBMIT_MULTI]
    assert [d.addr for d in forwarded.destinations()] == [BOB_DIGITS.encode()]

    # An all-junk submit_multi is refused as a whole with ESME_RINVDSTADR.
    await peer.send(codec.make_pdu(Command.SUBMIT_MULTI, dest_address=junk,
                                   short_message=b"multi junk"))
    resp = await peer.read_command(Command.SUBMIT_MULTI_RESP)
    assert resp.command_status == ESME_RINVDSTADR
    assert len(resp.unsuccess_smes()) == len(junk)
    peer.close()


async def test_data_sm_to_a_spelling_of_an_opted_out_number_is_blocked(world: World) -> None:
    peer = await opted_out_alice(world)
    mark = len(world.carrier.received)
    for addr, ton, npi in ALICE_SPELLINGS:
        await peer.send(codec.make_pdu(
            Command.DATA_SM, dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr,
            tlvs=[Tlv(0x0424, b"data sale")]))
        resp = await peer.read_command(Command.DATA_SM_RESP)
        assert resp.command_status == BLOCKED, addr
    arrived = await arrivals_before_sentinel(
        world.carrier, mark, lambda text: raw_submit(peer, BOB_DIGITS, text))
    assert not [p for p in arrived if p.command_id == Command.DATA_SM]
    peer.close()


@pytest.mark.parametrize("spelling", ["0014155550123", "011 1 415 555 0123", "14155550123#",
                                      "*14155550123", "(415) 555-0123", "+1-415-555-0123"])
async def test_check_and_mo_over_http_read_the_same_spellings(world: World,
                                                               spelling: str) -> None:
    # An MO over HTTP from a spelling of Alice opts Alice out ...
    code, body = await world.api("POST", "/api/v1/mo",
                                 json={"from": spelling, "to": INBOUND, "text": "STOP"})
    assert code == 200 and body["handled"] is True, body
    code, body = await world.api("GET", "/api/v1/unsubscribed", params={"phone_number": ALICE})
    assert [i["phone_number"] for i in body["items"]] == [ALICE]
    # ... and /check decides every spelling as Alice.
    code, body = await world.api("POST", "/api/v1/check", json={
        "app_id": "1400000001", "sms_type": "marketing", "phone_number": spelling})
    assert code == 200 and body["allowed"] is False, body


# --- hole 5: label values come from the configuration, not from clients --------------


async def test_submits_from_unconfigured_accounts_share_one_app_id_label(
    tmp_path: Path,
) -> None:
    # Given a sidecar that lets any system_id bind (the carrier decides),
    world = await start_world(tmp_path / "open", allow_unknown_accounts=True)
    try:
        peer = await world.raw()
        assert (await peer.bind(system_id="guess-1234")).command_status == 0

        # when that stranger submits,
        for dest in (BOB_DIGITS, "442079460958"):
            await peer.send(codec.make_pdu(
                Command.SUBMIT_SM, dest_addr_ton=1, dest_addr_npi=1,
                destination_addr=dest.encode(), short_message=b"hi"))
            assert (await peer.read_command(Command.SUBMIT_SM_RESP)).command_status == 0
        await peer.send(codec.make_pdu(Command.SUBMIT_SM, destination_addr=b"junk"))
        assert (await peer.read_command(Command.SUBMIT_SM_RESP)).command_status == 0x0B
        peer.close()

        # then its counts carry app_id "other", never the system_id it chose.
        r = world.metrics.registry
        assert r.get_sample_value("optout_submit_total", {
            "app_id": "other", "sms_type": "marketing", "decision": "allowed"}) == 2
        assert r.get_sample_value("optout_submit_out_of_scope_total",
                                  {"app_id": "other"}) == 1
        assert r.get_sample_value("optout_submit_invalid_destination_total",
                                  {"app_id": "other"}) == 1
        labels = {s.labels.get("app_id") for m in r.collect() for s in m.samples}
        assert "guess-1234" not in labels
    finally:
        await stop_world(world)
