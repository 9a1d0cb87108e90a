"""The SMPP codec: one table of wire cases drives the decoder, the encoder and the framer.

Every case is raw bytes as a peer would send them and the Pdu we expect;
each is decoded, re-encoded byte for byte, and framed whole, one byte at a
time and followed by the start of the next PDU (h11's test_io style).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smpp import (
    Command,
    CommandStatus,
    DistributionList,
    FrameReader,
    FramingError,
    Pdu,
    PduDecodeError,
    SmeAddress,
    SmppError,
    Tag,
    Tlv,
    UnsuccessSme,
    decode,
    encode,
    encode_simple,
    is_receipt,
    parse_header,
    response_for,
    with_sequence,
)
from gateway.smpp.pdu import Destination, ParamValue, make_pdu
from gateway.smpp.text import (
    concat_info,
    decode_short_message,
    encode_reply_text,
    message_text,
)
from tests.strategies import c_octet_string, octet_string

C = Command
S = CommandStatus
FULLWIDTH_STOP = "\uff33\uff34\uff2f\uff30"  # what a phone's full-width keyboard sends


def wire(command_id: int, status: int, seq: int, *parts: bytes | str) -> bytes:
    """A PDU as a peer would send it: body parts as bytes, or hex strings."""
    body = b"".join(bytes.fromhex(p) if isinstance(p, str) else p for p in parts)
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


def cstr(text: str) -> bytes:
    return text.encode("latin-1") + b"\x00"


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def message_params(**overrides: ParamValue) -> dict[str, ParamValue]:
    """submit_sm / deliver_sm params: zero values, then the overrides."""
    params: dict[str, ParamValue] = {
        "service_type": b"",
        "source_addr_ton": 0,
        "source_addr_npi": 0,
        "source_addr": b"",
        "dest_addr_ton": 0,
        "dest_addr_npi": 0,
        "destination_addr": b"",
        "esm_class": 0,
        "protocol_id": 0,
        "priority_flag": 0,
        "schedule_delivery_time": b"",
        "validity_period": b"",
        "registered_delivery": 0,
        "replace_if_present_flag": 0,
        "data_coding": 0,
        "sm_default_msg_id": 0,
        "sm_length": 0,
        "short_message": b"",
    }
    params.update(overrides)
    return params


RECEIPT_TEXT = (
    b"id:1a2b3c sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 "
    b"stat:DELIVRD err:000 text:Hello"
)
BIND_BODY = (
    cstr("acme"),
    cstr("secret"),
    cstr("VMA"),
    "34",  # interface_version
    "01",  # addr_ton
    "01",  # addr_npi
    cstr(""),
)
BIND_PARAMS: dict[str, ParamValue] = {
    "system_id": b"acme",
    "password": b"secret",
    "system_type": b"VMA",
    "interface_version": 0x34,
    "addr_ton": 1,
    "addr_npi": 1,
    "address_range": b"",
}

MULTI_DESTS: list[Destination] = [SmeAddress(1, 1, b"14155550100"), DistributionList(b"friends")]

# (case id, raw bytes, expected Pdu)
CASES: list[tuple[str, bytes, Pdu]] = [
    (
        "bind_transmitter",
        wire(C.BIND_TRANSMITTER, 0, 1, *BIND_BODY),
        Pdu(C.BIND_TRANSMITTER, 0, 1, dict(BIND_PARAMS)),
    ),
    (
        "bind_receiver",
        wire(C.BIND_RECEIVER, 0, 2, *BIND_BODY),
        Pdu(C.BIND_RECEIVER, 0, 2, dict(BIND_PARAMS)),
    ),
    (
        "bind_transceiver",
        wire(C.BIND_TRANSCEIVER, 0, 0x7FFFFFFF, *BIND_BODY),
        Pdu(C.BIND_TRANSCEIVER, 0, 0x7FFFFFFF, dict(BIND_PARAMS)),
    ),
    (
        "bind_transceiver_resp with sc_interface_version",
        wire(C.BIND_TRANSCEIVER_RESP, 0, 3, cstr("SMSC"), tlv(0x0210, b"\x34")),
        Pdu(C.BIND_TRANSCEIVER_RESP, 0, 3, {"system_id": b"SMSC"}, [Tlv(0x0210, b"\x34")]),
    ),
    (
        "bind_receiver_resp",
        wire(C.BIND_RECEIVER_RESP, 0, 4, cstr("SMSC")),
        Pdu(C.BIND_RECEIVER_RESP, 0, 4, {"system_id": b"SMSC"}),
    ),
    (
        "bind_transmitter_resp refused with an empty body",
        wire(C.BIND_TRANSMITTER_RESP, S.ESME_RINVPASWD, 5),
        Pdu(C.BIND_TRANSMITTER_RESP, S.ESME_RINVPASWD, 5),
    ),
    (
        "outbind",
        wire(C.OUTBIND, 0, 6, cstr("SMSC"), cstr("pw")),
        Pdu(C.OUTBIND, 0, 6, {"system_id": b"SMSC", "password": b"pw"}),
    ),
    ("unbind", wire(C.UNBIND, 0, 7), Pdu(C.UNBIND, 0, 7)),
    ("unbind_resp", wire(C.UNBIND_RESP, 0, 7), Pdu(C.UNBIND_RESP, 0, 7)),
    ("enquire_link", wire(C.ENQUIRE_LINK, 0, 8), Pdu(C.ENQUIRE_LINK, 0, 8)),
    ("enquire_link_resp", wire(C.ENQUIRE_LINK_RESP, 0, 8), Pdu(C.ENQUIRE_LINK_RESP, 0, 8)),
    (
        "generic_nack",
        wire(C.GENERIC_NACK, S.ESME_RINVCMDID, 9),
        Pdu(C.GENERIC_NACK, S.ESME_RINVCMDID, 9),
    ),
    (
        "submit_sm with registered_delivery and a TLV",
        wire(
            C.SUBMIT_SM, 0, 10,
            cstr("CMT"), "0101", cstr("14155550100"), "0101", cstr("14155550199"),
            "03", "00", "01", cstr(""), cstr("000001000000000R"), "01", "00", "00", "00",
            "05", b"Hello",
            tlv(Tag.USER_MESSAGE_REFERENCE, b"\x00\x2a"),
        ),
        Pdu(
            C.SUBMIT_SM, 0, 10,
            message_params(
                service_type=b"CMT",
                source_addr_ton=1, source_addr_npi=1, source_addr=b"14155550100",
                dest_addr_ton=1, dest_addr_npi=1, destination_addr=b"14155550199",
                esm_class=3, priority_flag=1, validity_period=b"000001000000000R",
                registered_delivery=1, sm_length=5, short_message=b"Hello",
            ),
            [Tlv(Tag.USER_MESSAGE_REFERENCE, b"\x00\x2a")],
        ),
    ),
    (
        "submit_sm with an unknown vendor TLV 0x1400 and a message_payload",
        wire(
            C.SUBMIT_SM, 0, 11,
            cstr(""), "0000", cstr("12345"), "0101", cstr("14155550199"),
            "00", "00", "00", cstr(""), cstr(""), "00", "00", "00", "00", "00",
            tlv(0x1400, b"\xde\xad\xbe\xef"), tlv(Tag.MESSAGE_PAYLOAD, b"long text"),
            tlv(0x1400, b""),
        ),
        Pdu(
            C.SUBMIT_SM, 0, 11,
            message_params(
                source_addr=b"12345", dest_addr_ton=1, dest_addr_npi=1,
                destination_addr=b"14155550199",
            ),
            [
                Tlv(0x1400, b"\xde\xad\xbe\xef"),
                Tlv(Tag.MESSAGE_PAYLOAD, b"long text"),
                Tlv(0x1400, b""),
            ],
        ),
    ),
    (
        "submit_sm_resp",
        wire(C.SUBMIT_SM_RESP, 0, 10, cstr("1a2b3c")),
        Pdu(C.SUBMIT_SM_RESP, 0, 10, {"message_id": b"1a2b3c"}),
    ),
    (
        "submit_sm_resp refused with an empty body",
        wire(C.SUBMIT_SM_RESP, S.ESME_RSUBMITFAIL, 12),
        Pdu(C.SUBMIT_SM_RESP, S.ESME_RSUBMITFAIL, 12),
    ),
    (
        "deliver_sm MO in UCS-2",
        wire(
            C.DELIVER_SM, 0, 13,
            cstr(""), "0101", cstr("14155550100"), "0101", cstr("18005550000"),
            "00", "00", "00", cstr(""), cstr(""), "00", "00", "08", "00",
            "08", FULLWIDTH_STOP.encode("utf-16-be"),
        ),
        Pdu(
            C.DELIVER_SM, 0, 13,
            message_params(
                source_addr_ton=1, source_addr_npi=1, source_addr=b"14155550100",
                dest_addr_ton=1, dest_addr_npi=1, destination_addr=b"18005550000",
                data_coding=8, sm_length=8, short_message=FULLWIDTH_STOP.encode("utf-16-be"),
            ),
        ),
    ),
    (
        "deliver_sm delivery receipt",
        wire(
            C.DELIVER_SM, 0, 14,
            cstr(""), "0101", cstr("14155550199"), "0101", cstr("14155550100"),
            "04", "00", "00", cstr(""), cstr(""), "00", "00", "00", "00",
            bytes((len(RECEIPT_TEXT),)), RECEIPT_TEXT,
            tlv(Tag.RECEIPTED_MESSAGE_ID, cstr("1a2b3c")), tlv(Tag.MESSAGE_STATE, b"\x02"),
        ),
        Pdu(
            C.DELIVER_SM, 0, 14,
            message_params(
                source_addr_ton=1, source_addr_npi=1, source_addr=b"14155550199",
                dest_addr_ton=1, dest_addr_npi=1, destination_addr=b"14155550100",
                esm_class=4, sm_length=len(RECEIPT_TEXT), short_message=RECEIPT_TEXT,
            ),
            [Tlv(Tag.RECEIPTED_MESSAGE_ID, b"1a2b3c\x00"), Tlv(Tag.MESSAGE_STATE, b"\x02")],
        ),
    ),
    (
        "deliver_sm_resp with an empty message_id",
        wire(C.DELIVER_SM_RESP, 0, 13, "00"),
        Pdu(C.DELIVER_SM_RESP, 0, 13, {"message_id": b""}),
    ),
    (
        "deliver_sm_resp with no body",
        wire(C.DELIVER_SM_RESP, S.ESME_RX_T_APPN, 14),
        Pdu(C.DELIVER_SM_RESP, S.ESME_RX_T_APPN, 14),
    ),
    (
        "data_sm with message_payload",
        wire(
            C.DATA_SM, 0, 15,
            cstr(""), "0101", cstr("14155550100"), "0101", cstr("18005550000"),
            "00", "00", "00",
            tlv(Tag.MESSAGE_PAYLOAD, b"STOP"),
        ),
        Pdu(
            C.DATA_SM, 0, 15,
            {
                "service_type": b"",
                "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"14155550100",
                "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": b"18005550000",
                "esm_class": 0, "registered_delivery": 0, "data_coding": 0,
            },
            [Tlv(Tag.MESSAGE_PAYLOAD, b"STOP")],
        ),
    ),
    (
        "data_sm_resp",
        wire(C.DATA_SM_RESP, 0, 15, cstr("77")),
        Pdu(C.DATA_SM_RESP, 0, 15, {"message_id": b"77"}),
    ),
    (
        "submit_multi to an SME and a distribution list",
        wire(
            C.SUBMIT_MULTI, 0, 16,
            cstr(""), "0101", cstr("18005550000"),
            "02",  # number_of_dests
            "01", "0101", cstr("14155550100"),  # dest_flag 1: SME address
            "02", cstr("friends"),  # dest_flag 2: distribution list
            "00", "00", "00", cstr(""), cstr(""), "00", "00", "00", "00",
            "02", b"Hi",
        ),
        Pdu(
            C.SUBMIT_MULTI, 0, 16,
            {
                "service_type": b"",
                "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"18005550000",
                "number_of_dests": 2,
                "dest_address": MULTI_DESTS,
                "esm_class": 0, "protocol_id": 0, "priority_flag": 0,
                "schedule_delivery_time": b"", "validity_period": b"",
                "registered_delivery": 0, "replace_if_present_flag": 0, "data_coding": 0,
                "sm_default_msg_id": 0, "sm_length": 2, "short_message": b"Hi",
            },
        ),
    ),
    (
        "submit_multi_resp with one unsuccessful destination",
        wire(
            C.SUBMIT_MULTI_RESP, 0, 16,
            cstr("abc"), "01", "0101", cstr("14155550100"), "00000045",
        ),
        Pdu(
            C.SUBMIT_MULTI_RESP, 0, 16,
            {
                "message_id": b"abc",
                "no_unsuccess": 1,
                "unsuccess_sme": [UnsuccessSme(1, 1, b"14155550100", 0x45)],
            },
        ),
    ),
    (
        "query_sm",
        wire(C.QUERY_SM, 0, 17, cstr("abc"), "0101", cstr("18005550000")),
        Pdu(
            C.QUERY_SM, 0, 17,
            {
                "message_id": b"abc", "source_addr_ton": 1, "source_addr_npi": 1,
                "source_addr": b"18005550000",
            },
        ),
    ),
    (
        "query_sm_resp",
        wire(C.QUERY_SM_RESP, 0, 17, cstr("abc"), cstr("250101120000000+"), "02", "00"),
        Pdu(
            C.QUERY_SM_RESP, 0, 17,
            {
                "message_id": b"abc", "final_date": b"250101120000000+",
                "message_state": 2, "error_code": 0,
            },
        ),
    ),
    (
        "cancel_sm",
        wire(
            C.CANCEL_SM, 0, 18,
            cstr(""), cstr("abc"), "0101", cstr("18005550000"), "0101", cstr("14155550100"),
        ),
        Pdu(
            C.CANCEL_SM, 0, 18,
            {
                "service_type": b"", "message_id": b"abc",
                "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"18005550000",
                "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": b"14155550100",
            },
        ),
    ),
    ("cancel_sm_resp", wire(C.CANCEL_SM_RESP, 0, 18), Pdu(C.CANCEL_SM_RESP, 0, 18)),
    (
        "replace_sm",
        wire(
            C.REPLACE_SM, 0, 19,
            cstr("abc"), "0101", cstr("18005550000"), cstr(""), cstr(""), "01", "00",
            "03", b"New",
        ),
        Pdu(
            C.REPLACE_SM, 0, 19,
            {
                "message_id": b"abc",
                "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"18005550000",
                "schedule_delivery_time": b"", "validity_period": b"",
                "registered_delivery": 1, "sm_default_msg_id": 0,
                "sm_length": 3, "short_message": b"New",
            },
        ),
    ),
    ("replace_sm_resp", wire(C.REPLACE_SM_RESP, 0, 19), Pdu(C.REPLACE_SM_RESP, 0, 19)),
    (
        "alert_notification",
        wire(
            C.ALERT_NOTIFICATION, 0, 20,
            "0101", cstr("14155550100"), "0101", cstr("18005550000"),
            tlv(Tag.MS_AVAILABILITY_STATUS, b"\x00"),
        ),
        Pdu(
            C.ALERT_NOTIFICATION, 0, 20,
            {
                "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"14155550100",
                "esme_addr_ton": 1, "esme_addr_npi": 1, "esme_addr": b"18005550000",
            },
            [Tlv(Tag.MS_AVAILABILITY_STATUS, b"\x00")],
        ),
    ),
    (
        "an unknown command id keeps its body opaque",
        wire(0x00010200, 0, 21, "deadbeef00"),
        Pdu(0x00010200, 0, 21, body=bytes.fromhex("deadbeef00")),
    ),
    (
        "an unknown response id with an empty body",
        wire(0x80010200, 0x400, 21),
        Pdu(0x80010200, 0x400, 21, body=b""),
    ),
]

CASE_IDS = [case[0] for case in CASES]


def test_every_smpp34_command_has_a_case() -> None:
    covered = {pdu.command_id for _, _, pdu in CASES}
    assert set(Command) <= covered


@pytest.mark.parametrize(("name", "raw", "expected"), CASES, ids=CASE_IDS)
def test_decode(name: str, raw: bytes, expected: Pdu) -> None:
    assert decode(raw) == expected


@pytest.mark.parametrize(("name", "raw", "expected"), CASES, ids=CASE_IDS)
def test_encode(name: str, raw: bytes, expected: Pdu) -> None:
    assert encode(expected) == raw


@pytest.mark.parametrize(("name", "raw", "expected"), CASES, ids=CASE_IDS)
def test_frame_one_byte_at_a_time(name: str, raw: bytes, expected: Pdu) -> None:
    reader = FrameReader()
    frames = []
    for i in range(len(raw)):
        reader.feed(raw[i : i + 1])
        frame = reader.next_frame()
        if frame is not None:
            frames.append(frame)
            assert i == len(raw) - 1, "a frame came out before its last byte"
    assert frames == [raw]
    assert reader.buffered == 0
    assert reader.next_frame() is None


@pytest.mark.parametrize(("name", "raw", "expected"), CASES, ids=CASE_IDS)
def test_frame_followed_by_part_of_the_next_pdu(name: str, raw: bytes, expected: Pdu) -> None:
    following = wire(C.ENQUIRE_LINK, 0, 99)
    reader = FrameReader()
    reader.feed(raw + following[:5])
    assert reader.next_frame() == raw
    assert reader.next_frame() is None
    assert reader.buffered == 5
    reader.feed(following[5:])
    assert reader.next_frame() == following
    assert decode(raw) == expected


def test_many_pdus_in_one_chunk_come_out_in_order() -> None:
    stream = b"".join(raw for _, raw, _ in CASES) * 50
    reader = FrameReader()
    reader.feed(stream)
    frames = []
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    assert frames == [raw for _, raw, _ in CASES] * 50
    assert reader.buffered == 0


# --- byte-for-byte relay properties -------------------------------------------


def test_unknown_tlvs_survive_a_decode_encode_round_trip_byte_for_byte() -> None:
    raw = wire(
        C.DELIVER_SM, 0, 5,
        cstr(""), "0101", cstr("14155550100"), "0101", cstr("18005550000"),
        "00", "00", "00", cstr(""), cstr(""), "00", "00", "00", "00", "04", b"STOP",
        tlv(0x1400, b"carrier-specific"), tlv(0x3FFF, b"\x01"), tlv(0x1400, b"again"),
    )
    pdu = decode(raw)
    assert [t.tag for t in pdu.tlvs] == [0x1400, 0x3FFF, 0x1400]
    assert encode(pdu) == raw


def test_rewriting_the_sequence_number_touches_only_bytes_12_to_16() -> None:
    raw = CASES[12][1]
    renumbered = with_sequence(raw, 0x01020304)
    assert renumbered[:12] == raw[:12] and renumbered[16:] == raw[16:]
    assert parse_header(renumbered).sequence_number == 0x01020304


def test_encode_simple_builds_a_bodiless_pdu() -> None:
    raw = encode_simple(C.GENERIC_NACK, S.ESME_RINVCMDLEN, 7)
    assert raw == wire(C.GENERIC_NACK, S.ESME_RINVCMDLEN, 7)
    assert parse_header(raw) == (16, C.GENERIC_NACK, S.ESME_RINVCMDLEN, 7)


# --- building PDUs -------------------------------------------------------------


def test_response_for_answers_with_the_same_sequence_number() -> None:
    submit = decode(CASES[12][1])
    resp = response_for(submit, message_id=b"abc")
    assert resp.command_id == C.SUBMIT_SM_RESP
    assert resp.sequence_number == submit.sequence_number
    assert resp.is_response and not submit.is_response
    assert encode(resp) == wire(C.SUBMIT_SM_RESP, 0, 10, cstr("abc"))


def test_response_for_an_error_is_still_parseable() -> None:
    bind = decode(CASES[0][1])
    resp = response_for(bind, S.ESME_RINVPASWD)
    assert decode(encode(resp)) == Pdu(
        C.BIND_TRANSMITTER_RESP, S.ESME_RINVPASWD, 1, {"system_id": b""}
    )


def test_response_for_refuses_pdus_that_have_no_response() -> None:
    with pytest.raises(ValueError):
        response_for(Pdu(C.GENERIC_NACK))
    with pytest.raises(ValueError):
        response_for(Pdu(C.SUBMIT_SM_RESP))
    with pytest.raises(ValueError):
        response_for(Pdu(C.SUBMIT_SM), bogus=1)


def test_encode_computes_counts_from_what_they_count() -> None:
    pdu = make_pdu(
        C.SUBMIT_MULTI,
        dest_address=[SmeAddress(1, 1, b"14155550100")],
        short_message=b"Hello there",
    )
    back = decode(encode(pdu))
    assert back.get_int("number_of_dests") == 1
    assert back.get_int("sm_length") == 11
    assert back.destinations() == [SmeAddress(1, 1, b"14155550100")]


@pytest.mark.parametrize(
    "params",
    [
        {"source_addr": b"x" * 21},
        {"short_message": b"x" * 256},
        {"esm_class": 256},
        {"source_addr": b"a\x00b"},
    ],
)
def test_encode_rejects_values_that_do_not_fit(params: dict[str, Any]) -> None:
    with pytest.raises(SmppError):
        encode(make_pdu(C.SUBMIT_SM, **params))


def test_get_tlv_returns_the_first_match() -> None:
    pdu = decode(CASES[17][1])
    assert pdu.get_tlv(Tag.MESSAGE_STATE) == b"\x02"
    assert pdu.get_tlv(Tag.MESSAGE_PAYLOAD) is None


def test_receipts_are_told_apart_from_mos_by_the_masked_message_type() -> None:
    assert is_receipt(0x04) and is_receipt(0x44) and is_receipt(0x08)
    assert is_receipt(0x10) and is_receipt(0x20) and is_receipt(0x24)
    assert not is_receipt(0x00) and not is_receipt(0x40) and not is_receipt(0x03)


# --- what goes wrong gets a typed error with its status -----------------------


def submit_body(**fields: bytes) -> list[bytes | str]:
    return [
        fields.get("service_type", cstr("")), "0101",
        fields.get("source_addr", cstr("14155550100")), "0101", cstr("14155550199"),
        "00", "00", "00", cstr(""), cstr(""), "00", "00", "00", "00",
        fields.get("sm", b"\x02Hi"),
    ]


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        pytest.param(
            wire(C.SUBMIT_SM, 0, 1, *submit_body(source_addr=cstr("1" * 21))),
            S.ESME_RINVSRCADR, "source_addr", id="source_addr too long",
        ),
        pytest.param(
            wire(C.BIND_TRANSMITTER, 0, 1, cstr("a" * 16), cstr("pw"), cstr(""), "34000000"),
            S.ESME_RINVSYSID, "system_id", id="system_id too long",
        ),
        pytest.param(
            wire(C.SUBMIT_SM, 0, 1, cstr(""), "0101", b"1415"),
            S.ESME_RINVMSGLEN, "source_addr", id="no NUL before the end",
        ),
        pytest.param(
            wire(C.SUBMIT_SM, 0, 1, cstr(""), "0101"),
            S.ESME_RINVMSGLEN, "source_addr", id="body ends before a field",
        ),
        pytest.param(
            wire(C.SUBMIT_SM, 0, 1, *submit_body(sm=b"\x10Hi")),
            S.ESME_RINVMSGLEN, "short_message", id="sm_length beyond the body",
        ),
        pytest.param(
            wire(C.SUBMIT_SM, 0, 1, *submit_body(), "0424"),
            S.ESME_RINVOPTPARSTREAM, "tlv", id="stray octets after the params",
        ),
        pytest.param(
            wire(C.SUBMIT_SM, 0, 1, *submit_body(), tlv(0x0424, b"STOP")[:-1]),
            S.ESME_RINVOPTPARSTREAM, "tlv 0x0424", id="truncated TLV",
        ),
        pytest.param(
            wire(C.SUBMIT_MULTI, 0, 1, cstr(""), "0101", cstr("1"), "01", "07"),
            S.ESME_RINVDESTFLAG, "dest_flag", id="bad dest_flag",
        ),
        pytest.param(
            wire(C.SUBMIT_MULTI, 0, 1, cstr(""), "0101", cstr("1"), "03", "02", cstr("x")),
            S.ESME_RINVMSGLEN, "dest_address", id="fewer dests than number_of_dests",
        ),
        pytest.param(
            wire(C.ENQUIRE_LINK, 0, 1, "00"),
            S.ESME_RINVOPTPARSTREAM, "tlv", id="enquire_link with a stray octet",
        ),
    ],
)
def test_malformed_bodies_raise_pdu_decode_error_with_a_status(
    raw: bytes, status: int, field: str
) -> None:
    with pytest.raises(PduDecodeError) as info:
        decode(raw)
    assert info.value.command_status == status
    assert info.value.field == field


def test_a_truncated_pdu_is_a_framing_error() -> None:
    raw = CASES[12][1]
    for cut in (0, 3, 15, len(raw) - 1):
        with pytest.raises(FramingError) as info:
            decode(raw[:cut])
        assert info.value.command_status == S.ESME_RINVCMDLEN


def test_a_truncated_pdu_waits_in_the_frame_reader() -> None:
    raw = CASES[12][1]
    reader = FrameReader()
    reader.feed(raw[:-1])
    assert reader.next_frame() is None
    assert reader.buffered == len(raw) - 1


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"\xff\xff\xff\xff", id="command_length 0xFFFFFFFF"),
        pytest.param(struct.pack(">I", 65537), id="one past the maximum"),
        pytest.param(b"\x00\x00\x00\x0f", id="below the 16-byte header"),
        pytest.param(b"\x00\x00\x00\x00", id="zero"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="garbage: an HTTP request"),
    ],
)
def test_an_unframeable_length_fails_as_soon_as_its_four_bytes_arrive(head: bytes) -> None:
    reader = FrameReader(max_length=65536)
    reader.feed(head[:3])
    with pytest.raises(FramingError) as info:
        reader.feed(head[3:])
    assert info.value.command_status == S.ESME_RINVCMDLEN
    assert reader.buffered == 0  # nothing of the oversized PDU is kept
    assert reader.failed
    with pytest.raises(FramingError):  # the stream cannot be resynchronised
        reader.next_frame()


def test_a_bad_length_after_a_good_pdu_is_caught_when_it_reaches_the_head() -> None:
    good = wire(C.ENQUIRE_LINK, 0, 1)
    reader = FrameReader()
    reader.feed(good + b"\xff\xff\xff\xff")
    assert reader.next_frame() == good  # the good PDU in hand is still delivered
    assert reader.failed and reader.buffered == 0
    with pytest.raises(FramingError):
        reader.next_frame()


def test_the_maximum_length_itself_is_accepted() -> None:
    raw = wire(0x00010200, 0, 1, b"\x00" * (1000 - 16))
    reader = FrameReader(max_length=1000)
    reader.feed(raw)
    assert reader.next_frame() == raw


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_fuzz_arbitrary_bytes_only_raise_smpp_errors(data: bytes, chunk: int) -> None:
    reader = FrameReader(max_length=4096)
    try:
        for i in range(0, len(data), chunk):
            reader.feed(data[i : i + chunk])
            while (frame := reader.next_frame()) is not None:
                decode(frame)
    except SmppError:
        pass


KNOWN_IDS = sorted(int(c) for c in Command)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(KNOWN_IDS), st.binary(max_size=120))
def test_fuzz_bodies_decode_to_a_typed_error_or_round_trip_exactly(
    command_id: int, body: bytes
) -> None:
    raw = wire(command_id, 0, 1, body)
    try:
        pdu = decode(raw)
    except PduDecodeError as exc:
        assert exc.command_status != 0
        return
    assert encode(pdu) == raw


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([C.SUBMIT_SM, C.DELIVER_SM]),
    st.binary(max_size=20).filter(lambda b: b"\x00" not in b),
    st.binary(max_size=254),
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=30)), max_size=4),
)
def test_fuzz_built_messages_round_trip(
    command_id: int, addr: bytes, short: bytes, tlvs: list[tuple[int, bytes]]
) -> None:
    pdu = make_pdu(
        command_id,
        sequence_number=5,
        source_addr=addr,
        short_message=short,
        sm_length=len(short),
        tlvs=[Tlv(t, v) for t, v in tlvs],
    )
    assert decode(encode(pdu)) == pdu


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([C.SUBMIT_SM, C.DELIVER_SM]),
    c_octet_string(6), c_octet_string(21), c_octet_string(21), octet_string(254),
    st.lists(st.tuples(st.sampled_from([0x0204, 0x1400, 0x3FFF, 0xFFFF]), octet_string(64)),
             max_size=3),
)
def test_empty_and_maximal_fields_round_trip_byte_by_byte(
    command_id: int, service_type: bytes, source: bytes, dest: bytes, short: bytes,
    tlvs: list[tuple[int, bytes]],
) -> None:
    """Every field empty or at its SMPP 3.4 maximum (service_type 6,
    addresses 21 octets with their NUL, short_message 254): encoded, framed
    one byte at a time and decoded, it is the same PDU."""
    pdu = make_pdu(command_id, sequence_number=0x7FFFFFFF, service_type=service_type,
                   source_addr=source, destination_addr=dest, short_message=short,
                   sm_length=len(short), tlvs=[Tlv(t, v) for t, v in tlvs])
    raw = encode(pdu)
    reader = FrameReader(max_length=4096)
    frames = []
    for byte in raw:
        reader.feed(bytes([byte]))
        if (frame := reader.next_frame()) is not None:
            frames.append(frame)
    assert frames == [raw]
    assert decode(raw) == pdu


@given(st.sampled_from([("service_type", 6), ("source_addr", 21), ("destination_addr", 21)]),
       st.integers(0, 300))
def test_a_field_over_its_maximum_is_a_typed_error(field: tuple[str, int], extra: int) -> None:
    """A C-Octet String of `size` octets or more (no room for its NUL) is
    refused with a typed SMPP error, never encoded."""
    name, size = field
    with pytest.raises(SmppError) as info:
        encode(make_pdu(C.SUBMIT_SM, **{name: b"9" * (size + extra)}))
    assert info.value.command_status != 0


# --- interop with smpplib: its encoder, our decoder and back --------------------


class SmpplibSequence:
    """The little a smpplib PDU needs from a client object."""

    sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def test_smpplib_submit_sm_decodes_with_our_codec() -> None:
    from smpplib import smpp

    theirs = smpp.make_pdu(
        "submit_sm",
        client=SmpplibSequence(),
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="14155550100",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="14155550199",
        short_message=b"Hello",
        data_coding=0,
        registered_delivery=1,
        esm_class=0,
    )
    theirs.sequence = 42
    raw = theirs.generate()
    pdu = decode(raw)
    assert pdu.command_id == C.SUBMIT_SM and pdu.sequence_number == 42
    assert pdu.get_bytes("source_addr") == b"14155550100"
    assert pdu.get_bytes("destination_addr") == b"14155550199"
    assert pdu.get_bytes("short_message") == b"Hello"
    assert pdu.get_int("registered_delivery") == 1
    assert encode(pdu) == raw


def test_our_deliver_sm_parses_in_smpplib() -> None:
    from smpplib import smpp

    ours = make_pdu(
        C.DELIVER_SM,
        sequence_number=7,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=b"14155550100",
        destination_addr=b"18005550000",
        short_message=b"STOP",
        tlvs=[Tlv(Tag.RECEIPTED_MESSAGE_ID, b"abc\x00")],
    )
    theirs = smpp.parse_pdu(encode(ours), client=SmpplibSequence())
    assert theirs.command == "deliver_sm"
    assert theirs.sequence == 7
    assert theirs.short_message == b"STOP"
    assert theirs.source_addr == b"14155550100"
    assert theirs.receipted_message_id == b"abc"


# --- text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_coding", "payload", "udhi", "expected"),
    [
        pytest.param(0, b"STOP", False, "STOP", id="gsm plain"),
        pytest.param(0, b"\x1b\x65 5 \x1b\x28x\x1b\x29 \x1b\x3c\x1b\x3e", False, "€ 5 {x} []",
                     id="gsm extension table"),
        pytest.param(0, b"\x00\x01\x02\x04\x05\x11\x5f\x7f", False, "@£$èé_§à", id="gsm specials"),
        pytest.param(0, b"Arr\x05t", False, "Arrét", id="gsm accent"),
        pytest.param(0, b"x\x1b", False, "x", id="gsm trailing escape"),
        pytest.param(1, b"HELP", False, "HELP", id="ia5"),
        pytest.param(3, "ARRÊT".encode("latin-1"), False, "ARRÊT", id="latin-1"),
        pytest.param(
            8, FULLWIDTH_STOP.encode("utf-16-be"), False, FULLWIDTH_STOP, id="ucs-2 full width"
        ),
        pytest.param(8, "STOP 😀".encode("utf-16-be"), False, "STOP 😀", id="ucs-2 surrogates"),
        pytest.param(8, b"\x00S\x00", False, "S\ufffd", id="ucs-2 odd length"),
        pytest.param(0x18, "STOP".encode("utf-16-be"), False, "STOP", id="gsm dcs ucs2 class 0"),
        pytest.param(0xF0, b"STOP", False, "STOP", id="gsm dcs flash"),
        pytest.param(4, b"\xde\xad", False, "\xde\xad", id="binary as latin-1"),
        pytest.param(0, b"\x05\x00\x03\x2a\x02\x01STOP", True, "STOP", id="udh 8-bit ref"),
        pytest.param(8, b"\x06\x08\x04\x01\x2a\x02\x01" + "Stop".encode("utf-16-be"), True,
                     "Stop", id="udh 16-bit ref + ucs-2"),
        pytest.param(0, b"\xffSTOP", True, "", id="udh length beyond the payload"),
        pytest.param(0, b"", True, "", id="empty with udhi"),
    ],
)
def test_decode_short_message(data_coding: int, payload: bytes, udhi: bool, expected: str) -> None:
    assert decode_short_message(data_coding, payload, udhi=udhi) == expected


def test_data_coding_0_follows_the_configured_default_alphabet() -> None:
    assert decode_short_message(0, b"caf\xe9", udhi=False, default_alphabet="latin-1") == "café"
    assert decode_short_message(0, b"a_b", udhi=False, default_alphabet="ascii") == "a_b"
    assert decode_short_message(0, b"a_b", udhi=False) == "a§b"  # 0x5F is § in GSM 03.38
    assert decode_short_message(0, b"a\x11b", udhi=False) == "a_b"


def test_message_text_honours_message_payload_and_udhi() -> None:
    pdu = make_pdu(
        C.DELIVER_SM,
        data_coding=8,
        tlvs=[Tlv(Tag.MESSAGE_PAYLOAD, FULLWIDTH_STOP.encode("utf-16-be"))],
    )
    assert message_text(pdu) == FULLWIDTH_STOP
    udh = make_pdu(C.DELIVER_SM, esm_class=0x40, short_message=b"\x05\x00\x03\x01\x02\x02stop")
    assert message_text(udh) == "stop"
    data_sm = decode(CASES[20][1])
    assert message_text(data_sm) == "STOP"


def test_concat_info_reads_udh_and_sar_tlvs() -> None:
    assert concat_info(b"\x05\x00\x03\x2a\x03\x02abc", True, []) == (0x2A, 3, 2)
    assert concat_info(b"\x06\x08\x04\x12\x34\x02\x01abc", True, []) == (0x1234, 2, 1)
    sar = [
        Tlv(Tag.SAR_MSG_REF_NUM, b"\x00\x07"),
        Tlv(Tag.SAR_TOTAL_SEGMENTS, b"\x02"),
        Tlv(Tag.SAR_SEGMENT_SEQNUM, b"\x02"),
    ]
    assert concat_info(b"abc", False, sar) == (7, 2, 2)
    assert concat_info(b"abc", False, []) is None
    assert concat_info(b"\x05\x00\x03", True, []) is None  # truncated IE
    assert concat_info(b"\x03\x01\x01\x00abc", True, []) is None  # another IE only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("You are unsubscribed. Reply START to resubscribe.",
         (0, b"You are unsubscribed. Reply START to resubscribe.")),
        ("Cost: €5 {promo}", (0, b"Cost: \x1b\x655 \x1b\x28promo\x1b\x29")),
        ("@home_", (0, b"\x00home\x11")),
        ("Désabonné ✓", (8, "Désabonné ✓".encode("utf-16-be"))),
        ("Bye 👋", (8, "Bye 👋".encode("utf-16-be"))),
    ],
)
def test_encode_reply_text(text: str, expected: tuple[int, bytes]) -> None:
    assert encode_reply_text(text) == expected
    dc, data = encode_reply_text(text)
    assert decode_short_message(dc, data, udhi=False) == text


def test_encode_reply_text_for_ascii_carriers() -> None:
    assert encode_reply_text("Stop_ok", default_alphabet="ascii") == (0, b"Stop_ok")
    assert encode_reply_text("Arrêt", default_alphabet="ascii")[0] == 8
    assert encode_reply_text("Arrêt", default_alphabet="latin-1") == (0, b"Arr\xeat")


# --- the relay's submit_sm fast path ---------------------------------------------


_cstr = c_octet_string(26)  # empty, maximal and over-long (encode refuses those)


@given(
    service_type=_cstr, source=_cstr, dest=_cstr, ton=st.integers(0, 255),
    esm_class=st.integers(0, 255), text=st.binary(max_size=254),
    tlvs=st.lists(st.tuples(st.integers(0x1400, 0x3FFF), st.binary(max_size=8)), max_size=2),
)
def test_peek_submit_sm_agrees_with_decode_or_declines(
    service_type: bytes, source: bytes, dest: bytes, ton: int, esm_class: int, text: bytes,
    tlvs: list[tuple[int, bytes]],
) -> None:
    from gateway.smpp.pdu import peek_submit_sm

    pdu = make_pdu(C.SUBMIT_SM, service_type=service_type[:5], source_addr=source[:20],
                   dest_addr_ton=ton, destination_addr=dest, esm_class=esm_class,
                   short_message=text, tlvs=[Tlv(t, v) for t, v in tlvs])
    try:
        raw = encode(pdu)
    except SmppError:
        return  # destination too long for SMPP: nothing to peek at
    peek = peek_submit_sm(raw)
    plain = not tlvs and not esm_class & 0x40
    assert (peek is not None) == plain
    if peek is not None:
        full = decode(raw)
        assert peek.service_type == full.get_bytes("service_type")
        assert peek.source_addr == full.get_bytes("source_addr")
        assert peek.dest_addr_ton == full.get_int("dest_addr_ton")
        assert peek.destination_addr == full.get_bytes("destination_addr")


def test_peek_declines_truncated_and_garbage() -> None:
    from gateway.smpp.pdu import peek_submit_sm

    raw = encode(make_pdu(C.SUBMIT_SM, destination_addr=b"14155550100", short_message=b"hi"))
    assert peek_submit_sm(raw) is not None
    assert peek_submit_sm(raw[:-1]) is None
    assert peek_submit_sm(raw[:20]) is None
    assert peek_submit_sm(raw[:16] + b"\xff" * 40) is None
