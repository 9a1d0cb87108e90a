"""The PDU codec field by field against SMPP 3.4 section 4: every C-Octet String's
maximum and the command_status a peer gets when it is exceeded, every integer's
range, truncation anywhere in a body, the TLV stream, submit_multi's lists, and
the Pdu accessors the relay and the enforcer read.

tests/test_smpp_codec.py holds one wire case per command; this file walks the
edges of each field in both directions: what the decoder accepts at the
maximum and refuses one octet later (with the status a client must be
answered with, section 5.1.3), and what the encoder refuses to put on the wire.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import pytest

from gateway.smpp import (
    Command,
    CommandStatus,
    DistributionList,
    FramingError,
    Pdu,
    PduDecodeError,
    PduEncodeError,
    SmeAddress,
    Tag,
    Tlv,
    UnsuccessSme,
    decode,
    encode,
    response_for,
)
from gateway.smpp import pdu as pdu_module
from gateway.smpp.pdu import Destination, default_params, make_pdu, peek_submit_sm
from tests.test_smpp_codec import CASES, cstr, tlv, wire

C = Command
S = CommandStatus

SUBMITS = (C.SUBMIT_SM, C.DELIVER_SM)
BINDS = (C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER)
BIND_RESPS = (C.BIND_TRANSMITTER_RESP, C.BIND_RECEIVER_RESP, C.BIND_TRANSCEIVER_RESP)

# (command, C-Octet String field, its SMPP 3.4 maximum in octets including the
# NUL, the command_status for a longer one). Section 4 gives the sizes; the
# statuses are the section 5.1.3 codes named for each field, ESME_RINVPARLEN
# where none is.
C_OCTET_FIELDS: list[tuple[int, str, int, int]] = [
    *[(c, "system_id", 16, S.ESME_RINVSYSID) for c in (*BINDS, *BIND_RESPS, C.OUTBIND)],
    *[(c, "password", 9, S.ESME_RINVPASWD) for c in (*BINDS, C.OUTBIND)],
    *[(c, "system_type", 13, S.ESME_RINVSYSTYP) for c in BINDS],
    *[(c, "address_range", 41, S.ESME_RINVPARLEN) for c in BINDS],
    *[(c, "service_type", 6, S.ESME_RINVSERTYP)
      for c in (*SUBMITS, C.DATA_SM, C.SUBMIT_MULTI, C.CANCEL_SM)],
    *[(c, "source_addr", 21, S.ESME_RINVSRCADR)
      for c in (*SUBMITS, C.SUBMIT_MULTI, C.QUERY_SM, C.CANCEL_SM, C.REPLACE_SM)],
    *[(c, "source_addr", 65, S.ESME_RINVSRCADR) for c in (C.DATA_SM, C.ALERT_NOTIFICATION)],
    *[(c, "destination_addr", 21, S.ESME_RINVDSTADR) for c in (*SUBMITS, C.CANCEL_SM)],
    (C.DATA_SM, "destination_addr", 65, S.ESME_RINVDSTADR),
    *[(c, "schedule_delivery_time", 17, S.ESME_RINVSCHED)
      for c in (*SUBMITS, C.SUBMIT_MULTI, C.REPLACE_SM)],
    *[(c, "validity_period", 17, S.ESME_RINVEXPIRY)
      for c in (*SUBMITS, C.SUBMIT_MULTI, C.REPLACE_SM)],
    *[(c, "message_id", 65, S.ESME_RINVMSGID)
      for c in (C.SUBMIT_SM_RESP, C.DELIVER_SM_RESP, C.DATA_SM_RESP, C.SUBMIT_MULTI_RESP,
                C.QUERY_SM, C.QUERY_SM_RESP, C.CANCEL_SM, C.REPLACE_SM)],
    (C.QUERY_SM_RESP, "final_date", 17, S.ESME_RINVPARLEN),
    (C.ALERT_NOTIFICATION, "esme_addr", 65, S.ESME_RINVPARLEN),
]
C_OCTET_IDS = [f"{C(c).name.lower()}.{name}" for c, name, _, _ in C_OCTET_FIELDS]

# Every 1-octet integer of every command (section 4), for the range checks.
INT1_FIELDS: list[tuple[int, str]] = [
    *[(c, name) for c in BINDS for name in ("interface_version", "addr_ton", "addr_npi")],
    *[(c, name) for c in SUBMITS for name in (
        "source_addr_ton", "source_addr_npi", "dest_addr_ton", "dest_addr_npi", "esm_class",
        "protocol_id", "priority_flag", "registered_delivery", "replace_if_present_flag",
        "data_coding", "sm_default_msg_id")],
    *[(C.DATA_SM, name) for name in (
        "source_addr_ton", "source_addr_npi", "dest_addr_ton", "dest_addr_npi", "esm_class",
        "registered_delivery", "data_coding")],
    *[(C.QUERY_SM_RESP, name) for name in ("message_state", "error_code")],
    *[(C.ALERT_NOTIFICATION, name) for name in (
        "source_addr_ton", "source_addr_npi", "esme_addr_ton", "esme_addr_npi")],
    *[(C.REPLACE_SM, name) for name in ("registered_delivery", "sm_default_msg_id")],
]


@functools.cache
def _codec_code() -> CodeType:
    """gateway/smpp/pdu.py compiled once per process (exec'd afresh per test).
    The source file, also where the imported module is the mypyc-compiled one."""
    path = str(Path(str(pdu_module.__file__)).with_name("pdu.py"))
    return compile(Path(path).read_bytes(), path, "exec")


def fresh_codec() -> ModuleType:
    """A second, freshly executed copy of gateway.smpp.pdu (not put in sys.modules).

    SCHEMAS is built once, at import, by small helpers (_int1, _cstr, _addr);
    the spec checks below also run on a copy built now, so those helpers are
    tested as they run (mutation testing forks its workers after the import,
    so a broken helper would otherwise never show in the table in use).
    """
    module = ModuleType(pdu_module.__name__)
    module.__file__ = pdu_module.__file__
    module.__package__ = pdu_module.__package__
    exec(_codec_code(), module.__dict__)
    return module


@pytest.fixture(params=["imported", "fresh"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """The codec module in use, and a copy whose tables were built for this test."""
    return pdu_module if request.param == "imported" else fresh_codec()


def with_field(codec: ModuleType, command_id: int, name: str, value: bytes,
               **others: Any) -> bytes:
    """The wire bytes of a `command_id` PDU whose C-Octet String `name` is `value`,
    written by hand (the encoder refuses over-long values): every other field
    holds a marker, so the value's place is found and widened."""
    marker = b"\x7f" * 4
    raw: bytes = codec.encode(codec.make_pdu(command_id, sequence_number=3,
                                             **{name: marker}, **others))
    assert raw.count(marker + b"\x00") == 1
    body = raw[16:].replace(marker + b"\x00", value + b"\x00")
    return struct.pack(">IIII", 16 + len(body), command_id, 0, 3) + body


# --- C-Octet Strings: the maximum is accepted, one more octet is refused --------


@pytest.mark.parametrize(("command_id", "name", "size", "status"), C_OCTET_FIELDS,
                         ids=C_OCTET_IDS)
def test_a_c_octet_string_at_its_maximum_decodes_and_one_octet_more_is_refused_with_its_status(
    codec: ModuleType, command_id: int, name: str, size: int, status: int
) -> None:
    longest = b"7" * (size - 1)
    pdu = codec.decode(with_field(codec, command_id, name, longest))
    assert pdu.params[name] == longest
    assert codec.encode(pdu) == with_field(codec, command_id, name, longest)

    with pytest.raises(PduDecodeError) as info:
        codec.decode(with_field(codec, command_id, name, longest + b"7"))
    assert info.value.command_status == status
    assert info.value.field == name
    assert f"longer than {size - 1} octets" in str(info.value)


@pytest.mark.parametrize(("command_id", "name", "size", "status"), C_OCTET_FIELDS,
                         ids=C_OCTET_IDS)
def test_the_encoder_refuses_a_c_octet_string_that_would_not_fit(
    codec: ModuleType, command_id: int, name: str, size: int, status: int
) -> None:
    text = codec.encode(codec.make_pdu(command_id, **{name: "é" * (size - 1)}))  # as Latin-1
    assert b"\xe9" * (size - 1) + b"\x00" in text
    with pytest.raises(PduEncodeError, match=f"^{name} must be at most {size - 1} octets "
                                             "without NUL"):
        codec.encode(codec.make_pdu(command_id, **{name: b"7" * size}))
    with pytest.raises(PduEncodeError, match=f"^{name} must be at most"):
        codec.encode(codec.make_pdu(command_id, **{name: b"7\x007"}))
    with pytest.raises(PduEncodeError, match=f"^{name} must be bytes, not int"):
        codec.encode(codec.make_pdu(command_id, **{name: 7}))


def test_text_in_a_c_octet_string_is_written_as_latin_1_with_replacement() -> None:
    raw = encode(make_pdu(C.SUBMIT_SM_RESP, message_id="ab\u00e9\u20ac"))  # type: ignore[arg-type]
    assert raw[16:] == b"ab\xe9?\x00"


def test_a_string_cut_by_the_end_of_the_body_is_a_length_error_not_a_field_error() -> None:
    # The body ends 3 octets into a source_addr that may hold 20: the PDU is
    # short (ESME_RINVMSGLEN), the address itself is not known to be too long.
    raw = wire(C.SUBMIT_SM, 0, 1, cstr(""), "0209", b"141")
    with pytest.raises(PduDecodeError) as info:
        decode(raw)
    assert info.value.command_status == S.ESME_RINVMSGLEN
    assert info.value.field == "source_addr"
    assert "submit_sm: source_addr has no NUL terminator before the end" in str(info.value)
    # With exactly 20 octets left and no NUL the address is over-long instead.
    raw = wire(C.SUBMIT_SM, 0, 1, cstr(""), "0209", b"1" * 21)
    with pytest.raises(PduDecodeError) as info:
        decode(raw)
    assert info.value.command_status == S.ESME_RINVSRCADR


# --- truncation: every prefix of a good body is refused ----------------------------


def _schema_cases() -> Iterator[Any]:
    for name, raw, expected in CASES:
        if expected.body is None and raw[16:]:
            yield pytest.param(raw, expected, id=name)


@pytest.mark.parametrize(("raw", "expected"), list(_schema_cases()))
def test_every_prefix_of_the_mandatory_parameters_is_refused_as_too_short(
    codec: ModuleType, raw: bytes, expected: Pdu
) -> None:
    """A peer that sends a PDU cut short inside its mandatory parameters gets
    ESME_RINVMSGLEN, wherever the cut falls; only an empty body of a response
    that may have none is a PDU."""
    params_end = len(encode(Pdu(expected.command_id, params=dict(expected.params))))
    body = raw[16:params_end]
    schema = codec.SCHEMAS[expected.command_id]
    for cut in range(len(body)):
        short = struct.pack(">IIII", 16 + cut, *struct.unpack(">III", raw[4:16])) + body[:cut]
        if cut == 0 and schema.body_optional:
            assert codec.decode(short).params == {}
            continue
        with pytest.raises(PduDecodeError) as info:
            codec.decode(short)
        assert info.value.command_status == S.ESME_RINVMSGLEN, (cut, str(info.value))
        named = {f.name for f in schema.fields} | {"destination_addr", "dl_name",
                                                   "error_status_code"}
        assert info.value.field in named


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        pytest.param(wire(C.SUBMIT_SM, 0, 1, cstr("CMT"), "02"), "source_addr_npi",
                     "submit_sm: body ends before source_addr_npi", id="ton without npi"),
        pytest.param(wire(C.BIND_TRANSMITTER, 0, 1, cstr("a"), cstr("b"), cstr("c"), "34"),
                     "addr_ton", "bind_transmitter: body ends before addr_ton",
                     id="bind without addr_ton"),
        pytest.param(wire(C.QUERY_SM_RESP, 0, 1, cstr("id"), cstr(""), "02"), "error_code",
                     "query_sm_resp: body ends before error_code", id="query_sm_resp"),
        pytest.param(wire(C.REPLACE_SM, 0, 1, cstr("id"), "0209", cstr("1"), cstr(""), cstr(""),
                          "0000", "05", b"abc"),
                     "short_message", "replace_sm: sm_length=5 runs past the body",
                     id="replace_sm sm_length past the end"),
    ],
)
def test_a_truncated_field_is_named_in_the_error(raw: bytes, field: str, message: str) -> None:
    with pytest.raises(PduDecodeError) as info:
        decode(raw)
    assert info.value.command_status == S.ESME_RINVMSGLEN
    assert info.value.field == field
    assert str(info.value).startswith(message)


