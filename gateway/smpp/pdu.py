"""A generic, table-driven SMPP 3.4 PDU model: ``decode(raw) -> Pdu`` and ``encode(pdu) -> bytes``.

One schema per command (:data:`SCHEMAS`) lists its mandatory parameters in
wire order (SMPP 3.4 section 4); the same table drives both directions, so
the reader and the writer cannot disagree. Everything after the mandatory
parameters is read as TLVs and kept *in order*, unknown tags included, and a
command id with no schema keeps its body as opaque bytes. Hence, for every
PDU that decodes, ``encode(decode(raw)) == raw``: a relay can decode what it
needs to look at and still forward the rest byte for byte.

Representation of mandatory parameters in :attr:`Pdu.params`, keyed by their
spec names:

* Integer fields are ``int`` (SMPP 3.4's mandatory integers are all one
  octet; the 4-octet error_status_code lives inside the unsuccess_sme list).
* C-Octet Strings are ``bytes`` without the NUL terminator.
* ``short_message`` is ``bytes``; its ``sm_length`` is kept on decode and
  recomputed from ``short_message`` on encode (likewise ``number_of_dests``
  and ``no_unsuccess`` from their lists).
* submit_multi's ``dest_address`` is a list of :class:`SmeAddress` /
  :class:`DistributionList`; submit_multi_resp's ``unsuccess_sme`` a list of
  :class:`UnsuccessSme`.

Errors: a malformed body raises :class:`PduDecodeError` carrying the status to
answer with (e.g. ESME_RINVSRCADR for an over-long source_addr); bytes that
are not one PDU raise :class:`FramingError`. Nothing else escapes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple, TypeAlias, final

from .constants import (
    HEADER_LENGTH,
    NO_RESPONSE_COMMANDS,
    RESPONSE_BIT,
    Command,
    CommandStatus,
    Tag,
    command_name,
)
from .errors import FramingError, PduDecodeError, PduEncodeError

_HEADER = struct.Struct(">IIII")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TLV_HEAD = struct.Struct(">HH")

S = CommandStatus


class Tlv(NamedTuple):
    """One optional parameter: tag and raw value (SMPP 3.4 section 3.3)."""

    tag: int
    value: bytes


class SmeAddress(NamedTuple):
    """A submit_multi destination with dest_flag 1 (an SME address)."""

    ton: int
    npi: int
    addr: bytes


class DistributionList(NamedTuple):
    """A submit_multi destination with dest_flag 2 (a distribution list name)."""

    name: bytes


class UnsuccessSme(NamedTuple):
    """One entry of submit_multi_resp's unsuccess_sme list."""

    ton: int
    npi: int
    addr: bytes
    error_status_code: int


Destination: TypeAlias = SmeAddress | DistributionList
ParamValue: TypeAlias = int | bytes | Sequence[Destination] | Sequence[UnsuccessSme]

DEST_FLAG_SME = 1
DEST_FLAG_DISTRIBUTION_LIST = 2


# --- schemas -----------------------------------------------------------------


class Kind(IntEnum):
    """How one mandatory parameter is laid out on the wire."""

    INT1 = 1  # every mandatory integer of SMPP 3.4 section 4 is an Integer(1)
    CSTRING = 10  # NUL-terminated, ``size`` = max octets including the NUL
    OCTETS = 11  # ``length_from`` names the INT1 field holding its length
    DEST_LIST = 12  # submit_multi dest_address, count from number_of_dests
    UNSUCCESS_LIST = 13  # submit_multi_resp unsuccess_sme, count from no_unsuccess


class Field(NamedTuple):
    """One mandatory parameter of a schema."""

    name: str
    kind: Kind
    size: int = 0  # CSTRING: max length including the NUL; OCTETS: max length
    status: int = S.ESME_RINVPARLEN  # what to answer when this field is bad
    length_from: str | None = None  # OCTETS / lists: the field holding the count
    counts: str | None = None  # a count field: the field whose length it holds


@dataclass(frozen=True)
class Schema:
    """The mandatory parameters of one command, in wire order."""

    command: Command
    fields: tuple[Field, ...]
    #: Responses may come back with no body at all (SMPP 3.4 e.g. 4.4.2: "the
    #: submit_sm_resp PDU body is not returned if command_status is non-zero";
    #: several ESMEs also send bodiless deliver_sm_resp).
    body_optional: bool = False


