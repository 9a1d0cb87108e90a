"""The SMPP enforcer on its own: a sender's submits and the carrier's MOs go
straight into `SmppEnforcer`, with a real service on a real SQLite file, and
the test reads what the proxy would put on the wire (the verdict's PDUs),
the metrics and the log events.

The same stories run end to end in `test_enforcement_e2e.py`; these are the
in-process versions, fast enough to run for every mutant of
`gateway/enforcement.py` (bench/mutation.py), and they pin the details an
end-to-end test cannot reach cheaply: every status code, label and field.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, parse_config
from gateway.enforcement import OTHER_APP, ConcatDecisions, MessageIds, SmppEnforcer
from gateway.proxy import Answer, Deliver, Forward, ProxySession, RelayContext, Sessions
from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command, CommandStatus
from gateway.smpp.errors import SmppError
from gateway.smpp.framing import FrameReader, parse_header
from gateway.smpp.pdu import DistributionList, Pdu, SmeAddress, Tlv, UnsuccessSme
from metrics import Metrics
from rules.model import MoOutcome, SmsType, StoreUnavailable
from rules.service import OptOutService, ProgramInfo
from tests.stores import execute_raw

INBOUND = "+18005550100"
INBOUND_DIGITS = b"18005550100"
ALICE = "+14155550123"
ALICE_DIGITS = b"14155550123"
BOB_DIGITS = b"14155550124"
CAROL_DIGITS = b"14155550125"
JAMAICA_DIGITS = b"18765550100"
APP = "1400000001"
SMS_TYPE_TLV = 0x1400
BLOCKED = 0x45
RX_T_APPN = CommandStatus.ESME_RX_T_APPN
INVALID = CommandStatus.ESME_RINVDSTADR


@dataclass
class Rig:
    enforcer: SmppEnforcer
    service: OptOutService
    metrics: Metrics
    ctx: RelayContext
    sessions: list[ProxySession]

    def sender(self, system_id: str = "acme", *, configured: bool = True) -> ProxySession:
        """A sender session as the proxy holds it after a bind (no socket)."""
        session = ProxySession(self.ctx)
        session.identify(system_id, self.ctx.config.account(system_id) if configured else None)
        session.bind_type = "trx"
        self.sessions.append(session)
        return session

    def submit(self, session: ProxySession, pdu: Pdu) -> Forward | Answer:
        raw = codec.encode(pdu)
        return self.enforcer.check_submit(session, parse_header(raw), raw)

    async def deliver(self, pdu: Pdu, system_id: str = "carrier") -> Deliver:
        raw = codec.encode(pdu)
        return await self.enforcer.check_deliver(system_id, parse_header(raw), raw)

    async def stop(self, number: bytes = ALICE_DIGITS) -> None:
        """The subscriber texts STOP; the carrier gets OK."""
        assert await self.deliver(mo(number, b"STOP")) == Deliver(forward=True)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def submits(self, decision: str, app_id: str = APP, sms_type: str = "marketing") -> float:
        return self.sample("optout_submit_total", app_id=app_id, sms_type=sms_type,
                           decision=decision)


def config(db: Path, **smpp: Any) -> Config:
    settings = {"listen": "127.0.0.1:0", "service_type_map": {"NTF": "notification"},
                "sms_type_tlv": SMS_TYPE_TLV, **smpp}
    return parse_config({
        "smpp": {k: v for k, v in settings.items() if v is not None},
        "upstream": {"address": "127.0.0.1:9"},
        "store": {"url": f"sqlite:///{db}"},
        "program": {"name": "Acme Alerts", "contact": "help@acme.example"},
        "accounts": [{"system_id": "acme", "app_id": APP},
                     {"system_id": "alerts", "app_id": "1400000002",
                      "default_sms_type": "notification"}],
    })


async def make_rig(tmp_path: Path, **smpp: Any) -> Rig:
    cfg = config(tmp_path / "optout.db", **smpp)
    service = await OptOutService.open(
        cfg.store.url, program=ProgramInfo("Acme Alerts", "help@acme.example"),
        follow=False, snapshot=False)
    await service.create_address(INBOUND, "Acme alerts (toll-free)")
    metrics = Metrics()
    sessions = Sessions()
    enforcer = SmppEnforcer(cfg, service, metrics, sessions)
    ctx = RelayContext(config=cfg, metrics=metrics, enforcer=enforcer, sessions=sessions,
                       upstream_address=("127.0.0.1", 9))
    return Rig(enforcer, service, metrics, ctx, [])


async def close_rig(rig: Rig) -> None:
    for session in rig.sessions:
        session._close("test over")
    await rig.service.close()


@pytest.fixture(autouse=True)
def debug_log(caplog: pytest.LogCaptureFixture) -> None:
    """Every enforcement event is captured, the per-submit DEBUG ones too."""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = await make_rig(tmp_path)
    yield r
    await close_rig(r)


def submit_sm(dest: bytes = ALICE_DIGITS, *, seq: int = 7, **fields: Any) -> Pdu:
    params: dict[str, Any] = {
        "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": INBOUND_DIGITS,
        "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": dest,
        "short_message": b"Big sale today", **fields}
    return codec.make_pdu(Command.SUBMIT_SM, sequence_number=seq, **params)


def mo(sender: bytes, text: bytes, *, seq: int = 3, **fields: Any) -> Pdu:
    params: dict[str, Any] = {
        "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": sender,
        "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": INBOUND_DIGITS,
        "short_message": text, **fields}
    return codec.make_pdu(Command.DELIVER_SM, sequence_number=seq, **params)


def answered(verdict: Forward | Answer) -> Pdu:
    assert isinstance(verdict, Answer), verdict
    return codec.decode(verdict.raw)


async def counted() -> None:
    """One loop turn: submit counts are applied by a `call_soon` flush."""
    await asyncio.sleep(0)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The fields of each `name` event logged; a test reading them sets the
    level first (the per-submit events are DEBUG)."""
    return [r.fields for r in caplog.records  # type: ignore[attr-defined]
            if r.name == "optout.enforcement" and r.getMessage() == name]


