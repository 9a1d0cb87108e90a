"""Hostile SMPP input: a corpus of valid PDUs and the ways to break them.

Used by the codec fuzz (hypothesis draws the mutations) and by the socket
fuzz (a seeded `random.Random` draws them), so both attack with the same
shapes: flipped and overwritten bytes, truncations, lying command_length and
sm_length, garbage TLVs, unknown command ids and plain random bytes.
"""

from __future__ import annotations

import random
import struct

from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command
from gateway.smpp.pdu import DistributionList, SmeAddress, Tlv

_ADDR = {"source_addr_ton": 1, "source_addr_npi": 1, "source_addr": b"18005550100",
         "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": b"14155550123"}


def _corpus() -> list[bytes]:
    make = codec.make_pdu
    pdus = [
        make(Command.BIND_TRANSCEIVER, system_id=b"acme", password=b"secret",
             interface_version=0x34),
        make(Command.BIND_TRANSMITTER, system_id=b"beta", password=b"pw",
             interface_version=0x34),
        make(Command.SUBMIT_SM, short_message=b"hello", **_ADDR),
        make(Command.SUBMIT_SM, esm_class=0x40, data_coding=8,
             short_message=b"\x05\x00\x03\x2a\x02\x01\x00S\x00T\x00O\x00P", **_ADDR),
        make(Command.SUBMIT_SM, short_message=b"", registered_delivery=1,
             tlvs=[Tlv(0x0424, b"payload " * 10), Tlv(0x020C, b"\x00\x07"),
                   Tlv(0x020E, b"\x02"), Tlv(0x020F, b"\x01"), Tlv(0x1401, b"marketing")],
             **_ADDR),
        make(Command.SUBMIT_MULTI, source_addr_ton=1, source_addr_npi=1,
             source_addr=b"18005550100", short_message=b"multi",
             dest_address=[SmeAddress(1, 1, b"14155550123"), DistributionList(b"list")]),
        make(Command.DATA_SM, tlvs=[Tlv(0x0424, b"data")], **_ADDR),
        make(Command.DELIVER_SM, short_message=b"STOP", **_ADDR),
        make(Command.DELIVER_SM, esm_class=0x04,
             short_message=b"id:1 sub:001 dlvrd:001 stat:DELIVRD err:000 text:",
             tlvs=[Tlv(0x001E, b"1\x00"), Tlv(0x0427, b"\x02")], **_ADDR),
        make(Command.QUERY_SM, message_id=b"abc", source_addr=b"18005550100"),
        make(Command.CANCEL_SM, message_id=b"abc", **_ADDR),
        make(Command.REPLACE_SM, message_id=b"abc", source_addr=b"1", short_message=b"x"),
        make(Command.ENQUIRE_LINK),
        make(Command.UNBIND),
        make(Command.GENERIC_NACK, command_status=3),
        make(Command.SUBMIT_SM_RESP, message_id=b"0a1b2c3d"),
        make(Command.ALERT_NOTIFICATION, source_addr=b"1", esme_addr=b"2"),
    ]
    out = []
    for i, pdu in enumerate(pdus, start=1):
        pdu.sequence_number = i
        out.append(codec.encode(pdu))
    return out


CORPUS: list[bytes] = _corpus()

#: Mutation kinds: (kind, position, value) triples are applied in order.
FLIP, SET, TRUNCATE, LENGTH, INSERT, COMMAND, SM_LENGTH, TLV = range(8)
KINDS = 8


def mutate(base: bytes, steps: list[tuple[int, int, int]]) -> bytes:
    """`base` broken by `steps`; the result need not be one PDU any more."""
    data = bytearray(base)
    for kind, pos, value in steps:
        at = pos % (len(data) + 1)
        if kind == FLIP and data:
            data[at % len(data)] ^= 1 << (value % 8)
        elif kind == SET and data:
            data[at % len(data)] = value & 0xFF
        elif kind == TRUNCATE:
            del data[at:]
        elif kind == LENGTH and len(data) >= 4:
            # A lying command_length: near the truth, or wild.
            choices = (len(data) + (value % 9) - 4, value * 257, 0, 15, 16, 0xFFFFFFFF)
            struct.pack_into(">I", data, 0, choices[value % len(choices)] & 0xFFFFFFFF)
        elif kind == INSERT:
            data[at:at] = bytes([value & 0xFF]) * (1 + value % 7)
        elif kind == COMMAND and len(data) >= 8:
            ids = (value, 0x80000000 | value, 0x00010200 + value % 256, 0x7FFFFFFF,
                   0x80000009, 0x00000009, 0x00000021)
            struct.pack_into(">I", data, 4, ids[value % len(ids)] & 0xFFFFFFFF)
        elif kind == SM_LENGTH and len(data) > 17:
            data[at % (len(data) - 16) + 16] = 0xFF  # a length octet claiming too much
        elif kind == TLV:
            tag = (0x0424, 0x020C, 0x1400 + value % 0x100, 0x001E, 0x0427, value)[value % 6]
            data += struct.pack(">HH", tag & 0xFFFF, (value * 31) & 0xFFFF) + b"\x00" * (value % 5)
    return bytes(data)


def framed(data: bytes) -> bytes:
    """`data` with command_length set to its real size (a whole frame), when it
    has a header's room; the socket fuzz sends these, so the stream stays
    framed unless the length is meant to lie."""
    if len(data) < 16:
        data = data + b"\x00" * (16 - len(data))
    return struct.pack(">I", len(data)) + data[4:]


def random_case(rng: random.Random) -> tuple[bytes, bool]:
    """One hostile input for the socket fuzz: (bytes, whether its length lies)."""
    roll = rng.random()
    if roll < 0.1:
        return rng.randbytes(rng.randint(1, 64)), True
    base = rng.choice(CORPUS)
    steps = [(rng.randrange(KINDS), rng.randrange(1 << 16), rng.randrange(256))
             for _ in range(rng.randint(1, 6))]
    data = mutate(base, steps)
    lies = any(kind in (LENGTH, TRUNCATE) for kind, _, _ in steps) and rng.random() < 0.3
    return (data if lies else framed(data)), lies


def random_input(rng: random.Random) -> bytes:
    """One hostile input for the codec fuzz: random bytes, or a corpus PDU
    broken by a few mutations, framed or with whatever length it ended up with."""
    if rng.random() < 0.1:
        return rng.randbytes(rng.randint(0, 200))
    steps = [(rng.randrange(KINDS), rng.randrange(1 << 16), rng.randrange(256))
             for _ in range(rng.randint(1, 6))]
    data = mutate(rng.choice(CORPUS), steps)
    return framed(data) if rng.random() < 0.5 else data