# --- integers -----------------------------------------------------------------------


@pytest.mark.parametrize(("command_id", "name"), INT1_FIELDS,
                         ids=[f"{C(c).name.lower()}.{n}" for c, n in INT1_FIELDS])
def test_a_one_octet_integer_takes_0_to_255_in_its_own_place(
    codec: ModuleType, command_id: int, name: str
) -> None:
    zero = codec.encode(codec.make_pdu(command_id))
    for value in (0x5A, 255):
        raw = codec.encode(codec.make_pdu(command_id, **{name: value}))
        assert len(raw) == len(zero)
        changed = [i for i in range(len(raw)) if raw[i] != zero[i]]
        assert len(changed) == 1 and raw[changed[0]] == value
        assert codec.decode(raw).params[name] == value
    for bad in (256, -1, b"\x01"):
        with pytest.raises(PduEncodeError, match=f"^{re.escape(f'{name}={bad!r}')} does not "
                                                 "fit one octet"):
            codec.encode(codec.make_pdu(command_id, **{name: bad}))


def test_integers_are_read_in_wire_order_not_swapped() -> None:
    raw = wire(C.DATA_SM, 0, 1, cstr(""), "0209", cstr("1"), "0306", cstr("2"), "43", "11",
               "08")
    params = decode(raw).params
    assert (params["source_addr_ton"], params["source_addr_npi"]) == (2, 9)
    assert (params["dest_addr_ton"], params["dest_addr_npi"]) == (3, 6)
    assert (params["esm_class"], params["registered_delivery"], params["data_coding"]) == (
        0x43, 0x11, 8)