# --- plain submit_sm ---------------------------------------------------------------------


async def test_a_submit_to_a_subscribed_number_goes_to_the_carrier_as_sent(rig: Rig) -> None:
    # given a configured sender and a subscriber who never opted out
    session = rig.sender()
    # when it submits a plain marketing message
    verdict = rig.submit(session, submit_sm())
    # then the received PDU is relayed unchanged and counted as allowed
    assert verdict == Forward(None, None)
    await counted()
    assert rig.submits("allowed") == 1
    assert rig.submits("blocked") == 0
    assert rig.sample("optout_decision_seconds_count") == 1
    assert 0 < rig.sample("optout_decision_seconds_sum") < 1  # how long deciding took


async def test_a_submit_read_by_the_full_decode_is_timed_like_a_plain_one(rig: Rig) -> None:
    # given a submit with a TLV, which the plain-submit fast path leaves to decode
    session = rig.sender()
    # when it is decided
    assert rig.submit(session, submit_sm(tlvs=[Tlv(0x0204, b"\x00\x01")])) == Forward(None, None)
    await counted()
    # then its decision time is observed once, as a plausible duration
    assert rig.sample("optout_decision_seconds_count") == 1
    assert 0 < rig.sample("optout_decision_seconds_sum") < 1


async def test_a_submit_to_an_opted_out_number_is_refused_with_the_blocked_status(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "optout.enforcement")
    await rig.stop()
    session = rig.sender()
    # (An Answer's sequence number is the relay's to write: a plain submit_sm's
    # refusal is one shared PDU.)
    resp = answered(rig.submit(session, submit_sm(seq=41)))
    assert (resp.command_id, resp.command_status) == (Command.SUBMIT_SM_RESP, BLOCKED)
    assert codec.encode(resp)[16:] == b""  # an error response has no body
    await counted()
    assert rig.submits("blocked") == 1 and rig.submits("allowed") == 0
    # the same for a submit that needs the full decode
    with_tlv = answered(rig.submit(session, submit_sm(seq=42, tlvs=[Tlv(0x0204, b"\x00\x01")])))
    assert (with_tlv.command_id, with_tlv.command_status, with_tlv.sequence_number) == (
        Command.SUBMIT_SM_RESP, BLOCKED, 42)
    assert events(caplog, "submit_blocked") == 2 * [
        {"system_id": "acme", "app_id": APP, "sms_type": "marketing", "to": "+1415*****23"}]
    # per blocked submit, so DEBUG: a campaign makes many
    assert [r.levelno for r in caplog.records if r.getMessage() == "submit_blocked"] \
        == [logging.DEBUG, logging.DEBUG]


async def test_the_configured_blocked_status_is_what_senders_get(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path, blocked_status=0x66)
    try:
        await rig.stop()
        session = rig.sender()
        assert answered(rig.submit(session, submit_sm())).command_status == 0x66
        multi = rig.submit(session, submit_multi(SmeAddress(1, 1, ALICE_DIGITS)))
        resp = answered(multi)
        assert resp.command_status == 0x66
        assert resp.unsuccess_smes() == [UnsuccessSme(1, 1, ALICE_DIGITS, 0x66)]
    finally:
        await close_rig(rig)


async def test_service_type_and_account_default_choose_the_sms_type(rig: Rig) -> None:
    acme, alerts = rig.sender("acme"), rig.sender("alerts")
    tlv = [Tlv(0x0204, b"\x00\x01")]  # and again on the full decode's path
    for session, service_type in ((acme, b"NTF"), (acme, b""), (acme, b"CMT"),
                                  (alerts, b""), (alerts, b"NTF")):
        assert rig.submit(session, submit_sm(service_type=service_type)).raw is None
        assert rig.submit(session, submit_sm(service_type=service_type, tlvs=tlv)).raw is None
    await counted()
    assert rig.submits("allowed", sms_type="notification") == 2
    assert rig.submits("allowed", sms_type="marketing") == 4  # unmapped: the default
    assert rig.submits("allowed", app_id="1400000002", sms_type="notification") == 4


async def test_an_unconfigured_sender_is_counted_as_other_and_decided_by_its_system_id(
        tmp_path: Path) -> None:
    rig = await make_rig(tmp_path, allow_unknown_accounts=True)
    try:
        await rig.stop()
        # its own app ID (the system_id) is let through for marketing at this address
        await rig.service.create_rule(INBOUND, "guest", [SmsType.NOTIFICATION])
        guest, other = rig.sender("guest", configured=False), rig.sender("x", configured=False)
        assert rig.submit(guest, submit_sm()).raw is None
        assert answered(rig.submit(other, submit_sm())).command_status == BLOCKED
        assert answered(rig.submit(guest, submit_sm(service_type=b"NTF"))).command_status \
            == BLOCKED
        assert answered(rig.submit(guest, submit_sm(dest=b"ACME", dest_addr_ton=5))) \
            .command_status == INVALID
        # the same with TLVs (the full decode) and in a submit_multi
        tlv = [Tlv(0x0204, b"\x00\x01")]
        assert rig.submit(guest, submit_sm(tlvs=tlv)) == Forward(None, None)
        assert answered(rig.submit(other, submit_sm(tlvs=tlv))).command_status == BLOCKED
        assert answered(rig.submit(guest, submit_sm(service_type=b"NTF", tlvs=tlv))) \
            .command_status == BLOCKED
        assert answered(rig.submit(guest, submit_sm(dest=b"ACME", dest_addr_ton=5, tlvs=tlv))) \
            .command_status == INVALID
        assert answered(rig.submit(guest, submit_multi(SmeAddress(5, 0, b"ACME")))) \
            .command_status == INVALID
        await counted()
        assert rig.submits("allowed", app_id=OTHER_APP) == 2
        assert rig.submits("blocked", app_id=OTHER_APP) == 2
        assert rig.submits("blocked", app_id=OTHER_APP, sms_type="notification") == 2
        assert rig.sample("optout_submit_invalid_destination_total", app_id=OTHER_APP) == 3
        assert rig.metrics.registry.get_sample_value(
            "optout_submit_invalid_destination_total", {"app_id": "guest"}) is None
        assert rig.sample("optout_submit_total", app_id="guest", sms_type="marketing",
                          decision="allowed") == 0
    finally:
        await close_rig(rig)