def _int1(name: str, status: int = S.ESME_RINVPARLEN) -> Field:
    return Field(name, Kind.INT1, status=status)


def _cstr(name: str, size: int, status: int = S.ESME_RINVPARLEN) -> Field:
    return Field(name, Kind.CSTRING, size, status)


def _addr(prefix: str, size: int, status: int) -> tuple[Field, ...]:
    """ton, npi, address triple (e.g. source_addr_ton, source_addr_npi, source_addr)."""
    return (
        _int1(f"{prefix}_ton"),
        _int1(f"{prefix}_npi"),
        _cstr(prefix, size, status),
    )


_SOURCE_21 = _addr("source_addr", 21, S.ESME_RINVSRCADR)
_DEST_21 = (
    _int1("dest_addr_ton"),
    _int1("dest_addr_npi"),
    _cstr("destination_addr", 21, S.ESME_RINVDSTADR),
)
_SERVICE_TYPE = _cstr("service_type", 6, S.ESME_RINVSERTYP)
_MESSAGE_ID = _cstr("message_id", 65, S.ESME_RINVMSGID)
_SM_LENGTH = Field("sm_length", Kind.INT1, status=S.ESME_RINVMSGLEN, counts="short_message")
_SHORT_MESSAGE = Field(
    "short_message", Kind.OCTETS, 254, S.ESME_RINVMSGLEN, length_from="sm_length"
)
_MESSAGE_TAIL = (  # submit_sm / deliver_sm / submit_multi after the addresses
    _int1("esm_class", S.ESME_RINVESMCLASS),
    _int1("protocol_id"),
    _int1("priority_flag", S.ESME_RINVPRTFLG),
    _cstr("schedule_delivery_time", 17, S.ESME_RINVSCHED),
    _cstr("validity_period", 17, S.ESME_RINVEXPIRY),
    _int1("registered_delivery", S.ESME_RINVREGDLVFLG),
    _int1("replace_if_present_flag", S.ESME_RINVREPFLAG),
    _int1("data_coding"),
    _int1("sm_default_msg_id", S.ESME_RINVDFTMSGID),
    _SM_LENGTH,
    _SHORT_MESSAGE,
)
_BIND = (
    _cstr("system_id", 16, S.ESME_RINVSYSID),
    _cstr("password", 9, S.ESME_RINVPASWD),
    _cstr("system_type", 13, S.ESME_RINVSYSTYP),
    _int1("interface_version"),
    _int1("addr_ton"),
    _int1("addr_npi"),
    _cstr("address_range", 41),
)
_BIND_RESP = (_cstr("system_id", 16, S.ESME_RINVSYSID),)
_SUBMIT = (_SERVICE_TYPE, *_SOURCE_21, *_DEST_21, *_MESSAGE_TAIL)


def _schemas(*schemas: Schema) -> dict[int, Schema]:
    return {int(s.command): s for s in schemas}


C = Command