def test_header_fields_must_fit_32_bits() -> None:
    top = encode(Pdu(C.ENQUIRE_LINK, 0xFFFFFFFF, 0xFFFFFFFF))
    assert top == struct.pack(">IIII", 16, C.ENQUIRE_LINK, 0xFFFFFFFF, 0xFFFFFFFF)
    for pdu in (Pdu(C.ENQUIRE_LINK, 0, 1 << 32), Pdu(C.ENQUIRE_LINK, -1, 1),
                Pdu(1 << 32, 0, 1, body=b"")):
        with pytest.raises(PduEncodeError, match=r"^header field out of range: "):
            encode(pdu)


# --- short_message and message_payload ----------------------------------------------


def test_short_message_takes_up_to_255_octets_and_sm_length_follows_it() -> None:
    for size in (0, 1, 254, 255):
        raw = encode(make_pdu(C.SUBMIT_SM, short_message=b"m" * size, sm_length=99))
        assert raw[-size - 1] == size  # sm_length is recomputed, not taken from params
        assert decode(raw).params["short_message"] == b"m" * size
    # sm_length comes first on the wire, so it is the field that overflows.
    with pytest.raises(PduEncodeError, match=r"^sm_length=256 does not fit one octet"):
        encode(make_pdu(C.SUBMIT_SM, short_message=b"m" * 256))
    with pytest.raises(PduEncodeError, match=r"^short_message must be at most 255 octets of bytes"):
        encode(make_pdu(C.SUBMIT_SM, short_message=5))