async def test_a_destination_that_is_not_a_number_gets_0x0b(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "optout.enforcement")
    session = rig.sender()
    resp = answered(rig.submit(session, submit_sm(dest=b"1415555O123", seq=9)))
    assert (resp.command_id, resp.command_status, resp.sequence_number) == (
        Command.SUBMIT_SM_RESP, INVALID, 9)
    assert rig.sample("optout_submit_invalid_destination_total", app_id=APP) == 1
    await counted()
    assert rig.submits("allowed") == rig.submits("blocked") == 0  # not decided at all
    # one DEBUG line with the reason only: the address may be a phone number
    resp = answered(rig.submit(session, submit_sm(dest=b"415: 555 0123")))
    assert resp.command_status == INVALID
    decoded = submit_sm(dest=b"1415555O123", tlvs=[Tlv(0x0204, b"\x00\x01")])
    assert answered(rig.submit(session, decoded)).command_status == INVALID
    letters = {"system_id": "acme", "app_id": APP, "why": "it contains letters"}
    assert [(r.levelno, r.fields) for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage() == "submit_invalid_destination"] == [
        (logging.DEBUG, letters),
        (logging.DEBUG, {"system_id": "acme", "app_id": APP,
                         "why": "only digits, spaces, '+', '(', ')', '-', '.' and '/' are "
                                "allowed"}),
        (logging.DEBUG, letters)]


async def test_a_submit_destination_is_read_with_its_ton(rig: Rig) -> None:
    # twelve digits are an international number, unless labelled national
    session = rig.sender()
    tlv = [Tlv(0x0204, b"\x00\x01")]
    for tlvs in ([], tlv):
        assert rig.submit(session, submit_sm(dest=b"441632960000", dest_addr_ton=0,
                                             tlvs=tlvs)) == Forward(None, None)
        national = rig.submit(session, submit_sm(dest=b"441632960000", dest_addr_ton=2,
                                                 tlvs=tlvs))
        assert answered(national).command_status == INVALID


async def test_a_number_outside_us_canada_passes_and_is_counted_out_of_scope(rig: Rig) -> None:
    await rig.stop(JAMAICA_DIGITS)  # a STOP from Jamaica changes nothing
    session = rig.sender()
    assert rig.submit(session, submit_sm(dest=JAMAICA_DIGITS)).raw is None
    assert rig.submit(session, submit_sm(dest=JAMAICA_DIGITS)).raw is None
    assert rig.submit(session, submit_sm(dest=BOB_DIGITS)).raw is None
    assert rig.sample("optout_submit_out_of_scope_total", app_id=APP) == 2
    await counted()
    assert rig.submits("allowed") == 3


# --- submits that need the full decode ---------------------------------------------------


async def test_a_data_sm_and_a_submit_with_tlvs_are_decided_like_a_plain_one(rig: Rig) -> None:
    await rig.stop()
    session = rig.sender()
    data_sm = codec.make_pdu(Command.DATA_SM, sequence_number=5, dest_addr_ton=1,
                             dest_addr_npi=1, destination_addr=ALICE_DIGITS,
                             tlvs=[Tlv(0x0424, b"Big sale")])
    resp = answered(rig.submit(session, data_sm))
    assert (resp.command_id, resp.command_status, resp.sequence_number) == (
        Command.DATA_SM_RESP, BLOCKED, 5)
    with_tlv = submit_sm(tlvs=[Tlv(0x0204, b"\x00\x01")])  # user_message_reference
    assert answered(rig.submit(session, with_tlv)).command_status == BLOCKED
    assert rig.submit(session, submit_sm(dest=BOB_DIGITS, tlvs=[Tlv(0x0204, b"\x00\x01")])) \
        == Forward(None, None)
    invalid = rig.submit(session, submit_sm(dest=b"#31#", tlvs=[Tlv(0x0204, b"\x00\x01")]))
    assert answered(invalid).command_status == INVALID
    assert rig.sample("optout_submit_invalid_destination_total", app_id=APP) == 1
    await counted()
    assert rig.submits("blocked") == 2 and rig.submits("allowed") == 1


async def test_the_apps_own_rule_decides_a_fully_decoded_submit(rig: Rig) -> None:
    # given an app whose rule at this address blocks notifications only
    await rig.stop()
    await rig.service.create_rule(INBOUND, APP, [SmsType.NOTIFICATION])
    session = rig.sender()
    tlv = [Tlv(0x0204, b"\x00\x01")]
    # then its marketing goes through and its notifications do not, as plain or
    # with TLVs, as one message or as a segment
    assert rig.submit(session, submit_sm(tlvs=tlv)) == Forward(None, None)
    assert rig.submit(session, part(1, tlvs=tlv)) == Forward(None, None)
    assert rig.submit(session, submit_sm()) == Forward(None, None)
    for pdu in (submit_sm(service_type=b"NTF", tlvs=tlv), part(1, ref=9, service_type=b"NTF"),
                submit_sm(service_type=b"NTF")):
        assert answered(rig.submit(session, pdu)).command_status == BLOCKED


