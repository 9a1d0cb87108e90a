"""Turning SMPP user data into text and back: data_coding, GSM 03.38, UDH, concatenation.

Pure functions, no I/O. Decoding never raises: an MO with odd bytes must
still be read for STOP as well as we can, never dropped on an exception.

SMPP carries GSM 03.38 text *unpacked*: one septet per octet (SMPP 3.4
section 5.2.19, data_coding 0 "SMSC default alphabet"). Some US carriers use
ASCII or Latin-1 as their "default" instead, hence ``default_alphabet``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

from .constants import ESM_UDHI, Tag
from .pdu import Pdu, Tlv

DefaultAlphabet = Literal["gsm0338", "ascii", "latin-1"]

DC_DEFAULT = 0x00
DC_IA5 = 0x01
DC_BINARY_2 = 0x02
DC_LATIN1 = 0x03
DC_BINARY = 0x04
DC_UCS2 = 0x08

# GSM 03.38 default alphabet (3GPP TS 23.038 section 6.2.1), indexed by septet.
# 0x1B is the escape to the extension table; it never decodes to a character.
GSM_DEFAULT_ALPHABET = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(GSM_DEFAULT_ALPHABET) == 128

GSM_ESCAPE = 0x1B

# The extension table (3GPP TS 23.038 section 6.2.1.1): septet after 0x1B -> char.
GSM_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_GSM_ENCODE: dict[str, bytes] = {
    ch: bytes((i,)) for i, ch in enumerate(GSM_DEFAULT_ALPHABET) if i != GSM_ESCAPE
}
_GSM_ENCODE.update({ch: bytes((GSM_ESCAPE, code)) for code, ch in GSM_EXTENSION.items()})


def decode_gsm0338(data: bytes) -> str:
    """Unpacked GSM 03.38 septets (one per octet) to text.

    An escape followed by a septet not in the extension table shows the
    default-table character (TS 23.038: "the MS shall display the character
    from the main default alphabet table"); a trailing escape is dropped.
    Octets above 0x7F are not septets; they are read as Latin-1, which is
    what the carriers that send them mean.
    """
    out: list[str] = []
    i = 0
    n = len(data)
    while i < n:
        octet = data[i]
        i += 1
        if octet == GSM_ESCAPE:
            if i >= n:
                break
            nxt = data[i]
            i += 1
            ext = GSM_EXTENSION.get(nxt)
            if ext is not None:
                out.append(ext)
            elif nxt < 0x80 and nxt != GSM_ESCAPE:
                out.append(GSM_DEFAULT_ALPHABET[nxt])
            elif nxt >= 0x80:
                out.append(chr(nxt))
            else:
                out.append(" ")  # 0x1B 0x1B: reserved for a further extension table
        elif octet < 0x80:
            out.append(GSM_DEFAULT_ALPHABET[octet])
        else:
            out.append(chr(octet))
    return "".join(out)


def encode_gsm0338(text: str) -> bytes | None:
    """Text to unpacked GSM 03.38 septets, or ``None`` if a character is not in it."""
    parts: list[bytes] = []
    for ch in text:
        code = _GSM_ENCODE.get(ch)
        if code is None:
            return None
        parts.append(code)
    return b"".join(parts)


def strip_udh(payload: bytes) -> tuple[bytes, bytes]:
    """Split user data into (UDH including its length octet, the rest).

    A UDH length pointing past the payload means the UDHI bit lied; the
    whole payload is then taken as the UDH so no header bytes are read as text.
    """
    if not payload:
        return b"", b""
    end = 1 + payload[0]
    if end > len(payload):
        return payload, b""
    return payload[:end], payload[end:]


def decode_short_message(
    data_coding: int,
    payload: bytes,
    *,
    udhi: bool,
    default_alphabet: DefaultAlphabet = "gsm0338",
) -> str:
    """The text of an SMS's user data. Never raises.

    ``data_coding`` (SMPP 3.4 section 5.2.19): 0 the SMSC default alphabet
    (``default_alphabet``), 1 IA5/ASCII, 3 Latin-1, 8 UCS-2 big-endian (read as
    UTF-16-BE so surrogate pairs such as emoji survive). Codings we do not
    know, binary included, are read as Latin-1 as a best effort. With
    ``udhi`` the User Data Header is stripped first.
    """
    if udhi:
        _, payload = strip_udh(payload)
    dc = data_coding
    if dc == DC_DEFAULT:
        if default_alphabet == "gsm0338":
            return decode_gsm0338(payload)
        if default_alphabet == "ascii":
            return payload.decode("ascii", "replace")
        return payload.decode("latin-1")
    if dc == DC_IA5:
        return payload.decode("ascii", "replace")
    if dc == DC_UCS2:
        return payload.decode("utf-16-be", "replace")
    # Values above 0x0F are GSM 03.38 data coding schemes (TS 23.038 section 4).
    if 0x10 <= dc <= 0x7F:  # general data coding groups: bits 3-2 name the alphabet
        alphabet = dc & 0x0C
        if alphabet == 0x00:
            return decode_gsm0338(payload)
        if alphabet == 0x08:
            return payload.decode("utf-16-be", "replace")
    elif 0xC0 <= dc <= 0xDF or (dc >= 0xF0 and not dc & 0x04):
        return decode_gsm0338(payload)  # message waiting / class groups, 7-bit
    elif 0xE0 <= dc <= 0xEF:
        return payload.decode("utf-16-be", "replace")  # message waiting, UCS2
    return payload.decode("latin-1")


def message_text(pdu: Pdu, *, default_alphabet: DefaultAlphabet = "gsm0338") -> str:
    """The text of a deliver_sm / submit_sm / data_sm, UDH stripped, message_payload honoured."""
    return decode_short_message(
        pdu.get_int("data_coding"),
        pdu.message_bytes(),
        udhi=bool(pdu.get_int("esm_class") & ESM_UDHI),
        default_alphabet=default_alphabet,
    )


class ConcatInfo(NamedTuple):
    """Which part of a concatenated message this is."""

    ref: int
    total: int
    seq: int


def concat_info(short_message: bytes, udhi: bool, tlvs: Iterable[Tlv]) -> ConcatInfo | None:
    """(ref, total, seq) of a concatenated message part, or ``None`` if not one.

    Reads the UDH information elements 0x00 (8-bit reference) and 0x08
    (16-bit reference) when ``udhi``, else the sar_msg_ref_num /
    sar_total_segments / sar_segment_seqnum TLVs. Malformed headers give
    ``None`` rather than an error.
    """
    if udhi:
        udh, _ = strip_udh(short_message)
        found = _concat_from_udh(udh)
        if found is not None:
            return found
    ref = total = seq = None
    for tlv in tlvs:
        if tlv.tag == Tag.SAR_MSG_REF_NUM and len(tlv.value) == 2:
            ref = int.from_bytes(tlv.value, "big")
        elif tlv.tag == Tag.SAR_TOTAL_SEGMENTS and len(tlv.value) == 1:
            total = tlv.value[0]
        elif tlv.tag == Tag.SAR_SEGMENT_SEQNUM and len(tlv.value) == 1:
            seq = tlv.value[0]
    if ref is None or total is None or seq is None or total == 0:
        return None
    return ConcatInfo(ref, total, seq)


def _concat_from_udh(udh: bytes) -> ConcatInfo | None:
    i = 1  # skip the UDH length octet
    n = len(udh)
    while i + 2 <= n:
        iei, iedl = udh[i], udh[i + 1]
        data = udh[i + 2 : i + 2 + iedl]
        if len(data) < iedl:
            return None
        if iei == 0x00 and iedl == 3 and data[1] != 0:
            return ConcatInfo(data[0], data[1], data[2])
        if iei == 0x08 and iedl == 4 and data[2] != 0:
            return ConcatInfo(int.from_bytes(data[0:2], "big"), data[2], data[3])
        i += 2 + iedl
    return None


def encode_reply_text(
    text: str, *, default_alphabet: DefaultAlphabet = "gsm0338"
) -> tuple[int, bytes]:
    """(data_coding, user data) for a reply the sidecar sends itself.

    Data coding 0 when every character fits the SMSC default alphabet (GSM
    03.38 unpacked, extension characters escaped; or ASCII / Latin-1 for
    carriers configured so), else UCS-2 (data_coding 8, UTF-16-BE).
    """
    if default_alphabet == "gsm0338":
        gsm = encode_gsm0338(text)
        if gsm is not None:
            return DC_DEFAULT, gsm
    else:
        codec = "ascii" if default_alphabet == "ascii" else "latin-1"
        try:
            return DC_DEFAULT, text.encode(codec)
        except UnicodeEncodeError:
            pass
    return DC_UCS2, text.encode("utf-16-be", "surrogatepass")