#: Command id -> schema of its mandatory parameters (SMPP 3.4 section 4).
SCHEMAS: dict[int, Schema] = _schemas(
    Schema(C.GENERIC_NACK, ()),
    Schema(C.BIND_TRANSMITTER, _BIND),
    Schema(C.BIND_TRANSMITTER_RESP, _BIND_RESP, body_optional=True),
    Schema(C.BIND_RECEIVER, _BIND),
    Schema(C.BIND_RECEIVER_RESP, _BIND_RESP, body_optional=True),
    Schema(C.BIND_TRANSCEIVER, _BIND),
    Schema(C.BIND_TRANSCEIVER_RESP, _BIND_RESP, body_optional=True),
    Schema(
        C.OUTBIND,
        (_cstr("system_id", 16, S.ESME_RINVSYSID), _cstr("password", 9, S.ESME_RINVPASWD)),
    ),
    Schema(C.UNBIND, ()),
    Schema(C.UNBIND_RESP, ()),
    Schema(C.ENQUIRE_LINK, ()),
    Schema(C.ENQUIRE_LINK_RESP, ()),
    Schema(C.SUBMIT_SM, _SUBMIT),
    Schema(C.SUBMIT_SM_RESP, (_MESSAGE_ID,), body_optional=True),
    Schema(C.DELIVER_SM, _SUBMIT),
    Schema(C.DELIVER_SM_RESP, (_MESSAGE_ID,), body_optional=True),
    Schema(
        C.DATA_SM,
        (
            _SERVICE_TYPE,
            *_addr("source_addr", 65, S.ESME_RINVSRCADR),
            _int1("dest_addr_ton"),
            _int1("dest_addr_npi"),
            _cstr("destination_addr", 65, S.ESME_RINVDSTADR),
            _int1("esm_class", S.ESME_RINVESMCLASS),
            _int1("registered_delivery", S.ESME_RINVREGDLVFLG),
            _int1("data_coding"),
        ),
    ),
    Schema(C.DATA_SM_RESP, (_MESSAGE_ID,), body_optional=True),
    Schema(
        C.SUBMIT_MULTI,
        (
            _SERVICE_TYPE,
            *_SOURCE_21,
            Field(
                "number_of_dests", Kind.INT1, status=S.ESME_RINVNUMDESTS, counts="dest_address"
            ),
            Field(
                "dest_address",
                Kind.DEST_LIST,
                status=S.ESME_RINVDESTFLAG,
                length_from="number_of_dests",
            ),
            *_MESSAGE_TAIL,
        ),
    ),
    Schema(
        C.SUBMIT_MULTI_RESP,
        (
            _MESSAGE_ID,
            Field("no_unsuccess", Kind.INT1, counts="unsuccess_sme"),
            Field("unsuccess_sme", Kind.UNSUCCESS_LIST, length_from="no_unsuccess"),
        ),
        body_optional=True,
    ),
    Schema(C.QUERY_SM, (_MESSAGE_ID, *_SOURCE_21)),
    Schema(
        C.QUERY_SM_RESP,
        (
            _MESSAGE_ID,
            _cstr("final_date", 17),
            _int1("message_state"),
            _int1("error_code"),
        ),
        body_optional=True,
    ),
    Schema(C.CANCEL_SM, (_SERVICE_TYPE, _MESSAGE_ID, *_SOURCE_21, *_DEST_21)),
    Schema(C.CANCEL_SM_RESP, ()),
    Schema(
        C.REPLACE_SM,
        (
            _MESSAGE_ID,
            *_SOURCE_21,
            _cstr("schedule_delivery_time", 17, S.ESME_RINVSCHED),
            _cstr("validity_period", 17, S.ESME_RINVEXPIRY),
            _int1("registered_delivery", S.ESME_RINVREGDLVFLG),
            _int1("sm_default_msg_id", S.ESME_RINVDFTMSGID),
            _SM_LENGTH,
            _SHORT_MESSAGE,
        ),
    ),
    Schema(C.REPLACE_SM_RESP, ()),
    Schema(
        C.ALERT_NOTIFICATION,
        (
            *_addr("source_addr", 65, S.ESME_RINVSRCADR),
            _int1("esme_addr_ton"),
            _int1("esme_addr_npi"),
            _cstr("esme_addr", 65),
        ),
    ),
)


# --- the model ---------------------------------------------------------------