async def test_an_undecodable_submit_is_refused_with_the_codecs_status(rig: Rig) -> None:
    session = rig.sender()
    raw = bytearray(codec.encode(submit_sm(seq=12, tlvs=[Tlv(0x0204, b"\x00\x01")])))
    raw[-3] = 9  # the TLV claims nine value octets; two follow
    with pytest.raises(SmppError) as err:
        codec.decode(bytes(raw))
    verdict = rig.enforcer.check_submit(session, parse_header(bytes(raw)), bytes(raw))
    resp = answered(verdict)
    assert err.value.command_status != 0
    assert (resp.command_id, resp.command_status, resp.sequence_number) == (
        Command.SUBMIT_SM_RESP, err.value.command_status, 12)


async def test_the_sms_type_tlv_wins_over_service_type(rig: Rig) -> None:
    session = rig.sender()
    for value in (b"notification", b" Notification \x00", b"VERIFICATION\x00\x00"):
        rig.submit(session, submit_sm(tlvs=[Tlv(SMS_TYPE_TLV, value)]))
    # an unknown value falls back to service_type, then to the account default
    rig.submit(session, submit_sm(service_type=b"NTF", tlvs=[Tlv(SMS_TYPE_TLV, b"promo")]))
    rig.submit(session, submit_sm(tlvs=[Tlv(SMS_TYPE_TLV, b"promo")]))
    rig.submit(session, submit_sm(tlvs=[Tlv(SMS_TYPE_TLV, b"caf\xe9")]))
    rig.submit(session, submit_sm(tlvs=[Tlv(SMS_TYPE_TLV, b"notificationX")]))
    await counted()
    assert rig.submits("allowed", sms_type="notification") == 3
    assert rig.submits("allowed", sms_type="verification") == 1
    assert rig.submits("allowed", sms_type="marketing") == 3


async def test_without_an_sms_type_tlv_configured_the_tag_means_nothing(
        tmp_path: Path) -> None:
    rig = await make_rig(tmp_path, sms_type_tlv=None)
    try:
        rig.submit(rig.sender(), submit_sm(tlvs=[Tlv(SMS_TYPE_TLV, b"notification")]))
        await counted()
        assert rig.submits("allowed", sms_type="marketing") == 1
    finally:
        await close_rig(rig)


# --- concatenated messages ---------------------------------------------------------------


def part(n: int, *, ref: int = 0x7F, total: int = 2, **fields: Any) -> Pdu:
    udh = b"\x05\x00\x03" + bytes([ref, total, n])
    return submit_sm(short_message=udh + b"part", esm_class=0x40, **fields)


async def test_every_segment_follows_the_first_segments_decision(rig: Rig) -> None:
    session = rig.sender()
    assert rig.submit(session, part(1)).raw is None
    # texts that merely start like such a header, without UDHI, are no segments
    tlv = [Tlv(0x0204, b"\x00\x01")]
    looks_like = part(1, ref=0x33, tlvs=tlv)
    looks_like.params["esm_class"] = 0
    assert rig.submit(session, looks_like) == Forward(None, None)
    await rig.stop()  # the subscriber opts out between the parts
    assert rig.submit(session, part(2)) == Forward(None, None)
    looks_like = part(2, ref=0x33, tlvs=tlv)
    looks_like.params["esm_class"] = 0
    assert answered(rig.submit(session, looks_like)).command_status == BLOCKED
    await counted()
    assert rig.submits("allowed") == 3 and rig.submits("blocked") == 1
    assert rig.sample("optout_decision_seconds_count") == 3  # the message once, the others

    # a new message (another reference, count, sender or account) is decided anew
    for segment in (part(1, ref=0x80), part(1, total=3), part(1, source_addr=b"18005550111")):
        assert answered(rig.submit(session, segment)).command_status == BLOCKED
    assert answered(rig.submit(rig.sender("alerts"), part(2))).command_status == BLOCKED
    # and a message blocked at its first part stays blocked after a START
    assert await rig.deliver(mo(ALICE_DIGITS, b"START")) == Deliver(forward=True)
    assert answered(rig.submit(session, part(2, ref=0x80))).command_status == BLOCKED
    await counted()
    assert rig.submits("blocked") == 5


def test_a_remembered_decision_lasts_its_ttl_and_no_longer() -> None:
    concat = ConcatDecisions(ttl=10.0)
    concat.put(("a",), True, now=100.0)
    concat.put(("b",), False, now=100.0)
    assert concat.get(("a",), 110.0) is True
    assert concat.get(("b",), 110.0) is False
    assert concat.get(("a",), 110.001) is None
    assert concat.get(("c",), 100.0) is None


def test_the_oldest_remembered_decisions_go_first_when_full() -> None:
    concat = ConcatDecisions(max_entries=2)
    concat.put(("a",), True, 0.0)
    concat.put(("b",), True, 0.0)
    concat.put(("a",), False, 1.0)  # refreshed: now the newest
    concat.put(("c",), True, 1.0)
    assert concat.get(("b",), 1.0) is None
    assert concat.get(("a",), 1.0) is False
    assert concat.get(("c",), 1.0) is True


# --- submit_multi ------------------------------------------------------------------------


def submit_multi(*dests: SmeAddress | DistributionList, seq: int = 21) -> Pdu:
    return codec.make_pdu(
        Command.SUBMIT_MULTI, sequence_number=seq, source_addr_ton=1, source_addr_npi=1,
        source_addr=INBOUND_DIGITS, dest_address=list(dests), short_message=b"Big sale",
        tlvs=[Tlv(0x0204, b"\x00\x02")])


def multi_resp(status: int = 0, unsuccess: list[UnsuccessSme] | None = None,
               seq: int = 77) -> bytes:
    req = submit_multi(seq=seq)
    if status and unsuccess is None:
        return codec.encode(codec.Pdu(Command.SUBMIT_MULTI_RESP, status, seq))
    items = unsuccess or []
    return codec.encode(codec.response_for(req, status, message_id=b"c-1",
                                           no_unsuccess=len(items), unsuccess_sme=items))


