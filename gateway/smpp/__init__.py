"""The SMPP 3.4 protocol core: framing, PDUs, session state, text, errors.

No sockets and no asyncio here (h11-style): bytes in, PDUs out, PDUs in,
bytes out. The asyncio parts of the gateway only move bytes and arm timers.
"""

from __future__ import annotations

from .constants import (
    ESM_MESSAGE_TYPE_MASK,
    ESM_UDHI,
    RESPONSE_BIT,
    Command,
    CommandStatus,
    MessageState,
    Tag,
    command_label,
    command_name,
    is_receipt,
    status_name,
)
from .errors import (
    AlreadyBound,
    FramingError,
    InvalidBindState,
    PduDecodeError,
    PduEncodeError,
    ProtocolError,
    RemoteError,
    SmppError,
    UnknownCommand,
)
from .framing import (
    FrameReader,
    Header,
    SequenceCounter,
    encode_simple,
    make_header,
    parse_header,
    with_sequence,
)
from .pdu import (
    DistributionList,
    Pdu,
    SmeAddress,
    Tlv,
    UnsuccessSme,
    decode,
    encode,
    make_pdu,
    response_for,
)
from .session import Role, SessionState, SessionStateMachine

__all__ = [
    "ESM_MESSAGE_TYPE_MASK",
    "ESM_UDHI",
    "RESPONSE_BIT",
    "AlreadyBound",
    "Command",
    "CommandStatus",
    "DistributionList",
    "FrameReader",
    "FramingError",
    "Header",
    "InvalidBindState",
    "MessageState",
    "Pdu",
    "PduDecodeError",
    "PduEncodeError",
    "ProtocolError",
    "RemoteError",
    "Role",
    "SequenceCounter",
    "SessionState",
    "SessionStateMachine",
    "SmeAddress",
    "SmppError",
    "Tag",
    "Tlv",
    "UnknownCommand",
    "UnsuccessSme",
    "command_label",
    "command_name",
    "decode",
    "encode",
    "encode_simple",
    "is_receipt",
    "make_header",
    "make_pdu",
    "parse_header",
    "response_for",
    "status_name",
    "with_sequence",
]
