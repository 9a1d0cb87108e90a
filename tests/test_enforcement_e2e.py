"""The whole sidecar end to end: smpplib as the sender, the bundled simulator
as the carrier, a real SQLite file, the HTTP API on a real port.

Each test is a story an operator would tell: a phone texts STOP, and the
sender's next marketing message to it is refused, the phone gets one
confirmation, and Prometheus shows the block.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.carrier_sim import CarrierSim, SimConfig
from gateway.config import Config, parse_config
from gateway.server import Sidecar
from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command, CommandStatus
from gateway.smpp.pdu import SmeAddress, Tlv
from metrics import Metrics
from rules.model import SmsType
from tests.esme import Esme
from tests.raw_smpp import RawPeer
from tests.sentinel import arrivals_before_sentinel
from tests.stores import execute_raw
from tests.waiting import wait_for

INBOUND = "+18005550100"  # the sender's toll-free number
INBOUND_DIGITS = "18005550100"
ALICE = "+14155550123"
ALICE_DIGITS = "14155550123"
BOB_DIGITS = "14155550124"
JAMAICA_DIGITS = "18765550100"
APP = "1400000001"
TOKEN = "admin-token-for-e2e-tests"
REPLY_SYSTEM_ID = "optout"
BLOCKED = "blocked"
ALLOWED = "allowed"


@dataclass
class World:
    sidecar: Sidecar
    carrier: CarrierSim
    http: str
    db_path: Path

    @property
    def metrics(self) -> Metrics:
        return self.sidecar.metrics

    def esme(self) -> Esme:
        assert self.sidecar.addresses is not None
        host, port = self.sidecar.addresses.smpp
        return Esme(host, port)

    async def raw(self) -> RawPeer:
        assert self.sidecar.addresses is not None
        return await RawPeer.connect(*self.sidecar.addresses.smpp)

    def submits(self, count: str) -> float:
        return self.metrics.registry.get_sample_value(
            "optout_submit_total", {"app_id": APP, "sms_type": "marketing", "decision": count}
        ) or 0.0

    def confirmations_to(self, digits: str) -> list[codec.Pdu]:
        """Auto-replies the carrier got for `digits` (they name the program)."""
        return [p for p in self.carrier.received
                if p.get_bytes("destination_addr") == digits.encode()
                and p.get_bytes("source_addr") == INBOUND_DIGITS.encode()
                and p.message_bytes().startswith(b"Acme Alerts:")]

    async def api(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (aiohttp.ClientSession(headers=headers) as s,
                    s.request(method, self.http + path, **kw) as resp):
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


def world_config(carrier_port: int, db_path: Path, reply_bind: bool, **smpp: Any) -> Config:
    upstream: dict[str, Any] = {"address": f"127.0.0.1:{carrier_port}"}
    if reply_bind:
        upstream.update(reply_system_id=REPLY_SYSTEM_ID, reply_password="optoutpw")
    return parse_config({
        "smpp": {"listen": "127.0.0.1:0", "service_type_map": {"NTF": "notification"}, **smpp},
        "upstream": upstream,
        "http": {"listen": "127.0.0.1:0",
                 "tokens": [{"name": "ops", "token": TOKEN, "role": "admin"}]},
        "store": {"url": f"sqlite:///{db_path}"},
        "program": {"name": "Acme Alerts", "contact": "help@acme.example"},
        "accounts": [{"system_id": "acme", "app_id": APP}],
    })


async def start_world(tmp_path: Path, *, reply_bind: bool = True, **smpp: Any) -> World:
    """A carrier, and a sidecar in front of it. With `reply_bind` the sidecar
    holds its own transceiver session, so the carrier can deliver MOs (and the
    sidecar send confirmations) with no sender bound."""
    carrier = CarrierSim(SimConfig(port=0))
    await carrier.start()
    db_path = tmp_path / "optout.db"
    sidecar = Sidecar(world_config(carrier.port, db_path, reply_bind, **smpp), metrics=Metrics())
    addrs = await sidecar.start()
    assert sidecar.service is not None
    await sidecar.service.create_address(INBOUND, "Acme alerts (toll-free)")
    if reply_bind:
        await carrier.wait_for_sessions(1)
    return World(sidecar, carrier, f"http://{addrs.http[0]}:{addrs.http[1]}", db_path)


async def stop_world(world: World) -> None:
    await world.sidecar.stop()
    await world.carrier.stop()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await start_world(tmp_path)
    yield w
    await stop_world(w)


async def bound_trx(world: World) -> Esme:
    esme = world.esme()
    before = world.carrier.sessions
    await asyncio.to_thread(esme.bind, "trx", "acme", "secret")
    await world.carrier.wait_for_sessions(before + 1)
    return esme


async def mo(world: World, text: str | bytes, sender: str = ALICE_DIGITS,
             system_id: str = REPLY_SYSTEM_ID, **kw: Any) -> int:
    """The carrier delivers an MO on a session of `system_id` (by default the
    sidecar's own); returns the deliver_sm_resp status the carrier got."""
    return await world.carrier.inject_mo(sender, INBOUND_DIGITS, text, system_id=system_id,
                                         **kw)


async def submit(esme: Esme, dest: str, **kw: Any) -> Any:
    return await asyncio.to_thread(esme.submit, dest, b"Big sale today", **kw)


async def submit_text(esme: Esme, dest: str, text: bytes) -> None:
    """An allowed submit (a sentinel); its response must be OK."""
    assert (await asyncio.to_thread(esme.submit, dest, text)).status == 0


async def raw_submit(peer: RawPeer, dest: str, text: bytes) -> None:
    """An allowed submit_sm on a raw session (a sentinel); its response must be OK."""
    seq = await peer.send(codec.make_pdu(
        Command.SUBMIT_SM, source_addr_ton=1, source_addr_npi=1,
        source_addr=INBOUND_DIGITS.encode(), dest_addr_ton=1, dest_addr_npi=1,
        destination_addr=dest.encode(), short_message=text))
    resp = await peer.read_command(Command.SUBMIT_SM_RESP)
    assert (resp.sequence_number, resp.command_status) == (seq, 0)


# --- the core story --------------------------------------------------------------------


async def test_stop_blocks_the_next_marketing_submit_and_confirms_once(world: World) -> None:
    esme = await bound_trx(world)
    assert (await submit(esme, ALICE_DIGITS)).status == 0  # subscribed: goes through
    before_carrier = world.carrier.submit_count

    # smpplib (the sender's receiver) gets the MO too; the carrier gets OK only
    # after the opt-out is committed.
    status = asyncio.create_task(mo(world, "STOP", system_id="acme"))
    forwarded = await asyncio.to_thread(esme.wait_deliver)
    assert forwarded.short_message == b"STOP"
    assert await status == 0

    blocked_before = world.submits(BLOCKED)
    mark = len(world.carrier.received)
    resp = await submit(esme, ALICE_DIGITS)
    assert resp.status == 0x45  # ESME_RSUBMITFAIL: permanent, never retried
    assert world.submits(BLOCKED) == blocked_before + 1
    # The blocked submit never reached the carrier (a later allowed one did).
    arrived = await arrivals_before_sentinel(
        world.carrier, mark, lambda text: submit_text(esme, BOB_DIGITS, text))
    assert not [p for p in arrived if p.get_bytes("destination_addr") == ALICE_DIGITS.encode()
                and p.message_bytes() == b"Big sale today"]

    await wait_for(lambda: len(world.confirmations_to(ALICE_DIGITS)) == 1)
    (confirmation,) = world.confirmations_to(ALICE_DIGITS)
    assert b"Acme Alerts" in confirmation.message_bytes()
    assert b"START" in confirmation.message_bytes()
    # Only the confirmation and the sentinel reached the carrier after the STOP.
    assert world.carrier.submit_count == before_carrier + 2

    # A repeated STOP is recorded but not confirmed again.
    assert await mo(world, "stop") == 0
    status_code, body = await world.api("GET", "/api/v1/records",
                                        params={"phone_number": ALICE})
    assert status_code == 200 and len(body["items"]) == 2
    assert len(world.confirmations_to(ALICE_DIGITS)) == 1
    esme.close()


async def test_rule_change_lets_notifications_through_without_restart(world: World) -> None:
    esme = await bound_trx(world)
    assert await mo(world, "STOP") == 0
    assert (await submit(esme, ALICE_DIGITS, service_type="NTF")).status == 0x45

    code, _ = await world.api("POST", f"/api/v1/inbound-addresses/{INBOUND}/blocking-rules",
                              json={"app_id": APP, "sms_types": ["marketing"]})
    assert code == 201
    assert (await submit(esme, ALICE_DIGITS, service_type="NTF")).status == 0
    assert (await submit(esme, ALICE_DIGITS)).status == 0x45  # marketing still blocked
    esme.close()


async def test_start_allows_again(world: World) -> None:
    esme = await bound_trx(world)
    assert await mo(world, "STOP") == 0
    assert (await submit(esme, ALICE_DIGITS)).status == 0x45
    assert await mo(world, "START") == 0
    assert (await submit(esme, ALICE_DIGITS)).status == 0
    esme.close()


@pytest.mark.parametrize(
    ("payload", "data_coding"),
    [
        ("Stop.", 0),
        ("ＳＴＯＰ".encode("utf-16-be"), 8),
        ("Stop texting me", 0),
        ("arret", 3),
    ],
)
async def test_variants_of_stop_opt_out(world: World, payload: str | bytes,
                                        data_coding: int) -> None:
    assert await mo(world, payload, data_coding=data_coding) == 0
    assert world.sidecar.service is not None
    assert not world.sidecar.service.decide(APP, SmsType.MARKETING, ALICE).allowed


async def test_stop_in_a_udh_concatenated_part_is_read(world: World) -> None:
    udh = b"\x05\x00\x03\x2a\x01\x01"
    assert await mo(world, udh + b"STOP", esm_class=0x40) == 0
    assert world.sidecar.service is not None
    assert not world.sidecar.service.decide(APP, SmsType.MARKETING, ALICE).allowed


async def test_a_receipt_mentioning_stop_changes_nothing(world: World) -> None:
    text = b"id:abc sub:001 dlvrd:001 submit date:2601011200 done date:2601011200 " \
           b"stat:DELIVRD err:000 text:STOP"
    for esm_class in (0x04, 0x44):
        assert await mo(world, text, esm_class=esm_class) == 0
    assert world.sidecar.service is not None
    assert world.sidecar.service.decide(APP, SmsType.MARKETING, ALICE).allowed
    assert world.sidecar.service.unsubscribed_count() == 0


@pytest.mark.parametrize(
    ("command", "esm_class", "text"),
    [
        (Command.DELIVER_SM, 0x04, b"STOP"),  # SMSC delivery receipt, text exactly STOP
        (Command.DELIVER_SM, 0x04, b"STOP id:abc sub:001 dlvrd:001 stat:DELIVRD err:000"),
        (Command.DELIVER_SM, 0x08, b"Stop"),  # SME delivery acknowledgement
        (Command.DATA_SM, 0x04, b"STOP"),  # receipts also come as data_sm (NOTES 7)
    ],
    ids=["deliver_sm-STOP", "deliver_sm-STOP-id", "deliver_sm-sme-ack", "data_sm-STOP"],
)
async def test_a_receipt_whose_text_is_stop_stays_a_receipt(
    world: World, command: int, esm_class: int, text: bytes
) -> None:
    # given a sender bound as a transceiver (its receipts come back through it)
    peer = await world.raw()
    await peer.bind(system_id="acme")
    fields: dict[str, Any] = {"short_message": text}
    if command == Command.DATA_SM:
        fields = {"tlvs": [Tlv(0x0424, text)]}
    receipt = codec.make_pdu(
        command, source_addr_ton=1, source_addr_npi=1, source_addr=ALICE_DIGITS.encode(),
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=INBOUND_DIGITS.encode(),
        esm_class=esm_class, **fields)
    receipt.tlvs.extend([Tlv(0x001E, b"abc\x00"), Tlv(0x0427, b"\x02"), Tlv(0x1402, b"vnd")])

    # when the carrier delivers a receipt whose text reads STOP
    status = asyncio.create_task(world.carrier.inject_pdu(receipt, system_id="acme"))
    relayed = await peer.read_command(command)
    await peer.send(codec.response_for(relayed))

    # then the sender gets it untouched, the carrier its OK, and nobody opted out
    assert codec.encode(relayed)[16:] == codec.encode(receipt)[16:]
    assert await status == 0
    assert world.sidecar.service is not None
    assert world.sidecar.service.unsubscribed_count() == 0
    assert world.sidecar.service.decide(APP, SmsType.MARKETING, ALICE).allowed
    peer.close()


async def test_a_jamaican_stop_changes_nothing(world: World) -> None:
    esme = await bound_trx(world)
    assert await mo(world, "STOP", sender=JAMAICA_DIGITS) == 0
    assert world.sidecar.service is not None
    assert world.sidecar.service.unsubscribed_count() == 0
    assert (await submit(esme, JAMAICA_DIGITS)).status == 0
    out_of_scope = world.metrics.registry.get_sample_value(
        "optout_submit_out_of_scope_total", {"app_id": APP})
    assert out_of_scope == 1
    esme.close()


async def test_store_failure_makes_the_carrier_redeliver(world: World) -> None:
    url = f"sqlite:///{world.db_path}"
    await execute_raw(url, "CREATE TRIGGER broken BEFORE INSERT ON record "
                           "BEGIN SELECT RAISE(ABORT, 'disk failure'); END")
    assert await mo(world, "STOP") == CommandStatus.ESME_RX_T_APPN
    assert world.sidecar.service is not None
    assert world.sidecar.service.unsubscribed_count() == 0
    assert world.metrics.registry.get_sample_value(
        "optout_store_errors_total", {"operation": "handle_mo"}) == 1

    await execute_raw(url, "DROP TRIGGER broken")
    assert await mo(world, "STOP") == 0  # the carrier's redelivery lands
    assert world.sidecar.service.unsubscribed_count() == 1


# --- submit variants ---------------------------------------------------------------------


async def test_a_burst_of_blocked_and_allowed_submits_is_answered_under_their_own_numbers(
        world: World) -> None:
    """Blocked submit_sm refusals share one PDU inside the sidecar; each must
    still go back, once, under the sequence number of the submit it answers,
    in a window sent as one write (more than half the sidecar's window, so
    part of it is written before the rest is read) and mixed with relayed
    ones. Each is counted once, by verdict."""
    assert await mo(world, "STOP") == 0  # Alice unsubscribes
    peer = await world.raw()
    await peer.bind(system_id="acme")
    blocked_before, allowed_before = world.submits(BLOCKED), world.submits("allowed")
    sent: dict[int, int] = {}
    burst = b""
    for i in range(48):
        blocked = i % 3 != 0
        seq = 1000 + i
        burst += codec.encode(codec.make_pdu(
            Command.SUBMIT_SM, sequence_number=seq, source_addr_ton=1, source_addr_npi=1,
            source_addr=INBOUND_DIGITS.encode(), dest_addr_ton=1, dest_addr_npi=1,
            destination_addr=(ALICE_DIGITS if blocked else BOB_DIGITS).encode(),
            short_message=b"Big sale"))
        sent[seq] = 0x45 if blocked else 0
    await peer.send_bytes(burst)
    answers = [await peer.read_command(Command.SUBMIT_SM_RESP) for _ in sent]
    assert sorted((a.sequence_number, a.command_status) for a in answers) \
        == sorted(sent.items())
    await wait_for(lambda: world.submits(BLOCKED) == blocked_before + 32)
    assert world.submits("allowed") == allowed_before + 16
    peer.close()


async def test_submit_multi_forwards_only_allowed_destinations(world: World) -> None:
    assert await mo(world, "STOP") == 0
    peer = await world.raw()
    await peer.bind(system_id="acme")
    multi = codec.make_pdu(
        Command.SUBMIT_MULTI, source_addr_ton=1, source_addr_npi=1,
        source_addr=INBOUND_DIGITS.encode(),
        dest_address=[SmeAddress(1, 1, ALICE_DIGITS.encode()),
                      SmeAddress(1, 1, BOB_DIGITS.encode())],
        short_message=b"Big sale",
    )
    await peer.send(multi)
    resp = await peer.read_command(Command.SUBMIT_MULTI_RESP)
    assert resp.command_status == 0
    assert [u.addr for u in resp.unsuccess_smes()] == [ALICE_DIGITS.encode()]
    assert resp.unsuccess_smes()[0].error_status_code == 0x45
    (forwarded,) = [r for r in world.carrier.received if r.command_id == Command.SUBMIT_MULTI]
    assert [d.addr for d in forwarded.destinations()] == [BOB_DIGITS.encode()]

    only_alice = codec.make_pdu(
        Command.SUBMIT_MULTI, dest_address=[SmeAddress(1, 1, ALICE_DIGITS.encode())],
        short_message=b"Big sale")
    await peer.send(only_alice)
    resp = await peer.read_command(Command.SUBMIT_MULTI_RESP)
    assert resp.command_status == 0x45
    peer.close()


async def test_a_partly_blocked_submit_multi_keeps_every_tlv_byte_for_byte(world: World) -> None:
    # given Alice opted out, and a submit_multi to her and Bob carrying known
    # and unknown (vendor) TLVs, one of them empty
    assert await mo(world, "STOP") == 0
    tlvs = [Tlv(0x0204, b"\x00\x07"),  # user_message_reference
            Tlv(0x1400, b"\x01\x02vendor\x00"),
            Tlv(0x3FFF, b""),
            Tlv(0x2150, bytes(range(256)))]
    tlv_bytes = b"".join(t.tag.to_bytes(2, "big") + len(t.value).to_bytes(2, "big") + t.value
                         for t in tlvs)
    multi = codec.make_pdu(
        Command.SUBMIT_MULTI, source_addr_ton=1, source_addr_npi=1,
        source_addr=INBOUND_DIGITS.encode(),
        dest_address=[SmeAddress(1, 1, ALICE_DIGITS.encode()),
                      SmeAddress(1, 1, BOB_DIGITS.encode())],
        short_message=b"Big sale", tlvs=tlvs)
    assert codec.encode(multi).endswith(tlv_bytes)
    peer = await world.raw()
    await peer.bind(system_id="acme")

    # when the sidecar forwards it without Alice
    await peer.send(multi)
    resp = await peer.read_command(Command.SUBMIT_MULTI_RESP)
    assert [u.addr for u in resp.unsuccess_smes()] == [ALICE_DIGITS.encode()]

    # then the carrier gets every TLV, byte for byte and in order
    (raw,) = [r for r in world.carrier.received_raw
              if int.from_bytes(r[4:8], "big") == Command.SUBMIT_MULTI]
    assert raw.endswith(tlv_bytes)
    forwarded = codec.decode(raw)
    assert [d.addr for d in forwarded.destinations()] == [BOB_DIGITS.encode()]
    assert forwarded.tlvs == tlvs
    peer.close()


async def test_data_sm_is_checked_like_submit_sm(world: World) -> None:
    assert await mo(world, "STOP") == 0
    peer = await world.raw()
    await peer.bind(system_id="acme")
    mark = len(world.carrier.received)
    await peer.send(codec.make_pdu(
        Command.DATA_SM, dest_addr_ton=1, dest_addr_npi=1,
        destination_addr=ALICE_DIGITS.encode(), tlvs=[Tlv(0x0424, b"Big sale")]))
    resp = await peer.read_command(Command.DATA_SM_RESP)
    assert resp.command_status == 0x45
    arrived = await arrivals_before_sentinel(
        world.carrier, mark, lambda text: raw_submit(peer, BOB_DIGITS, text))
    assert not [r for r in arrived if r.command_id == Command.DATA_SM]
    peer.close()


async def test_all_segments_of_a_concatenated_message_share_one_decision(
    world: World,
) -> None:
    esme = await bound_trx(world)

    def part(n: int) -> bytes:
        return b"\x05\x00\x03\x7f\x02" + bytes([n]) + b"part"

    assert (await submit(esme, ALICE_DIGITS, short_message=part(1), esm_class=0x40)).status == 0
    assert await mo(world, "STOP") == 0  # the user opts out between the two parts
    resp = await submit(esme, ALICE_DIGITS, short_message=part(2), esm_class=0x40)
    assert resp.status == 0  # the second part follows the first part's decision
    assert (await submit(esme, ALICE_DIGITS)).status == 0x45  # a new message is blocked
    esme.close()


async def test_receipt_mode_accepts_and_sends_rejectd(tmp_path: Path) -> None:
    world = await start_world(tmp_path, blocked_mode="receipt")
    try:
        esme = await bound_trx(world)
        assert await mo(world, "STOP") == 0
        await wait_for(lambda: len(world.confirmations_to(ALICE_DIGITS)) == 1)
        mark = len(world.carrier.received)
        resp = await submit(esme, ALICE_DIGITS, registered_delivery=1)
        assert resp.status == 0 and resp.message_id
        receipt = await asyncio.to_thread(esme.wait_deliver)
        assert b"stat:REJECTD" in receipt.short_message
        assert resp.message_id in receipt.short_message
        # the blocked submit stayed here: an allowed one sent after it arrived alone
        arrived = await arrivals_before_sentinel(
            world.carrier, mark, lambda text: submit_text(esme, BOB_DIGITS, text))
        assert arrived == []
        esme.close()
    finally:
        await stop_world(world)


# --- one state for the API and the wire -----------------------------------------------------


async def test_api_opt_out_blocks_the_next_smpp_submit(world: World) -> None:
    esme = await bound_trx(world)
    code, _ = await world.api("POST", "/api/v1/unsubscribed", json={
        "phone_number": ALICE, "inbound_address": INBOUND, "reason": "asked by phone"})
    assert code == 201
    assert (await submit(esme, ALICE_DIGITS)).status == 0x45
    code, check = await world.api("POST", "/api/v1/check", json={
        "app_id": APP, "sms_type": "marketing", "phone_number": ALICE})
    assert code == 200 and check["allowed"] is False
    esme.close()


async def test_smpp_stop_shows_in_the_api_at_once(world: World) -> None:
    assert await mo(world, "Stop.") == 0
    code, body = await world.api("GET", "/api/v1/unsubscribed",
                                 params={"inbound_address": INBOUND})
    assert code == 200
    assert [i["phone_number"] for i in body["items"]] == [ALICE]
    assert body["items"][0]["source"] == "keyword"
    code, records = await world.api("GET", "/api/v1/records", params={"phone_number": ALICE})
    assert records["items"][0]["keyword"] == "STOP"


async def test_http_mo_confirms_through_the_carrier(world: World) -> None:
    code, body = await world.api("POST", "/api/v1/mo",
                                 json={"from": ALICE, "to": INBOUND, "text": "STOP"})
    assert code == 200 and body["action"] == "opt_out"
    await wait_for(lambda: len(world.confirmations_to(ALICE_DIGITS)) == 1)
    (reply,) = [r for r in world.carrier.records
                if r.pdu.message_bytes().startswith(b"Acme Alerts:")]
    assert reply.system_id == REPLY_SYSTEM_ID  # through the sidecar's own bind


async def test_confirmation_waits_for_a_sender_session_without_a_reply_bind(
    tmp_path: Path,
) -> None:
    world = await start_world(tmp_path, reply_bind=False)
    try:
        # No session to the carrier at all: the confirmation waits in the store...
        code, body = await world.api("POST", "/api/v1/mo",
                                     json={"from": ALICE, "to": INBOUND, "text": "STOP"})
        assert code == 200 and body["action"] == "opt_out"
        assert world.sidecar.service is not None
        assert world.carrier.sessions == 0
        assert len(await world.sidecar.service.pending_replies()) == 1
        # ...and goes out through the first transmitter-capable sender session.
        peer = await world.raw()
        await peer.bind(system_id="acme")
        await wait_for(lambda: len(world.confirmations_to(ALICE_DIGITS)) == 1)
        (reply,) = [r for r in world.carrier.records
                    if r.pdu.message_bytes().startswith(b"Acme Alerts:")]
        assert reply.system_id == "acme"
        # The sender never sees the reply's response: the next PDU it gets is the
        # response to its own submit, sent after the reply on the same carrier
        # session (so the reply's response, had it leaked, would come first).
        seq = await peer.send(codec.make_pdu(
            Command.SUBMIT_SM, destination_addr=BOB_DIGITS.encode(), short_message=b"hi"))
        nxt = await peer.read()
        while nxt.command_id == Command.ENQUIRE_LINK:
            await peer.send(codec.response_for(nxt))
            nxt = await peer.read()
        assert (nxt.command_id, nxt.sequence_number) == (Command.SUBMIT_SM_RESP, seq)
        peer.close()
    finally:
        await stop_world(world)


async def test_metrics_endpoint_parses_and_counts(world: World) -> None:
    esme = await bound_trx(world)
    assert await mo(world, "STOP") == 0
    await submit(esme, ALICE_DIGITS)
    await submit(esme, BOB_DIGITS)
    async with aiohttp.ClientSession() as s, s.get(world.http + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }
    key = (("app_id", APP), ("decision", "blocked"), ("sms_type", "marketing"))
    assert samples[("optout_submit_total", key)] == 1
    key = (("app_id", APP), ("decision", "allowed"), ("sms_type", "marketing"))
    assert samples[("optout_submit_total", key)] == 1
    assert samples[("optout_mo_total", (("action", "opt_out"), ("inbound_address", INBOUND)))] == 1
    assert samples[("optout_unsubscribed_numbers", ())] == 1
    assert samples[("optout_sessions", (("bind_type", "trx"), ("side", "sender")))] == 1
    assert ("optout_decision_seconds_count", ()) in samples
    assert samples[("optout_upstream_up", ())] == 1
    assert ALICE_DIGITS not in text and ALICE not in text
    esme.close()


async def test_readyz_follows_the_carrier(world: World) -> None:
    esme = await bound_trx(world)
    async with aiohttp.ClientSession() as s:
        async with s.get(world.http + "/readyz") as resp:
            assert resp.status == 200
        await world.carrier.drop_connections()
        await world.carrier.stop()
        await wait_for(lambda: not world.sidecar.sessions.all())

        async def readyz() -> int:
            async with s.get(world.http + "/readyz") as resp:
                return resp.status

        async with asyncio.timeout(10):  # the next reachability probe notices
            while await readyz() != 503:
                await asyncio.sleep(0.1)
    esme.close()


async def test_forward_mo_off_keeps_mos_from_the_sender(tmp_path: Path) -> None:
    world = await start_world(tmp_path, forward_mo=False)
    try:
        esme = await bound_trx(world)
        # Through the sender's own session: handled, acknowledged by the sidecar.
        assert await mo(world, "STOP", system_id="acme") == 0
        assert world.sidecar.service is not None
        assert not world.sidecar.service.decide(APP, SmsType.MARKETING, ALICE).allowed
        # The submit is the sentinel: the sidecar had answered the MO before it
        # was sent, so a forwarded deliver_sm would have reached the socket first,
        # and smpplib queues every deliver_sm it reads on the way to the response.
        resp = await submit(esme, ALICE_DIGITS)
        assert resp.status == 0x45
        assert esme.delivered.empty()
        esme.close()
    finally:
        await stop_world(world)