async def test_submit_multi_forwards_the_allowed_and_reports_the_rest(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "optout.enforcement")
    await rig.stop()
    session = rig.sender()
    dl = DistributionList(b"vip-list")
    verdict = rig.submit(session, submit_multi(
        SmeAddress(1, 1, ALICE_DIGITS), SmeAddress(1, 1, BOB_DIGITS),
        SmeAddress(5, 0, b"ACME"), dl))
    assert isinstance(verdict, Forward) and verdict.raw is not None
    assert verdict.on_response is not None
    relayed = codec.decode(verdict.raw)
    assert relayed.destinations() == [SmeAddress(1, 1, BOB_DIGITS), dl]
    assert relayed.get_int("number_of_dests") == 2
    assert relayed.sequence_number == 21 and relayed.tlvs == [Tlv(0x0204, b"\x00\x02")]
    assert relayed.message_bytes() == b"Big sale"
    (event,) = events(caplog, "submit_multi_blocked")
    assert event == {"system_id": "acme", "app_id": APP, "blocked": 1, "invalid": 1,
                     "allowed": 2}
    assert rig.sample("optout_submit_invalid_destination_total", app_id=APP) == 1
    await counted()
    assert rig.submits("blocked") == 1 and rig.submits("allowed") == 1

    # the carrier's answer gets the refused destinations added after its own
    ours = [UnsuccessSme(1, 1, ALICE_DIGITS, BLOCKED), UnsuccessSme(5, 0, b"ACME", INVALID)]
    merged = codec.decode(verdict.on_response(multi_resp()))
    assert (merged.command_status, merged.get_bytes("message_id")) == (0, b"c-1")
    assert merged.unsuccess_smes() == ours
    assert merged.get_int("no_unsuccess") == 2
    theirs = UnsuccessSme(1, 1, BOB_DIGITS, 0x58)
    merged = codec.decode(verdict.on_response(multi_resp(0x45, [theirs])))
    assert merged.unsuccess_smes() == [theirs, *ours]
    assert merged.get_int("no_unsuccess") == 3
    # an error answer without a body, or one we cannot read, goes back as it came
    for status in (0x01, 0x58):
        bare = multi_resp(status)
        assert verdict.on_response(bare) == bare
    junk = bare[:12] + b"\x00\x00\x00\x4d" + b"\xff\x01"
    junk = len(junk).to_bytes(4, "big") + junk[4:]
    assert verdict.on_response(junk) == junk


async def test_a_submit_multi_with_nothing_to_refuse_is_relayed_as_received(rig: Rig) -> None:
    verdict = rig.submit(rig.sender(), submit_multi(SmeAddress(1, 1, BOB_DIGITS),
                                                    DistributionList(b"all")))
    assert verdict == Forward(None, None)


async def test_a_submit_multi_with_every_destination_refused_is_answered_here(
        rig: Rig) -> None:
    await rig.stop()
    session = rig.sender()
    resp = answered(rig.submit(session, submit_multi(
        SmeAddress(1, 1, ALICE_DIGITS), SmeAddress(1, 1, b"+1415555O123"))))
    assert (resp.command_id, resp.command_status, resp.sequence_number) == (
        Command.SUBMIT_MULTI_RESP, BLOCKED, 21)
    assert resp.get_bytes("message_id") == b""
    assert resp.unsuccess_smes() == [UnsuccessSme(1, 1, ALICE_DIGITS, BLOCKED),
                                     UnsuccessSme(1, 1, b"+1415555O123", INVALID)]
    assert resp.get_int("no_unsuccess") == 2
    # every one unreadable: the answer says so
    resp = answered(rig.submit(session, submit_multi(SmeAddress(5, 0, b"ACME"),
                                                     SmeAddress(1, 1, b"#31#"))))
    assert resp.command_status == INVALID
    assert [u.error_status_code for u in resp.unsuccess_smes()] == [INVALID, INVALID]


async def test_submit_multi_reads_each_destination_with_its_ton(rig: Rig) -> None:
    # twelve digits are an international number, unless labelled national
    verdict = rig.submit(rig.sender(), submit_multi(SmeAddress(2, 1, b"441632960000"),
                                                    SmeAddress(0, 1, b"441632960000")))
    assert isinstance(verdict, Forward) and verdict.raw is not None
    assert codec.decode(verdict.raw).destinations() == [SmeAddress(0, 1, b"441632960000")]
    assert verdict.on_response is not None
    assert codec.decode(verdict.on_response(multi_resp())).unsuccess_smes() == [
        UnsuccessSme(2, 1, b"441632960000", INVALID)]


async def test_submit_multi_segments_share_the_first_segments_decision(rig: Rig) -> None:
    session = rig.sender()
    udh = b"\x05\x00\x03\x11\x02"

    def segment(n: int) -> Pdu:
        pdu = submit_multi(SmeAddress(1, 1, ALICE_DIGITS), SmeAddress(1, 1, BOB_DIGITS))
        pdu.params.update(esm_class=0x40, short_message=udh + bytes([n]) + b"x")
        return pdu

    assert rig.submit(session, segment(1)) == Forward(None, None)
    await rig.stop()
    assert rig.submit(session, segment(2)) == Forward(None, None)


# --- receipt mode ------------------------------------------------------------------------


@pytest.fixture
async def receipt_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = await make_rig(tmp_path, blocked_mode="receipt")
    yield r
    await close_rig(r)


