"""Typed SMPP errors, each carrying the command_status it maps to on the wire.

Two families:

* :class:`ProtocolError` and its subclasses are *local*: we detected the
  problem (a PDU we could not frame or decode, a command sent in the wrong
  bind state). ``command_status`` is what we answer the peer with.
* :class:`RemoteError` is *remote*: the peer answered one of our requests
  with a non-zero command_status. ``command_status`` is the peer's code.

Nothing in :mod:`gateway.smpp` lets a bare ``struct.error``, ``IndexError`` or
``UnicodeDecodeError`` escape; callers catch :class:`SmppError` and read
``command_status``, never ``exception.args``.
"""

from __future__ import annotations

from .constants import CommandStatus, command_name, status_name


class SmppError(Exception):
    """Base of every SMPP error. ``command_status`` is the wire code."""

    #: The status used when the caller does not give one.
    default_status: int = CommandStatus.ESME_RUNKNOWNERR

    def __init__(self, message: str, command_status: int | None = None) -> None:
        self.command_status: int = (
            self.default_status if command_status is None else command_status
        )
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} ({status_name(self.command_status)})"


class ProtocolError(SmppError):
    """Something *we* detected about the peer's bytes or behaviour."""

    default_status = CommandStatus.ESME_RSYSERR


class FramingError(ProtocolError):
    """The byte stream cannot be split into PDUs any more: close the session.

    Raised when command_length is below the 16-byte header or above the
    configured maximum. There is no way to find the next PDU boundary, so a
    relay answers generic_nack (ESME_RINVCMDLEN) if it can and disconnects.
    """

    default_status = CommandStatus.ESME_RINVCMDLEN


class PduDecodeError(ProtocolError):
    """A whole PDU arrived but its body is malformed (the stream stays in sync).

    ``field`` names the mandatory parameter or TLV that was bad, where known.
    The session can go on: answer the matching *_resp (or generic_nack) with
    ``command_status``.
    """

    default_status = CommandStatus.ESME_RINVMSGLEN

    def __init__(
        self, message: str, command_status: int | None = None, *, field: str | None = None
    ) -> None:
        super().__init__(message, command_status)
        self.field = field


class PduEncodeError(SmppError, ValueError):
    """A Pdu we were asked to encode does not fit its wire format (a local bug or bad input)."""

    default_status = CommandStatus.ESME_RSYSERR


class UnknownCommand(ProtocolError):
    """A command_id that SMPP 3.4 does not define (answer generic_nack ESME_RINVCMDID)."""

    default_status = CommandStatus.ESME_RINVCMDID

    def __init__(self, command_id: int) -> None:
        super().__init__(f"unknown command_id 0x{command_id:08x}")
        self.command_id = command_id


class SessionStateError(ProtocolError):
    """A PDU that the session's current state does not allow."""

    default_status = CommandStatus.ESME_RINVBNDSTS

    def __init__(self, message: str, command_id: int, state: str) -> None:
        super().__init__(message)
        self.command_id = command_id
        self.state = state


class InvalidBindState(SessionStateError):
    """E.g. submit_sm before bind, submit_sm on a receiver bind (ESME_RINVBNDSTS)."""

    default_status = CommandStatus.ESME_RINVBNDSTS


class AlreadyBound(SessionStateError):
    """A bind on a session that is already bound (ESME_RALYBND)."""

    default_status = CommandStatus.ESME_RALYBND


class RemoteError(SmppError):
    """The peer answered our request with a non-zero command_status."""

    def __init__(self, command_id: int, command_status: int, message: str | None = None) -> None:
        super().__init__(
            message or f"peer answered {command_name(command_id)} with an error",
            command_status,
        )
        self.command_id = command_id