@dataclass
class Pdu:
    """One SMPP PDU: header fields, mandatory params by spec name, TLVs in order.

    ``body`` is set by :func:`decode` only for a command id without a schema
    (kept opaque so it can be relayed); when not ``None`` :func:`encode` writes
    it verbatim instead of ``params`` and ``tlvs``.
    """

    command_id: int
    command_status: int = 0
    sequence_number: int = 0
    params: dict[str, ParamValue] = field(default_factory=dict)
    tlvs: list[Tlv] = field(default_factory=list)
    body: bytes | None = None

    @property
    def is_response(self) -> bool:
        """True for *_resp and generic_nack."""
        return bool(self.command_id & RESPONSE_BIT)

    @property
    def command(self) -> Command | None:
        """The command as an enum, or ``None`` for an id SMPP 3.4 does not define."""
        try:
            return Command(self.command_id)
        except ValueError:
            return None

    @property
    def name(self) -> str:
        """The command's spec name, for logs."""
        return command_name(self.command_id)

    def get_tlv(self, tag: int) -> bytes | None:
        """The value of the first TLV with ``tag``, or ``None``."""
        for tlv in self.tlvs:
            if tlv.tag == tag:
                return tlv.value
        return None

    def set_tlv(self, tag: int, value: bytes) -> None:
        """Replace the first TLV with ``tag`` in place, or append one."""
        for i, tlv in enumerate(self.tlvs):
            if tlv.tag == tag:
                self.tlvs[i] = Tlv(tag, value)
                return
        self.tlvs.append(Tlv(tag, value))

    def get_int(self, name: str, default: int = 0) -> int:
        """An integer mandatory parameter (``default`` if absent or not an int)."""
        value = self.params.get(name)
        return value if isinstance(value, int) else default

    def get_bytes(self, name: str, default: bytes = b"") -> bytes:
        """A C-Octet String or octet mandatory parameter (``default`` if absent)."""
        value = self.params.get(name)
        return value if isinstance(value, bytes) else default

    def get_str(self, name: str, default: str = "") -> str:
        """A C-Octet String parameter as text (Latin-1, so it never fails)."""
        value = self.params.get(name)
        return value.decode("latin-1") if isinstance(value, bytes) else default

    def destinations(self) -> list[Destination]:
        """submit_multi's dest_address list (empty for other commands)."""
        value = self.params.get("dest_address")
        if not isinstance(value, list | tuple):
            return []
        return [d for d in value if isinstance(d, SmeAddress | DistributionList)]

    def unsuccess_smes(self) -> list[UnsuccessSme]:
        """submit_multi_resp's unsuccess_sme list (empty for other commands)."""
        value = self.params.get("unsuccess_sme")
        if not isinstance(value, list | tuple):
            return []
        return [u for u in value if isinstance(u, UnsuccessSme)]

    def message_bytes(self) -> bytes:
        """The user data: short_message, or the message_payload TLV when sm_length is 0.

        SMPP 3.4 section 5.3.2.32: message_payload may replace short_message,
        in which case short_message is empty. data_sm only has the TLV.
        """
        short = self.get_bytes("short_message")
        if short:
            return short
        payload = self.get_tlv(Tag.MESSAGE_PAYLOAD)
        return payload if payload is not None else b""


# --- decode ------------------------------------------------------------------


def decode(raw: bytes) -> Pdu:
    """Parse one whole PDU (header included), as returned by ``FrameReader.next_frame``.

    Raises :class:`FramingError` if ``raw`` is not exactly one PDU by its
    command_length, and :class:`PduDecodeError` if the body is malformed.
    """
    n = len(raw)
    if n < HEADER_LENGTH:
        raise FramingError(f"PDU shorter than the {HEADER_LENGTH}-byte header ({n} bytes)")
    length, command_id, status, seq = _HEADER.unpack_from(raw, 0)
    if length != n:
        raise FramingError(f"command_length {length} does not match the {n} bytes given")
    schema = SCHEMAS.get(command_id)
    if schema is None:
        return Pdu(command_id, status, seq, body=bytes(raw[HEADER_LENGTH:]))
    if n == HEADER_LENGTH and schema.body_optional:
        return Pdu(command_id, status, seq)
    params, off = _decode_params(raw, schema, HEADER_LENGTH)
    tlvs = _decode_tlvs(raw, off) if off < n else []
    return Pdu(command_id, status, seq, params, tlvs)


def _decode_params(raw: bytes, schema: Schema, off: int) -> tuple[dict[str, ParamValue], int]:
    n = len(raw)
    params: dict[str, ParamValue] = {}
    for f in schema.fields:
        kind = f.kind
        if kind is Kind.INT1:
            if off >= n:
                raise _truncated(schema, f)
            params[f.name] = raw[off]
            off += 1
        elif kind is Kind.CSTRING:
            params[f.name], off = _read_cstring(raw, off, f, schema)
        elif kind is Kind.OCTETS:
            size = params[f.length_from or ""]
            assert isinstance(size, int)
            if off + size > n:
                raise PduDecodeError(
                    f"{schema.command.name.lower()}: {f.length_from}={size} runs past the body",
                    S.ESME_RINVMSGLEN,
                    field=f.name,
                )
            params[f.name] = bytes(raw[off : off + size])
            off += size
        elif kind is Kind.DEST_LIST:
            count = params[f.length_from or ""]
            assert isinstance(count, int)
            params[f.name], off = _read_dests(raw, off, count, schema)
        else:  # Kind.UNSUCCESS_LIST
            count = params[f.length_from or ""]
            assert isinstance(count, int)
            params[f.name], off = _read_unsuccess(raw, off, count, schema)
    return params, off


def _truncated(schema: Schema, f: Field) -> PduDecodeError:
    return PduDecodeError(
        f"{schema.command.name.lower()}: body ends before {f.name}",
        S.ESME_RINVMSGLEN,
        field=f.name,
    )