class Receiver:
    """A sender session bound to receive, on a real socket: reads the PDUs
    the sidecar writes to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = FrameReader()

    @classmethod
    async def bind(cls, rig: Rig, system_id: str = "acme") -> Receiver:
        session = rig.sender(system_id)
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        await asyncio.get_running_loop().connect_accepted_socket(
            lambda: session.sender, sock=ours)
        rig.ctx.sessions.add(session)
        return cls(theirs)

    async def read(self) -> Pdu:
        loop = asyncio.get_running_loop()
        while True:
            frame = self.frames.next_frame()
            if frame is not None:
                return codec.decode(bytes(frame))
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), 5)
            assert data, "the sidecar closed the receiver"
            self.frames.feed(data)


async def test_receipt_mode_accepts_a_blocked_submit_and_sends_a_rejectd_receipt(
        receipt_rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = receipt_rig
    await rig.stop()
    receiver = await Receiver.bind(rig)
    session = rig.sender()
    verdict = rig.submit(session, submit_sm(seq=8, registered_delivery=1))
    assert isinstance(verdict, Answer) and verdict.after is not None
    resp = codec.decode(verdict.raw)
    assert (resp.command_id, resp.command_status, resp.sequence_number) == (
        Command.SUBMIT_SM_RESP, 0, 8)
    message_id = resp.get_bytes("message_id")
    assert re.fullmatch(rb"[0-9a-f]{16}", message_id)

    # the dates are UTC, whatever the host's time zone
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: another day
    time.tzset()
    try:
        stamps = {time.strftime("%y%m%d%H%M", time.gmtime())}
        verdict.after()
        stamps.add(time.strftime("%y%m%d%H%M", time.gmtime()))
    finally:
        monkeypatch.undo()
        time.tzset()
    try:
        receipt = await receiver.read()
        assert receipt.command_id == Command.DELIVER_SM
        assert receipt.get_int("esm_class") == 0x04
        assert (receipt.get_bytes("source_addr"), receipt.get_int("source_addr_ton"),
                receipt.get_int("source_addr_npi")) == (ALICE_DIGITS, 1, 1)
        assert (receipt.get_bytes("destination_addr"), receipt.get_int("dest_addr_ton"),
                receipt.get_int("dest_addr_npi")) == (INBOUND_DIGITS, 1, 1)
        text = receipt.message_bytes()
        assert re.search(rb"submit date:(\d{10}) done date:\1 ", text)
        assert text.split(b"date:")[1][:10].decode() in stamps
        assert re.fullmatch(
            rb"id:" + message_id + rb" sub:001 dlvrd:000 submit date:\d{10} "
            rb"done date:\d{10} stat:REJECTD err:045 text:", text), text
        assert receipt.get_tlv(0x001E) == message_id + b"\x00"
        assert receipt.get_tlv(0x0427) == b"\x08"
    finally:
        receiver.sock.close()


async def test_receipt_mode_receipts_a_submit_that_needs_the_full_decode_too(
        receipt_rig: Rig) -> None:
    rig = receipt_rig
    await rig.stop()
    receiver = await Receiver.bind(rig)
    verdict = rig.submit(rig.sender(), submit_sm(seq=9, registered_delivery=1,
                                                 tlvs=[Tlv(0x0204, b"\x00\x01")]))
    assert isinstance(verdict, Answer) and verdict.after is not None
    message_id = codec.decode(verdict.raw).get_bytes("message_id")
    verdict.after()
    try:
        receipt = await receiver.read()
        assert receipt.command_id == Command.DELIVER_SM
        assert b" stat:REJECTD err:045 " in receipt.message_bytes()
        assert receipt.get_tlv(0x001E) == message_id + b"\x00"
    finally:
        receiver.sock.close()


async def test_receipt_mode_without_a_receipt_request_sends_none(receipt_rig: Rig) -> None:
    rig = receipt_rig
    await rig.stop()
    for tlvs in ([], [Tlv(0x0204, b"\x00\x01")]):
        verdict = rig.submit(rig.sender(), submit_sm(seq=6, registered_delivery=0x10,
                                                     tlvs=tlvs))
        assert isinstance(verdict, Answer) and verdict.after is None
        resp = codec.decode(verdict.raw)
        assert (resp.command_status, resp.sequence_number) == (0, 6)
        assert re.fullmatch(rb"[0-9a-f]{16}", resp.get_bytes("message_id"))
    # asked for, but nobody of the account is bound to receive: nothing to send to
    verdict = rig.submit(rig.sender("alerts"), submit_sm(registered_delivery=2))
    assert isinstance(verdict, Answer) and verdict.after is not None
    verdict.after()


async def test_receipt_mode_shapes_its_ids_like_the_carriers(receipt_rig: Rig) -> None:
    rig = receipt_rig
    await rig.stop()
    session = rig.sender()
    allowed = rig.submit(session, submit_sm(dest=BOB_DIGITS))
    assert isinstance(allowed, Forward) and allowed.on_response is not None
    carrier = codec.encode(codec.response_for(submit_sm(), 0, message_id=b"123456789012"))
    assert allowed.on_response(carrier) == carrier  # passed on unchanged
    ids = [answered(rig.submit(session, submit_sm())).get_bytes("message_id") for _ in range(3)]
    assert all(re.fullmatch(rb"\d{12}", i) for i in ids) and len(set(ids)) == 3
    # an empty id teaches nothing
    empty = codec.encode(codec.response_for(submit_sm(), 0, message_id=b""))
    assert allowed.on_response(empty) == empty
    assert re.fullmatch(rb"\d{12}", answered(rig.submit(session, submit_sm()))
                        .get_bytes("message_id"))
    # the id ends at its NUL, whatever TLVs follow; one character is an id too
    with_tlv = codec.encode(codec.response_for(submit_sm(), 0, message_id=b"abcdef",
                                               tlvs=[Tlv(0x001D, b"x\x00y\x00")]))
    allowed.on_response(with_tlv)
    assert re.fullmatch(rb"[0-9a-f]{6}", answered(rig.submit(session, submit_sm()))
                        .get_bytes("message_id"))
    allowed.on_response(codec.encode(codec.response_for(submit_sm(), 0, message_id=b"7")))
    assert re.fullmatch(rb"\d", answered(rig.submit(session, submit_sm()))
                        .get_bytes("message_id"))


def test_message_ids_follow_the_carriers_style() -> None:
    ids = MessageIds()
    assert re.fullmatch(r"[0-9a-f]{16}", ids.new())
    ids.learn("0123456789")
    assert re.fullmatch(r"\d{10}", ids.new())
    ids.learn("abc01")
    assert re.fullmatch(r"[0-9a-f]{5}", ids.new())
    ids.learn("ABCDEF0")
    new = ids.new()
    assert re.fullmatch(r"[0-9A-F]{7}", new) and new == new.upper()
    ids.learn("msg-17")  # no style we know: keep the last one
    ids.learn("abX1")  # neither case of hex
    ids.learn("ABX1")
    ids.learn("")
    ids.learn("1" * 65)  # longer than any SMPP message_id
    assert re.fullmatch(r"[0-9A-F]{7}", ids.new())
    ids.learn("9" * 64)
    assert re.fullmatch(r"\d{64}", ids.new())
    ids.learn("f" * 40)
    assert re.fullmatch(r"[0-9a-f]{40}", ids.new())
    assert len({ids.new() for _ in range(20)}) == 20


async def test_reject_mode_learns_nothing_from_responses(rig: Rig) -> None:
    verdict = rig.submit(rig.sender(), submit_sm(dest=BOB_DIGITS))
    assert verdict == Forward(None, None)


# --- MOs from the carrier ----------------------------------------------------------------


async def test_an_mo_stop_is_committed_before_the_carrier_gets_ok(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "optout.enforcement")
    pdu = mo(ALICE_DIGITS, b"STOP", seq=31, tlvs=[Tlv(0x001E, b"abc-123-X\x00")])
    assert await rig.deliver(pdu, system_id="carrier-1") == Deliver(forward=True, status=0)
    assert not rig.service.decide(APP, SmsType.MARKETING, ALICE).allowed
    records, _ = await rig.service.list_records(phone_number=ALICE)
    (record,) = records
    assert record.carrier_ids == "system_id=carrier-1 seq=31 message_id=abc-123-X"
    assert record.raw_text == "STOP"
    assert rig.sample("optout_mo_total", inbound_address=INBOUND, action="opt_out") == 1
    (event,) = events(caplog, "mo_handled")
    assert event == {"inbound": "+1800*****00", "sender": "+1415*****23", "action": "opt_out",
                     "handled": True, "keyword": "STOP", "text": "<4 chars>"}


async def test_an_mo_without_a_carrier_message_id_records_the_session_and_sequence(
        rig: Rig) -> None:
    assert await rig.deliver(mo(ALICE_DIGITS, b"stop", seq=32)) == Deliver(forward=True)
    records, _ = await rig.service.list_records(phone_number=ALICE)
    assert records[0].carrier_ids == "system_id=carrier seq=32"


async def test_mo_text_is_read_in_its_coding_and_after_its_udh(rig: Rig) -> None:
    fullwidth = "ＳＴＯＰ".encode("utf-16-be")
    assert await rig.deliver(mo(ALICE_DIGITS, fullwidth, data_coding=8)) == Deliver(True)
    assert not rig.service.decide(APP, SmsType.MARKETING, ALICE).allowed
    udh = b"\x05\x00\x03\x2a\x01\x01"
    assert await rig.deliver(mo(BOB_DIGITS, udh + b"STOP", esm_class=0x40)) == Deliver(True)
    assert not rig.service.decide(APP, SmsType.MARKETING, "+14155550124").allowed
    payload = mo(CAROL_DIGITS, b"", tlvs=[Tlv(0x0424, b"STOP")])  # message_payload
    assert await rig.deliver(payload) == Deliver(True)
    assert not rig.service.decide(APP, SmsType.MARKETING, "+14155550125").allowed


@pytest.mark.parametrize(("alphabet", "text"), [(None, "STOP ¤"),  # GSM 03.38
                                                 ("latin-1", "STOP $")])
async def test_mo_text_in_the_default_coding_is_read_in_the_configured_alphabet(
        tmp_path: Path, alphabet: str | None, text: str) -> None:
    rig = await make_rig(tmp_path, default_alphabet=alphabet)
    try:
        sent = mo(ALICE_DIGITS, b"STOP \x24", data_coding=0)  # 0x24: '¤' in GSM, '$' in Latin-1
        assert await rig.deliver(sent) == Deliver(True)
        records, _ = await rig.service.list_records(phone_number=ALICE)
        assert [r.raw_text for r in records] == [text]
    finally:
        await close_rig(rig)


async def test_mo_numbers_are_read_with_their_ton(rig: Rig) -> None:
    # national spellings (TON 2) of the sender and the inbound address
    pdu = mo(b"4155550123", b"STOP", source_addr_ton=2, dest_addr_ton=2,
             destination_addr=b"8005550100")
    assert await rig.deliver(pdu) == Deliver(True)
    assert not rig.service.decide(APP, SmsType.MARKETING, ALICE).allowed
    assert rig.sample("optout_mo_total", inbound_address=INBOUND, action="opt_out") == 1


async def test_receipts_and_mos_we_cannot_read_are_passed_on_untouched(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "optout.enforcement")
    for esm_class in (0x04, 0x08):
        assert await rig.deliver(mo(ALICE_DIGITS, b"STOP", esm_class=esm_class)) \
            == Deliver(forward=True)
    for pdu in (mo(b"ACME", b"STOP", source_addr_ton=5),  # alphanumeric sender
                mo(ALICE_DIGITS, b"STOP", source_addr_ton=5),  # a sender ID of digits
                mo(ALICE_DIGITS, b"STOP", dest_addr_ton=5),
                mo(b"", b"STOP"),
                mo(ALICE_DIGITS, b"STOP", destination_addr=b""),
                mo(ALICE_DIGITS, b"STOP", destination_addr=b"ACME", dest_addr_ton=5)):
        assert await rig.deliver(pdu) == Deliver(forward=True)
    raw = codec.encode(mo(ALICE_DIGITS, b"STOP"))
    raw = raw[:-5] + b"\xff" + raw[-4:]  # sm_length says 255 octets; four follow
    assert await rig.enforcer.check_deliver("carrier", parse_header(raw), raw) \
        == Deliver(forward=True)
    # the operator is told why one was passed on unread
    (record,) = [r for r in caplog.records if r.getMessage() == "deliver_undecodable"]
    assert record.levelno == logging.WARNING
    assert "sm_length" in record.fields["error"]  # type: ignore[attr-defined]
    assert rig.service.unsubscribed_count() == 0
    assert rig.metrics.registry.get_sample_value(
        "optout_mo_total", {"inbound_address": INBOUND, "action": "opt_out"}) is None


async def test_an_mo_to_an_address_we_do_not_serve_is_counted_as_unknown(rig: Rig) -> None:
    pdu = mo(ALICE_DIGITS, b"STOP", destination_addr=b"18005550999")
    assert await rig.deliver(pdu) == Deliver(forward=True)
    assert rig.sample("optout_mo_total", inbound_address="unknown", action="opt_out") == 1
    assert rig.service.unsubscribed_count() == 0


async def test_an_mo_that_reads_like_an_opt_out_is_counted_for_review(rig: Rig) -> None:
    assert await rig.deliver(mo(ALICE_DIGITS, b"please STOP")) == Deliver(forward=True)
    assert rig.sample("optout_near_miss_total", inbound_address=INBOUND) == 1
    assert rig.sample("optout_mo_total", inbound_address=INBOUND, action="none") == 1


async def test_an_mo_whose_log_row_fails_still_counts_and_is_counted(rig: Rig,
                                                                      tmp_path: Path) -> None:
    # given an inbound message log that cannot take rows
    await execute_raw(f"sqlite:///{tmp_path / 'optout.db'}",
                      "CREATE TRIGGER broken BEFORE INSERT ON inbound_message "
                      "BEGIN SELECT RAISE(ABORT, 'disk failure'); END")
    # when a STOP and a plain message arrive, then the STOP still opts out
    assert await rig.deliver(mo(ALICE_DIGITS, b"STOP")) == Deliver(forward=True)
    assert await rig.deliver(mo(BOB_DIGITS, b"hello")) == Deliver(forward=True)
    assert not rig.service.decide(APP, SmsType.MARKETING, ALICE).allowed
    # and each lost log row is counted where an SRE looks
    assert rig.sample("optout_store_errors_total", operation="inbound_log") == 2
    assert rig.sample("optout_store_errors_total", operation="handle_mo") == 0


async def test_forward_mo_off_keeps_mos_from_the_sender(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path, forward_mo=False)
    try:
        assert await rig.deliver(mo(ALICE_DIGITS, b"STOP")) == Deliver(forward=False)
        assert not rig.service.decide(APP, SmsType.MARKETING, ALICE).allowed
        # receipts still reach the sender
        assert await rig.deliver(mo(ALICE_DIGITS, b"x", esm_class=0x04)) == Deliver(True)
    finally:
        await close_rig(rig)


async def test_a_store_failure_makes_the_carrier_redeliver(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "optout.enforcement")
    async def down(*args: object, **kwargs: object) -> MoOutcome:
        raise StoreUnavailable("store: database is locked")

    monkeypatch.setattr(rig.service, "handle_mo", down)
    assert await rig.deliver(mo(ALICE_DIGITS, b"STOP")) == Deliver(forward=False,
                                                                   status=RX_T_APPN)
    assert rig.sample("optout_store_errors_total", operation="handle_mo") == 1
    assert rig.metrics.registry.get_sample_value(
        "optout_mo_total", {"inbound_address": INBOUND, "action": "opt_out"}) is None
    (event,) = events(caplog, "mo_not_committed")
    assert event == {"error": "store: database is locked", "inbound": "+1800*****00",
                     "sender": "+1415*****23"}
    assert [r.levelno for r in caplog.records if r.getMessage() == "mo_not_committed"] \
        == [logging.ERROR]


async def test_any_failure_handling_an_mo_answers_0x64_and_is_counted(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "optout.enforcement")
    async def broken(*args: object, **kwargs: object) -> MoOutcome:
        raise UnicodeEncodeError("utf-8", "bye \ud800", 4, 5, "surrogates not allowed")

    monkeypatch.setattr(rig.service, "handle_mo", broken)
    assert await rig.deliver(mo(ALICE_DIGITS, b"STOP"), "carrier-2") == Deliver(
        forward=False, status=RX_T_APPN)
    assert rig.sample("optout_store_errors_total", operation="handle_mo") == 1
    (event,) = events(caplog, "mo_failed")
    assert event == {"system_id": "carrier-2", "error": "UnicodeEncodeError"}
    # an ERROR line, and the traceback for whoever debugs it
    failed = [r for r in caplog.records if r.getMessage().startswith("mo_failed")]
    assert [(r.getMessage(), r.levelno) for r in failed] == [
        ("mo_failed", logging.ERROR), ("mo_failed traceback", logging.DEBUG)]
    assert failed[1].exc_info is not None and failed[1].exc_info[0] is UnicodeEncodeError
    # the next MO is handled as usual
    monkeypatch.undo()
    assert await rig.deliver(mo(ALICE_DIGITS, b"STOP")) == Deliver(forward=True)