def test_sm_length_exactly_to_the_end_of_the_body_is_a_message() -> None:
    head: list[bytes | str] = [cstr(""), "0209", cstr("1"), "0306", cstr("2"), "00", "00", "00",
                               cstr(""), cstr(""), "00", "00", "00", "00"]
    pdu = decode(wire(C.SUBMIT_SM, 0, 1, *head, "03", b"abc"))
    assert pdu.params["short_message"] == b"abc" and pdu.tlvs == []
    with pytest.raises(PduDecodeError) as info:
        decode(wire(C.SUBMIT_SM, 0, 1, *head, "04", b"abc"))
    assert info.value.command_status == S.ESME_RINVMSGLEN
    assert info.value.field == "short_message"
    assert str(info.value).startswith("submit_sm: sm_length=4 runs past the body")


# --- TLVs -------------------------------------------------------------------------


ENQUIRE = (C.ENQUIRE_LINK, 0, 1)


@pytest.mark.parametrize(
    ("tlvs", "wire_tlvs"),
    [
        pytest.param([Tlv(0x0000, b"")], "00000000", id="tag 0, empty"),
        pytest.param([Tlv(0xFFFF, b"\x01")], "ffff000101", id="tag 0xffff"),
        pytest.param([Tlv(Tag.MESSAGE_PAYLOAD, b"a" * 300)],
                     "0424012c" + "61" * 300, id="length over one octet"),
        pytest.param([Tlv(0x1400, b"x"), Tlv(0x0204, b"\x00\x01"), Tlv(0x1400, b"y")],
                     "1400000178" "020400020001" "1400000179", id="order and repeats kept"),
    ],
)
def test_tlvs_go_out_and_come_back_as_tag_length_value(tlvs: list[Tlv], wire_tlvs: str) -> None:
    raw = wire(*ENQUIRE, wire_tlvs)
    assert encode(Pdu(*ENQUIRE, tlvs=tlvs)) == raw
    assert decode(raw).tlvs == tlvs


def test_a_tlv_value_of_65535_octets_is_the_largest_that_fits() -> None:
    raw = encode(Pdu(*ENQUIRE, tlvs=[Tlv(0x1400, b"v" * 0xFFFF)]))
    assert raw[16:20] == b"\x14\x00\xff\xff" and len(raw) == 20 + 0xFFFF
    for bad in (Tlv(0x1400, b"v" * 0x10000), Tlv(0x10000, b""), Tlv(-1, b"")):
        with pytest.raises(PduEncodeError, match="does not fit 16-bit tag/length"):
            encode(Pdu(*ENQUIRE, tlvs=[bad]))


@pytest.mark.parametrize(
    ("tail", "field", "message"),
    [
        pytest.param("04", "tlv", "1 stray octets after the last parameter (a TLV needs 4)",
                     id="1 octet"),
        pytest.param("0424", "tlv", "2 stray octets", id="2 octets"),
        pytest.param("042400", "tlv", "3 stray octets", id="3 octets"),
        pytest.param("04240001", "tlv 0x0424", "TLV 0x0424 claims 1 octets, only 0 left",
                     id="header without its value"),
        pytest.param("0424000553544f50", "tlv 0x0424", "TLV 0x0424 claims 5 octets, only 4 left",
                     id="value one octet short"),
        pytest.param("1400000178" "0424", "tlv", "2 stray octets", id="after a good TLV"),
    ],
)
def test_a_broken_tlv_stream_is_refused_with_esme_rinvoptparstream(
    tail: str, field: str, message: str
) -> None:
    with pytest.raises(PduDecodeError) as info:
        decode(wire(*ENQUIRE, tail))
    assert info.value.command_status == S.ESME_RINVOPTPARSTREAM
    assert info.value.field == field
    assert str(info.value).startswith(message)