def _read_cstring(raw: bytes, off: int, f: Field, schema: Schema) -> tuple[bytes, int]:
    n = len(raw)
    limit = min(off + f.size, n)
    end = raw.find(b"\x00", off, limit)
    if end < 0:
        if limit == n and off + f.size > n:
            raise PduDecodeError(
                f"{schema.command.name.lower()}: {f.name} has no NUL terminator before the end",
                S.ESME_RINVMSGLEN,
                field=f.name,
            )
        raise PduDecodeError(
            f"{schema.command.name.lower()}: {f.name} longer than {f.size - 1} octets",
            f.status,
            field=f.name,
        )
    return bytes(raw[off:end]), end + 1


_ADDR21 = Field("destination_addr", Kind.CSTRING, 21, S.ESME_RINVDSTADR)
_DL_NAME = Field("dl_name", Kind.CSTRING, 21, S.ESME_RINVDLNAME)


def _read_dests(raw: bytes, off: int, count: int, schema: Schema) -> tuple[list[Destination], int]:
    n = len(raw)
    dests: list[Destination] = []
    for _ in range(count):
        if off >= n:
            raise _truncated(schema, Field("dest_address", Kind.DEST_LIST))
        flag = raw[off]
        off += 1
        if flag == DEST_FLAG_SME:
            if off + 2 > n:
                raise _truncated(schema, Field("dest_address", Kind.DEST_LIST))
            ton, npi = raw[off], raw[off + 1]
            addr, off = _read_cstring(raw, off + 2, _ADDR21, schema)
            dests.append(SmeAddress(ton, npi, addr))
        elif flag == DEST_FLAG_DISTRIBUTION_LIST:
            name, off = _read_cstring(raw, off, _DL_NAME, schema)
            dests.append(DistributionList(name))
        else:
            raise PduDecodeError(
                f"submit_multi: dest_flag {flag} is neither 1 (SME) nor 2 (list)",
                S.ESME_RINVDESTFLAG,
                field="dest_flag",
            )
    return dests, off


def _read_unsuccess(
    raw: bytes, off: int, count: int, schema: Schema
) -> tuple[list[UnsuccessSme], int]:
    n = len(raw)
    items: list[UnsuccessSme] = []
    for _ in range(count):
        if off + 2 > n:
            raise _truncated(schema, Field("unsuccess_sme", Kind.UNSUCCESS_LIST))
        ton, npi = raw[off], raw[off + 1]
        addr, off = _read_cstring(raw, off + 2, _ADDR21, schema)
        if off + 4 > n:
            raise _truncated(schema, Field("error_status_code", Kind.UNSUCCESS_LIST))
        code = _U32.unpack_from(raw, off)[0]
        off += 4
        items.append(UnsuccessSme(ton, npi, addr, code))
    return items, off


def _decode_tlvs(raw: bytes, off: int) -> list[Tlv]:
    n = len(raw)
    tlvs: list[Tlv] = []
    while off < n:
        if off + 4 > n:
            raise PduDecodeError(
                f"{n - off} stray octets after the last parameter (a TLV needs 4)",
                S.ESME_RINVOPTPARSTREAM,
                field="tlv",
            )
        tag, size = _TLV_HEAD.unpack_from(raw, off)
        off += 4
        if off + size > n:
            raise PduDecodeError(
                f"TLV 0x{tag:04x} claims {size} octets, only {n - off} left",
                S.ESME_RINVOPTPARSTREAM,
                field=f"tlv 0x{tag:04x}",
            )
        tlvs.append(Tlv(tag, bytes(raw[off : off + size])))
        off += size
    return tlvs


# --- encode ------------------------------------------------------------------


