"""Splitting a TCP byte stream into SMPP PDUs, and the 16-byte header.

An SMPP PDU starts with a 4-byte big-endian command_length that counts the
whole PDU, header included (SMPP 3.4 section 3.2). That is the only framing
there is, so a command_length we cannot trust (below 16, or larger than we are
willing to buffer) leaves no way to find the next PDU: :class:`FrameReader`
raises :class:`FramingError` and stays failed.

No I/O here: the asyncio side feeds bytes in and takes whole PDUs out. The
relay calls this tens of thousands of times a second, so the reader slices
frames straight out of the chunks it is fed (see :class:`FrameReader`).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from .constants import HEADER_LENGTH, MAX_SEQUENCE, CommandStatus
from .errors import FramingError

# Final: compiled (gateway.speed), a Final name is a C static, where any other
# module global is a dict look-up per use.
_HEADER: Final = struct.Struct(">IIII")
_U32: Final = struct.Struct(">I")
_unpack_header: Final = _HEADER.unpack_from
_unpack_u32: Final = _U32.unpack_from
_pack_u32_into: Final = _U32.pack_into

#: Default cap on one PDU (64 KiB). A 3.4 message_payload TLV can in theory be
#: longer, but no carrier sends that; raise it per listener if one does.
DEFAULT_MAX_LENGTH = 65536


class Header(NamedTuple):
    """The fixed SMPP header (SMPP 3.4 section 3.2)."""

    length: int
    command_id: int
    command_status: int
    sequence_number: int


# Builds a Header from an already unpacked 4-tuple without the NamedTuple's
# Python-level __new__ (the relay makes one per PDU).
_new_tuple: Final = tuple.__new__
# The class itself, Final for the same reason: compiled, `Header` (not a
# native class) would be a module-dict look-up per PDU.
_HEADER_TYPE: Final = Header


def parse_header(raw: bytes | bytearray | memoryview) -> Header:
    """Read the 16-byte header at the start of ``raw``.

    Raises :class:`FramingError` if fewer than 16 bytes are given or
    command_length is below 16.
    """
    if len(raw) < HEADER_LENGTH:
        raise FramingError(f"PDU shorter than the {HEADER_LENGTH}-byte header ({len(raw)} bytes)")
    header = Header(*_HEADER.unpack_from(raw, 0))
    if header.length < HEADER_LENGTH:
        raise FramingError(f"command_length {header.length} is below the header size")
    return header


def make_header(length: int, command_id: int, command_status: int, sequence_number: int) -> bytes:
    """Pack a header. ``length`` counts the whole PDU, header included."""
    return _HEADER.pack(length, command_id, command_status, sequence_number)


def encode_simple(
    command_id: int, command_status: int, sequence_number: int, body: bytes = b""
) -> bytes:
    """A whole PDU from a header and an already-encoded body.

    For bodiless PDUs (enquire_link, unbind, generic_nack, their resps) the
    relay uses this instead of the table-driven encoder.
    """
    header = _HEADER.pack(HEADER_LENGTH + len(body), command_id, command_status, sequence_number)
    return header + body


def with_sequence(raw: bytes, sequence_number: int) -> bytes:
    """``raw`` with only its sequence_number (bytes 12..16) replaced.

    The relay renumbers PDUs per leg without decoding their bodies, which is
    what keeps unknown TLVs and unknown commands intact byte for byte.
    """
    if len(raw) < HEADER_LENGTH:
        raise FramingError(f"PDU shorter than the {HEADER_LENGTH}-byte header ({len(raw)} bytes)")
    return raw[:12] + _U32.pack(sequence_number) + raw[16:]


def renumbered(raw: bytes, sequence_number: int) -> bytearray:
    """:func:`with_sequence` for the relay's write path: one copy, as a
    ``bytearray`` (transports and ``bytes.join`` take it as it is)."""
    out = bytearray(raw)
    _pack_u32_into(out, 12, sequence_number)
    return out

def sequence_of(raw: bytes | bytearray) -> int:
    """The sequence_number of a whole PDU, without parsing anything else."""
    if len(raw) < HEADER_LENGTH:
        raise FramingError(f"PDU shorter than the {HEADER_LENGTH}-byte header ({len(raw)} bytes)")
    return int(_U32.unpack_from(raw, 12)[0])


def command_id_of(raw: bytes | bytearray) -> int:
    """The command_id of a whole PDU, without parsing anything else."""
    if len(raw) < HEADER_LENGTH:
        raise FramingError(f"PDU shorter than the {HEADER_LENGTH}-byte header ({len(raw)} bytes)")
    return int(_U32.unpack_from(raw, 4)[0])


class SequenceCounter:
    """Hands out sequence numbers 1..0x7FFFFFFF and wraps around (SMPP 3.4 section 5.1.4)."""

    __slots__ = ("_next",)

    def __init__(self, start: int = 1) -> None:
        if not 1 <= start <= MAX_SEQUENCE:
            raise ValueError("sequence numbers run from 1 to 0x7FFFFFFF")
        self._next = start

    def next(self) -> int:
        """The next sequence number."""
        value = self._next
        self._next = 1 if value >= MAX_SEQUENCE else value + 1
        return value


class FrameReader:
    """Accumulates stream bytes and yields whole raw PDUs (header included).

    Usage: after every :meth:`feed`, call :meth:`next_frame` until it returns
    ``None``. The reader then never holds more than one partial PDU (at most
    ``max_length`` bytes) plus the last chunk fed.

    A command_length outside ``16..max_length`` raises :class:`FramingError`
    as soon as its 4 bytes are buffered (from :meth:`feed`, or from the
    :meth:`next_frame` call after the last good frame), before any of the body
    is kept; the reader is then failed for good and every later call raises
    the same error.

    How, and why: a read from the socket nearly always holds whole PDUs (a
    window's worth), so a chunk is kept as the ``bytes`` it came in and each
    frame is one slice of it (one copy, none when the chunk is exactly one
    PDU). Only a PDU cut by the end of a read goes into ``_partial``, a
    ``bytearray`` that grows until it holds a whole PDU and then becomes the
    chunk: every byte is copied at most twice however the stream is cut, so a
    PDU trickled in one byte per read costs linear, not quadratic, time.
    """

    __slots__ = ("_data", "_error", "_partial", "_pos", "max_length")

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < HEADER_LENGTH:
            raise ValueError("max_length must allow at least the 16-byte header")
        self.max_length = max_length
        # Whole chunk being read from `_pos` on; empty while `_partial` is not.
        self._data = b""
        self._pos = 0
        # The start of a PDU that is not all here yet.
        self._partial = bytearray()
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet returned as a frame."""
        return len(self._partial) + len(self._data) - self._pos

    @property
    def failed(self) -> bool:
        """True once the stream could not be framed (the session must close)."""
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the stream."""
        if self._error is not None:
            raise self._error
        if not data:
            return
        partial = self._partial
        if not partial and self._pos == len(self._data):
            self._data = bytes(data)  # no copy for bytes, the usual case
            self._pos = 0
        else:
            if self._pos < len(self._data):  # fed again before it was all read
                partial += self._data[self._pos:]
            self._data = b""
            self._pos = 0
            partial += data
            if len(partial) >= 4 and len(partial) >= _unpack_u32(partial, 0)[0]:
                # A whole PDU at last: read on from a chunk again.
                self._data = bytes(partial)
                partial.clear()
        error = self._check_head()
        if error is not None:
            raise error

    def next_frame(self) -> bytes | None:
        """One whole PDU (header included) if one is buffered, else ``None``."""
        item = self.next_pdu()
        return None if item is None else item[1]

    def next_pdu(self) -> tuple[Header, bytes] | None:
        """:meth:`next_frame` with its header already parsed, or ``None``.

        The relay's per-PDU path: the header is read with one unpack from the
        chunk instead of a second pass over the frame.
        """
        if self._error is not None:
            raise self._error
        data = self._data
        pos = self._pos
        available = len(data) - pos
        if available < HEADER_LENGTH:
            # _check_head validated the length: a frame is never shorter than 16.
            if available:
                self._keep_rest()
            return None
        fields = _unpack_header(data, pos)
        length: int = fields[0]
        if available < length:
            self._keep_rest()
            return None
        end = pos + length
        frame = data[pos:end]
        if end == len(data):
            self._data = b""
            self._pos = 0
        else:
            self._pos = end
            # _check_head, inlined for the common case of a good next length.
            if len(data) - end >= 4:
                following: int = _unpack_u32(data, end)[0]
                if following < HEADER_LENGTH or following > self.max_length:
                    self._check_head()
        return _new_tuple(_HEADER_TYPE, fields), frame

    def _keep_rest(self) -> None:
        """Move an incomplete PDU at the end of the chunk into `_partial`."""
        self._partial += self._data[self._pos:]
        self._data = b""
        self._pos = 0

    def _check_head(self) -> FramingError | None:
        """Validate the command_length at the read offset, if its 4 bytes are here.

        On a bad length, record the error and drop the buffers: nothing after
        it can be framed, and an oversized PDU must never be accumulated.
        """
        if self._partial:
            if len(self._partial) < 4:
                return None
            length: int = _unpack_u32(self._partial, 0)[0]
        else:
            if len(self._data) - self._pos < 4:
                return None
            length = _unpack_u32(self._data, self._pos)[0]
        if length < HEADER_LENGTH or length > self.max_length:
            self._error = FramingError(
                f"command_length {length} outside {HEADER_LENGTH}..{self.max_length}",
                CommandStatus.ESME_RINVCMDLEN,
            )
            self._data = b""
            self._pos = 0
            self._partial = bytearray()
            return self._error
        return None