# --- submit_multi's destination list and submit_multi_resp's unsuccess list --------


MULTI_HEAD: list[bytes | str] = [cstr(""), "0209", cstr("18005550000")]
MULTI_TAIL: list[bytes | str] = ["00", "00", "00", cstr(""), cstr(""), "00", "00", "00", "00",
                                 "02", b"Hi"]


def test_submit_multi_destinations_keep_ton_npi_and_order() -> None:
    raw = wire(C.SUBMIT_MULTI, 0, 1, *MULTI_HEAD, "03",
               "01", "0306", cstr("14155550100"), "02", cstr("friends"),
               "01", "0509", cstr("4"), *MULTI_TAIL)
    dests: list[Destination] = [SmeAddress(3, 6, b"14155550100"), DistributionList(b"friends"),
                                SmeAddress(5, 9, b"4")]
    pdu = decode(raw)
    assert pdu.destinations() == dests
    assert encode(make_pdu(C.SUBMIT_MULTI, sequence_number=1, source_addr_ton=2,
                           source_addr_npi=9, source_addr=b"18005550000", dest_address=dests,
                           short_message=b"Hi")) == raw


def test_submit_multi_with_no_destinations_is_still_a_pdu() -> None:
    raw = wire(C.SUBMIT_MULTI, 0, 1, *MULTI_HEAD, "00", *MULTI_TAIL)
    assert decode(raw).destinations() == []
    assert encode(decode(raw)) == raw


@pytest.mark.parametrize(
    ("dests", "status", "field", "message"),
    [
        pytest.param(["01", "02"], S.ESME_RINVMSGLEN, "dest_address",
                     "submit_multi: body ends before dest_address", id="SME flag, ton, no npi"),
        pytest.param(["01"], S.ESME_RINVMSGLEN, "dest_address",
                     "submit_multi: body ends before dest_address", id="SME flag only"),
        pytest.param(["01", "0209"], S.ESME_RINVMSGLEN, "destination_addr",
                     "submit_multi: destination_addr has no NUL terminator before the end",
                     id="SME flag, ton, npi, no address"),
        pytest.param(["02"], S.ESME_RINVMSGLEN, "dl_name",
                     "submit_multi: dl_name has no NUL terminator before the end",
                     id="list flag, no name"),
        pytest.param(["01", "0209", b"1" * 21, "00"], S.ESME_RINVDSTADR, "destination_addr",
                     "submit_multi: destination_addr longer than 20 octets",
                     id="SME address too long"),
        pytest.param(["02", b"d" * 21, "00"], S.ESME_RINVDLNAME, "dl_name",
                     "submit_multi: dl_name longer than 20 octets", id="list name too long"),
        pytest.param(["00"], S.ESME_RINVDESTFLAG, "dest_flag",
                     "submit_multi: dest_flag 0 is neither 1 (SME) nor 2 (list)", id="flag 0"),
        pytest.param(["03"], S.ESME_RINVDESTFLAG, "dest_flag",
                     "submit_multi: dest_flag 3 is neither", id="flag 3"),
    ],
)
def test_a_bad_destination_is_refused_with_its_status(
    dests: list[bytes | str], status: int, field: str, message: str
) -> None:
    with pytest.raises(PduDecodeError) as info:
        decode(wire(C.SUBMIT_MULTI, 0, 1, *MULTI_HEAD, "01", *dests))
    assert info.value.command_status == status
    assert info.value.field == field
    assert str(info.value).startswith(message)


def test_the_longest_sme_address_and_list_name_are_accepted() -> None:
    raw = wire(C.SUBMIT_MULTI, 0, 1, *MULTI_HEAD, "02", "01", "0209", cstr("1" * 20),
               "02", cstr("d" * 20), *MULTI_TAIL)
    assert decode(raw).destinations() == [SmeAddress(2, 9, b"1" * 20),
                                          DistributionList(b"d" * 20)]
    assert encode(decode(raw)) == raw