def encode(pdu: Pdu) -> bytes:
    """The wire bytes of ``pdu`` (header included).

    Missing mandatory parameters are written as their zero value (0, an
    empty string or an empty list); count fields (sm_length, number_of_dests, no_unsuccess)
    are computed from what they count. A response whose schema allows an
    empty body and that has neither params nor TLVs is written bodiless.
    Raises :class:`PduEncodeError` for values that do not fit their field.
    """
    if pdu.body is not None:
        body = pdu.body
    else:
        schema = SCHEMAS.get(pdu.command_id)
        parts: list[bytes] = []
        if schema is not None and not (schema.body_optional and not pdu.params and not pdu.tlvs):
            _encode_params(pdu.params, schema, parts)
        elif schema is None and pdu.params:
            raise PduEncodeError(
                f"{command_name(pdu.command_id)} has no schema; give its body as bytes"
            )
        for tlv in pdu.tlvs:
            if not 0 <= tlv.tag <= 0xFFFF or len(tlv.value) > 0xFFFF:
                raise PduEncodeError(f"TLV 0x{tlv.tag:04x} does not fit 16-bit tag/length")
            parts.append(_TLV_HEAD.pack(tlv.tag, len(tlv.value)))
            parts.append(tlv.value)
        body = b"".join(parts)
    try:
        header = _HEADER.pack(
            HEADER_LENGTH + len(body), pdu.command_id, pdu.command_status, pdu.sequence_number
        )
    except struct.error as exc:
        raise PduEncodeError(f"header field out of range: {exc}") from None
    return header + body


def _encode_params(params: dict[str, ParamValue], schema: Schema, parts: list[bytes]) -> None:
    for f in schema.fields:
        kind = f.kind
        if f.counts is not None:
            target = params.get(f.counts, b"")
            value: ParamValue = 0 if isinstance(target, int) else len(target)
        else:
            value = params[f.name] if f.name in params else _zero(kind)
        if kind is Kind.INT1:
            if not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise PduEncodeError(f"{f.name}={value!r} does not fit one octet")
            parts.append(bytes((value,)))
        elif kind is Kind.CSTRING:
            parts.append(_cstring(f, value))
        elif kind is Kind.OCTETS:
            if not isinstance(value, bytes) or len(value) > 255:
                raise PduEncodeError(f"{f.name} must be at most 255 octets of bytes")
            parts.append(value)
        elif kind is Kind.DEST_LIST:
            _encode_dests(value, parts)
        else:
            _encode_unsuccess(value, parts)


def _cstring(f: Field, value: object) -> bytes:
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    if not isinstance(value, bytes):
        raise PduEncodeError(f"{f.name} must be bytes, not {type(value).__name__}")
    if b"\x00" in value or len(value) >= f.size:
        raise PduEncodeError(f"{f.name} must be at most {f.size - 1} octets without NUL")
    return value + b"\x00"


def _encode_dests(value: object, parts: list[bytes]) -> None:
    if not isinstance(value, list | tuple) or len(value) > 255:
        raise PduEncodeError("dest_address must be a list of at most 255 destinations")
    for dest in value:
        if isinstance(dest, SmeAddress):
            if not (0 <= dest.ton <= 255 and 0 <= dest.npi <= 255):
                raise PduEncodeError("dest_address ton/npi must fit one octet")
            parts.append(bytes((DEST_FLAG_SME, dest.ton, dest.npi)))
            parts.append(_cstring(_ADDR21, dest.addr))
        elif isinstance(dest, DistributionList):
            parts.append(bytes((DEST_FLAG_DISTRIBUTION_LIST,)))
            parts.append(_cstring(_DL_NAME, dest.name))
        else:
            raise PduEncodeError(f"not a destination: {dest!r}")


def _encode_unsuccess(value: object, parts: list[bytes]) -> None:
    if not isinstance(value, list | tuple) or len(value) > 255:
        raise PduEncodeError("unsuccess_sme must be a list of at most 255 entries")
    for item in value:
        if not isinstance(item, UnsuccessSme):
            raise PduEncodeError(f"not an UnsuccessSme: {item!r}")
        if not (0 <= item.ton <= 255 and 0 <= item.npi <= 255):
            raise PduEncodeError("unsuccess_sme ton/npi must fit one octet")
        parts.append(bytes((item.ton, item.npi)))
        parts.append(_cstring(_ADDR21, item.addr))
        if not 0 <= item.error_status_code <= 0xFFFFFFFF:
            raise PduEncodeError("unsuccess_sme error_status_code must fit 4 octets")
        parts.append(_U32.pack(item.error_status_code))


# --- building responses --------------------------------------------------------


def default_params(command_id: int) -> dict[str, ParamValue]:
    """Every mandatory parameter of ``command_id`` at its zero value."""
    schema = SCHEMAS.get(command_id)
    if schema is None:
        raise ValueError(f"{command_name(command_id)} has no schema")
    return {f.name: _zero(f.kind) for f in schema.fields}


def _zero(kind: Kind) -> ParamValue:
    """The value of a mandatory parameter left out: 0, no entries or an empty string."""
    if kind is Kind.INT1:
        return 0
    if kind is Kind.DEST_LIST or kind is Kind.UNSUCCESS_LIST:
        return []
    return b""


def make_pdu(
    command_id: int,
    *,
    sequence_number: int = 0,
    command_status: int = 0,
    tlvs: Iterable[Tlv] = (),
    **params: ParamValue,
) -> Pdu:
    """A PDU with every mandatory parameter present (zero unless given).

    Unknown parameter names raise ``ValueError``: a typo would otherwise be
    silently dropped by the encoder.
    """
    full = default_params(command_id)
    unknown = set(params) - set(full)
    if unknown:
        raise ValueError(f"{command_name(command_id)} has no parameter(s) {sorted(unknown)}")
    full.update(params)
    return Pdu(command_id, command_status, sequence_number, full, list(tlvs))


def response_for(
    pdu: Pdu, status: int = 0, *, tlvs: Iterable[Tlv] = (), **params: ParamValue
) -> Pdu:
    """The *_resp matching request ``pdu``: same sequence number, given status and params.

    Raises ``ValueError`` for responses, for requests that have no response
    (generic_nack, outbind, alert_notification) and for unknown commands.
    """
    if pdu.is_response or pdu.command_id in NO_RESPONSE_COMMANDS:
        raise ValueError(f"{pdu.name} has no response PDU")
    return make_pdu(
        pdu.command_id | RESPONSE_BIT,
        sequence_number=pdu.sequence_number,
        command_status=status,
        tlvs=tlvs,
        **params,
    )


# --- a fast path for the relay ----------------------------------------------------


@final
class SubmitPeek:
    """The fields a blocking decision reads from a plain submit_sm.

    A plain class, not a NamedTuple: compiled (gateway.speed), building one
    is a native allocation, where a NamedTuple runs its Python ``__new__``.
    """

    __slots__ = ("dest_addr_npi", "dest_addr_ton", "destination_addr", "service_type",
                 "source_addr")

    def __init__(self, service_type: bytes, source_addr: bytes, dest_addr_ton: int,
                 dest_addr_npi: int, destination_addr: bytes) -> None:
        self.service_type = service_type
        self.source_addr = source_addr
        self.dest_addr_ton = dest_addr_ton
        self.dest_addr_npi = dest_addr_npi
        self.destination_addr = destination_addr


def _nul(raw: bytes, start: int, stop: int) -> int:
    """Where the NUL octet of raw[start:stop] is; ValueError if none."""
    if stop > len(raw):
        stop = len(raw)
    i = start
    while i < stop:
        if raw[i] == 0:
            return i
        i += 1
    raise ValueError("no NUL")


def peek_submit_sm(raw: bytes) -> SubmitPeek | None:
    """The decision's fields of a plain submit_sm, or ``None``.

    The relay decides every submit_sm; a full :func:`decode` builds a dict of
    17 parameters to read four. This walks the C-octet strings with `_nul`
    instead (a plain loop: compiled, it is native code, where ``bytes.index``
    parses its arguments the slow way; in pure Python it costs about a third
    of a microsecond more). It answers only for the common shape (no UDH, no
    TLVs, every field within its SMPP 3.4 size, sm_length ending the PDU
    exactly) and returns ``None`` for anything else, so the caller falls back
    to :func:`decode` and malformed PDUs still get the codec's typed errors.
    """
    n = len(raw)
    try:
        end = _nul(raw, 16, 22)  # service_type, at most 6 octets with NUL
        service_type = raw[16:end]
        off = end + 3  # source_addr_ton, source_addr_npi
        end = _nul(raw, off, off + 21)
        source = raw[off:end]
        off = end + 1
        dest_ton = raw[off]
        dest_npi = raw[off + 1]
        off += 2
        end = _nul(raw, off, off + 21)
        dest = raw[off:end]
        off = end + 1
        if raw[off] & 0x40:  # esm_class UDHI: concatenation needs the full decode
            return None
        off += 3  # esm_class, protocol_id, priority_flag
        off = _nul(raw, off, off + 17) + 1  # schedule_delivery_time
        off = _nul(raw, off, off + 17) + 1  # validity_period
        off += 4  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
        if off + 1 + raw[off] != n:  # TLVs follow, or the length is wrong
            return None
    except (ValueError, IndexError):
        return None
    return SubmitPeek(service_type, source, dest_ton, dest_npi, dest)