def test_the_encoder_refuses_destinations_that_do_not_fit() -> None:
    many = [SmeAddress(1, 1, b"1")] * 255
    raw = encode(make_pdu(C.SUBMIT_MULTI, dest_address=many))
    assert decode(raw).get_int("number_of_dests") == 255
    refused = [
        ([*many, SmeAddress(1, 1, b"1")], r"^number_of_dests=256 does not fit one octet"),
        (b"14155550100", "^dest_address must be a list of at most 255 destinations"),
        ([SmeAddress(256, 1, b"1")], "^dest_address ton/npi must fit one octet"),
        ([SmeAddress(-1, 1, b"1")], "^dest_address ton/npi must fit one octet"),
        ([SmeAddress(1, 256, b"1")], "^dest_address ton/npi must fit one octet"),
        ([SmeAddress(1, -1, b"1")], "^dest_address ton/npi must fit one octet"),
        ([SmeAddress(1, 1, b"1" * 21)], "^destination_addr must be at most 20 octets"),
        ([DistributionList(b"d" * 21)], "^dl_name must be at most 20 octets"),
        ([b"14155550100"], r"^not a destination: b'14155550100'"),
    ]
    for value, message in refused:
        with pytest.raises(PduEncodeError, match=message):
            encode(make_pdu(C.SUBMIT_MULTI, dest_address=value))  # type: ignore[arg-type]
    for edge in (SmeAddress(255, 255, b""), SmeAddress(0, 0, b"")):
        assert decode(encode(make_pdu(C.SUBMIT_MULTI, dest_address=[edge]))).destinations() == [
            edge]


def test_unsuccessful_destinations_keep_every_field() -> None:
    raw = wire(C.SUBMIT_MULTI_RESP, 0, 1, cstr("m1"), "02",
               "0306", cstr("14155550100"), "00000045",
               "0509", cstr("1" * 20), "ffffffff")
    items = [UnsuccessSme(3, 6, b"14155550100", 0x45), UnsuccessSme(5, 9, b"1" * 20, 0xFFFFFFFF)]
    pdu = decode(raw)
    assert pdu.unsuccess_smes() == items
    assert encode(make_pdu(C.SUBMIT_MULTI_RESP, sequence_number=1, message_id=b"m1",
                           unsuccess_sme=items)) == raw


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        pytest.param(["03"], "unsuccess_sme", id="ton only"),
        pytest.param(["0306"], "destination_addr", id="ton and npi, no address"),
        pytest.param(["0306", cstr("1")], "error_status_code", id="no error code"),
        pytest.param(["0306", cstr("1"), "000000"], "error_status_code", id="3 of 4 octets"),
    ],
)
def test_a_truncated_unsuccess_entry_is_refused(entry: list[bytes | str], field: str) -> None:
    with pytest.raises(PduDecodeError) as info:
        decode(wire(C.SUBMIT_MULTI_RESP, 0, 1, cstr("m1"), "01", *entry))
    assert info.value.command_status == S.ESME_RINVMSGLEN
    assert info.value.field == field
    assert str(info.value).startswith(
        f"submit_multi_resp: body ends before {field}" if field != "destination_addr"
        else "submit_multi_resp: destination_addr has no NUL terminator before the end")


def test_the_encoder_refuses_unsuccess_entries_that_do_not_fit() -> None:
    one = UnsuccessSme(1, 1, b"1", 8)
    assert decode(encode(make_pdu(C.SUBMIT_MULTI_RESP, unsuccess_sme=[one] * 255))).get_int(
        "no_unsuccess") == 255
    refused = [
        ([one] * 256, r"^no_unsuccess=256 does not fit one octet"),
        (b"m", "^unsuccess_sme must be a list of at most 255 entries"),
        ([SmeAddress(1, 1, b"1")], r"^not an UnsuccessSme: SmeAddress\(ton=1"),
        ([UnsuccessSme(256, 1, b"1", 0)], "^unsuccess_sme ton/npi must fit one octet"),
        ([UnsuccessSme(-1, 1, b"1", 0)], "^unsuccess_sme ton/npi must fit one octet"),
        ([UnsuccessSme(1, 256, b"1", 0)], "^unsuccess_sme ton/npi must fit one octet"),
        ([UnsuccessSme(1, -1, b"1", 0)], "^unsuccess_sme ton/npi must fit one octet"),
        ([UnsuccessSme(1, 1, b"1", 1 << 32)],
         "^unsuccess_sme error_status_code must fit 4 octets"),
        ([UnsuccessSme(1, 1, b"1", -1)], "^unsuccess_sme error_status_code must fit 4 octets"),
        ([UnsuccessSme(1, 1, b"1" * 21, 0)], "^destination_addr must be at most 20 octets"),
    ]
    for value, message in refused:
        with pytest.raises(PduEncodeError, match=message):
            encode(make_pdu(C.SUBMIT_MULTI_RESP, unsuccess_sme=value))  # type: ignore[arg-type]
    for edge in (UnsuccessSme(255, 255, b"", 0), UnsuccessSme(0, 0, b"", 0xFFFFFFFF)):
        back = decode(encode(make_pdu(C.SUBMIT_MULTI_RESP, unsuccess_sme=[edge])))
        assert back.unsuccess_smes() == [edge]


# --- bodies without a schema, bodiless responses ------------------------------------


def test_an_unknown_command_cannot_be_built_from_params() -> None:
    with pytest.raises(PduEncodeError, match=r"^0x00010200 has no schema; give its body as bytes"):
        encode(Pdu(0x00010200, params={"x": 1}))
    assert encode(Pdu(0x00010200, 0, 2)) == wire(0x00010200, 0, 2)
    assert encode(Pdu(0x00010200, 0, 2, tlvs=[Tlv(0x1400, b"")])) == wire(
        0x00010200, 0, 2, "14000000")


def test_a_response_with_only_tlvs_still_carries_its_mandatory_parameters() -> None:
    pdu = Pdu(C.SUBMIT_SM_RESP, 0, 2, tlvs=[Tlv(0x1400, b"")])
    assert encode(pdu) == wire(C.SUBMIT_SM_RESP, 0, 2, "00", "14000000")
    assert encode(Pdu(C.SUBMIT_SM_RESP, 0, 2)) == wire(C.SUBMIT_SM_RESP, 0, 2)


def test_a_request_with_an_empty_body_is_refused_as_too_short() -> None:
    with pytest.raises(PduDecodeError) as info:
        decode(wire(C.SUBMIT_SM, 0, 1))
    assert info.value.command_status == S.ESME_RINVMSGLEN
    assert info.value.field == "service_type"


# --- the Pdu accessors ----------------------------------------------------------------


def test_the_accessors_read_params_by_type_with_defaults() -> None:
    pdu = make_pdu(C.SUBMIT_SM, source_addr=b"caf\xe9", esm_class=4)
    assert pdu.get_str("source_addr") == "café"
    assert pdu.get_str("esm_class") == "" and pdu.get_str("nothing", "dflt") == "dflt"
    assert pdu.get_bytes("source_addr") == b"caf\xe9"
    assert pdu.get_bytes("esm_class", b"d") == b"d" and pdu.get_bytes("nothing") == b""
    assert pdu.get_int("esm_class") == 4
    assert pdu.get_int("source_addr", 7) == 7 and pdu.get_int("nothing") == 0
    assert pdu.destinations() == [] and pdu.unsuccess_smes() == []


def test_destinations_and_unsuccess_smes_keep_only_their_own_entries() -> None:
    mixed: Any = [SmeAddress(1, 1, b"1"), "junk", DistributionList(b"d"),
                  UnsuccessSme(1, 1, b"2", 8)]
    pdu = Pdu(C.SUBMIT_MULTI, params={"dest_address": mixed, "unsuccess_sme": tuple(mixed)})
    assert pdu.destinations() == [SmeAddress(1, 1, b"1"), DistributionList(b"d")]
    assert pdu.unsuccess_smes() == [UnsuccessSme(1, 1, b"2", 8)]
    assert Pdu(C.SUBMIT_MULTI, params={"dest_address": b"x", "unsuccess_sme": 3}).destinations() \
        == []
    assert Pdu(C.SUBMIT_MULTI_RESP, params={"unsuccess_sme": 3}).unsuccess_smes() == []


def test_set_tlv_replaces_the_first_of_its_tag_in_place_or_appends() -> None:
    pdu = Pdu(C.DELIVER_SM, tlvs=[Tlv(0x1400, b"a"), Tlv(0x0204, b"b"), Tlv(0x0204, b"c")])
    pdu.set_tlv(0x0204, b"B")
    assert pdu.tlvs == [Tlv(0x1400, b"a"), Tlv(0x0204, b"B"), Tlv(0x0204, b"c")]
    pdu.set_tlv(0x0424, b"new")
    assert pdu.tlvs[-1] == Tlv(0x0424, b"new") and len(pdu.tlvs) == 4
    assert pdu.get_tlv(0x0204) == b"B"


def test_message_bytes_prefers_short_message_then_message_payload() -> None:
    payload = Tlv(Tag.MESSAGE_PAYLOAD, b"from the payload")
    assert make_pdu(C.DELIVER_SM, short_message=b"short", tlvs=[payload]).message_bytes() == \
        b"short"
    assert make_pdu(C.DELIVER_SM, tlvs=[payload]).message_bytes() == b"from the payload"
    assert make_pdu(C.DELIVER_SM, tlvs=[Tlv(Tag.MESSAGE_PAYLOAD, b"")]).message_bytes() == b""
    assert make_pdu(C.DELIVER_SM).message_bytes() == b""


def test_a_pdu_names_its_command() -> None:
    assert Pdu(C.SUBMIT_SM).command is C.SUBMIT_SM and Pdu(C.SUBMIT_SM).name == "submit_sm"
    assert Pdu(0x00010200).command is None and not Pdu(0x00010200).is_response
    assert Pdu(C.GENERIC_NACK).is_response


# --- building PDUs and responses --------------------------------------------------------


def test_make_pdu_fills_every_mandatory_parameter_and_refuses_unknown_ones() -> None:
    assert default_params(C.SUBMIT_MULTI_RESP) == {"message_id": b"", "no_unsuccess": 0,
                                                   "unsuccess_sme": []}
    assert default_params(C.SUBMIT_MULTI)["dest_address"] == []
    assert default_params(C.QUERY_SM_RESP) == {"message_id": b"", "final_date": b"",
                                               "message_state": 0, "error_code": 0}
    with pytest.raises(ValueError, match=r"^0x00010200 has no schema$"):
        default_params(0x00010200)
    with pytest.raises(ValueError, match=r"^submit_sm has no parameter\(s\) \['bogus', 'x'\]$"):
        make_pdu(C.SUBMIT_SM, bogus=1, x=2)
    assert encode(make_pdu(C.UNBIND)) == wire(C.UNBIND, 0, 0)  # sequence and status 0
    pdu = make_pdu(C.DATA_SM, sequence_number=9, command_status=3, tlvs=iter([Tlv(1, b"")]),
                   esm_class=1)
    assert (pdu.sequence_number, pdu.command_status, pdu.tlvs) == (9, 3, [Tlv(1, b"")])


@pytest.mark.parametrize("command_id", [C.GENERIC_NACK, C.OUTBIND, C.ALERT_NOTIFICATION,
                                        C.DATA_SM_RESP])
def test_pdus_without_a_response_get_none_built(command_id: int) -> None:
    with pytest.raises(ValueError, match=f"^{C(command_id).name.lower()} has no response PDU$"):
        response_for(Pdu(command_id))


def test_a_response_carries_status_params_and_tlvs() -> None:
    resp = response_for(Pdu(C.DATA_SM, sequence_number=44), S.ESME_RSUBMITFAIL,
                        tlvs=[Tlv(Tag.DELIVERY_FAILURE_REASON, b"\x01")], message_id=b"x")
    assert encode(resp) == wire(C.DATA_SM_RESP, S.ESME_RSUBMITFAIL, 44, cstr("x"),
                                tlv(Tag.DELIVERY_FAILURE_REASON, b"\x01"))


# --- the relay's fast path declines whatever the codec would refuse ----------------------


PEEKED_STRINGS = [(name, size, status) for c, name, size, status in C_OCTET_FIELDS
                  if c == C.SUBMIT_SM]


@pytest.mark.parametrize(("name", "size", "status"), PEEKED_STRINGS,
                         ids=[name for name, _, _ in PEEKED_STRINGS])
def test_peek_reads_a_field_at_its_maximum_and_declines_one_octet_more(
    name: str, size: int, status: int
) -> None:
    """The fast path answers only for what decode accepts; one octet over a
    field's maximum goes to decode, which refuses it with the field's status."""
    others: dict[str, Any] = {"service_type": b"CMT", "source_addr": b"14155550100",
                              "dest_addr_ton": 2, "dest_addr_npi": 9,
                              "destination_addr": b"14155550199", "short_message": b"hi"}
    others.pop(name, None)
    longest = with_field(pdu_module, C.SUBMIT_SM, name, b"7" * (size - 1), **others)
    peek = peek_submit_sm(longest)
    full = decode(longest)
    assert peek is not None
    assert (peek.service_type, peek.source_addr, peek.dest_addr_ton, peek.dest_addr_npi,
            peek.destination_addr) == (full.params["service_type"], full.params["source_addr"],
                                       2, 9, full.params["destination_addr"])

    over = with_field(pdu_module, C.SUBMIT_SM, name, b"7" * size, **others)
    assert peek_submit_sm(over) is None
    with pytest.raises(PduDecodeError) as info:
        decode(over)
    assert info.value.command_status == status


# --- the header and missing parameters ------------------------------------------------


def test_bytes_that_are_not_one_pdu_are_a_framing_error_saying_why() -> None:
    with pytest.raises(FramingError, match=r"^PDU shorter than the 16-byte header \(15 bytes\)"):
        decode(wire(*ENQUIRE)[:15])
    with pytest.raises(FramingError,
                       match=r"^command_length 17 does not match the 16 bytes given"):
        decode(struct.pack(">IIII", 17, C.ENQUIRE_LINK, 0, 1))
    with pytest.raises(FramingError, match=r"^command_length 16 does not match the 17 bytes"):
        decode(wire(*ENQUIRE) + b"\x00")


def test_missing_mandatory_parameters_go_out_as_zero_and_empty() -> None:
    zeros = wire(C.SUBMIT_SM, 0, 4, "00", "0000", "00", "0000", "00", "000000", "00", "00",
                 "00000000", "00")
    assert encode(Pdu(C.SUBMIT_SM, 0, 4)) == zeros
    assert decode(zeros) == make_pdu(C.SUBMIT_SM, sequence_number=4)
    # A list left out is a list of none (it used to be refused as "not a list").
    assert encode(Pdu(C.SUBMIT_MULTI_RESP, 0, 4, {"message_id": b"m"})) == wire(
        C.SUBMIT_MULTI_RESP, 0, 4, cstr("m"), "00")
    assert decode(encode(Pdu(C.SUBMIT_MULTI, 0, 4))).destinations() == []
