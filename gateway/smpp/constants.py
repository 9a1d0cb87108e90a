"""SMPP 3.4 numbers: command ids, command statuses, TLV tags, esm_class bits.

Values are from the SMPP v3.4 specification (issue 1.2): section 5.1.2.1
(command_id), 5.1.3 (command_status), 5.3.2 (TLV tags), 5.2.12 (esm_class)
and 5.2.28 (message_state). They are IntEnums so that they compare equal to
the raw integers read off the wire and print with their spec names.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

#: Set in the command_id of every response PDU (SMPP 3.4 section 5.1.2.1).
RESPONSE_BIT: Final = 0x80000000

#: The fixed header: command_length, command_id, command_status, sequence_number.
HEADER_LENGTH: Final = 16

#: Sequence numbers run 0x00000001..0x7FFFFFFF (SMPP 3.4 section 5.1.4).
MAX_SEQUENCE: Final = 0x7FFFFFFF


class Command(IntEnum):
    """Every command_id defined by SMPP 3.4 (section 5.1.2.1)."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103

    @property
    def is_response(self) -> bool:
        """True for *_resp commands and generic_nack."""
        return bool(self.value & RESPONSE_BIT)


#: The three bind requests, each mapped to its response.
BIND_COMMANDS: frozenset[Command] = frozenset(
    {Command.BIND_TRANSMITTER, Command.BIND_RECEIVER, Command.BIND_TRANSCEIVER}
)

#: Requests that have no response PDU at all.
NO_RESPONSE_COMMANDS: frozenset[Command] = frozenset(
    {Command.GENERIC_NACK, Command.OUTBIND, Command.ALERT_NOTIFICATION}
)


def command_name(command_id: int) -> str:
    """The spec name of a command id (``submit_sm``), or ``0x...`` if unknown (for logs)."""
    try:
        return Command(command_id).name.lower()
    except ValueError:
        return f"0x{command_id:08x}"


def command_label(command_id: int) -> str:
    """Like :func:`command_name` but every unknown id is ``unknown``.

    Metric labels must come from a bounded set; a peer can send any id.
    """
    try:
        return Command(command_id).name.lower()
    except ValueError:
        return "unknown"


class CommandStatus(IntEnum):
    """SMPP 3.4 command_status values (section 5.1.3)."""

    ESME_ROK = 0x00000000
    ESME_RINVMSGLEN = 0x00000001
    ESME_RINVCMDLEN = 0x00000002
    ESME_RINVCMDID = 0x00000003
    ESME_RINVBNDSTS = 0x00000004
    ESME_RALYBND = 0x00000005
    ESME_RINVPRTFLG = 0x00000006
    ESME_RINVREGDLVFLG = 0x00000007
    ESME_RSYSERR = 0x00000008
    ESME_RINVSRCADR = 0x0000000A
    ESME_RINVDSTADR = 0x0000000B
    ESME_RINVMSGID = 0x0000000C
    ESME_RBINDFAIL = 0x0000000D
    ESME_RINVPASWD = 0x0000000E
    ESME_RINVSYSID = 0x0000000F
    ESME_RCANCELFAIL = 0x00000011
    ESME_RREPLACEFAIL = 0x00000013
    ESME_RMSGQFUL = 0x00000014
    ESME_RINVSERTYP = 0x00000015
    ESME_RINVNUMDESTS = 0x00000033
    ESME_RINVDLNAME = 0x00000034
    ESME_RINVDESTFLAG = 0x00000040
    ESME_RINVSUBREP = 0x00000042
    ESME_RINVESMCLASS = 0x00000043
    ESME_RCNTSUBDL = 0x00000044
    ESME_RSUBMITFAIL = 0x00000045
    ESME_RINVSRCTON = 0x00000048
    ESME_RINVSRCNPI = 0x00000049
    ESME_RINVDSTTON = 0x00000050
    ESME_RINVDSTNPI = 0x00000051
    ESME_RINVSYSTYP = 0x00000053
    ESME_RINVREPFLAG = 0x00000054
    ESME_RINVNUMMSGS = 0x00000055
    ESME_RTHROTTLED = 0x00000058
    ESME_RINVSCHED = 0x00000061
    ESME_RINVEXPIRY = 0x00000062
    ESME_RINVDFTMSGID = 0x00000063
    ESME_RX_T_APPN = 0x00000064
    ESME_RX_P_APPN = 0x00000065
    ESME_RX_R_APPN = 0x00000066
    ESME_RQUERYFAIL = 0x00000067
    ESME_RINVOPTPARSTREAM = 0x000000C0
    ESME_ROPTPARNOTALLWD = 0x000000C1
    ESME_RINVPARLEN = 0x000000C2
    ESME_RMISSINGOPTPARAM = 0x000000C3
    ESME_RINVOPTPARAMVAL = 0x000000C4
    ESME_RDELIVERYFAILURE = 0x000000FE
    ESME_RUNKNOWNERR = 0x000000FF


def status_name(status: int) -> str:
    """The spec name of a command_status (``ESME_RSUBMITFAIL``), or hex if unknown."""
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"0x{status:08x}"


class Tag(IntEnum):
    """Optional parameter (TLV) tags defined by SMPP 3.4 (section 5.3.2)."""

    DEST_ADDR_SUBUNIT = 0x0005
    DEST_NETWORK_TYPE = 0x0006
    DEST_BEARER_TYPE = 0x0007
    DEST_TELEMATICS_ID = 0x0008
    SOURCE_ADDR_SUBUNIT = 0x000D
    SOURCE_NETWORK_TYPE = 0x000E
    SOURCE_BEARER_TYPE = 0x000F
    SOURCE_TELEMATICS_ID = 0x0010
    QOS_TIME_TO_LIVE = 0x0017
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    MS_MSG_WAIT_FACILITIES = 0x0030
    PRIVACY_INDICATOR = 0x0201
    SOURCE_SUBADDRESS = 0x0202
    DEST_SUBADDRESS = 0x0203
    USER_MESSAGE_REFERENCE = 0x0204
    USER_RESPONSE_CODE = 0x0205
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    CALLBACK_NUM_PRES_IND = 0x0302
    CALLBACK_NUM_ATAG = 0x0303
    NUMBER_OF_MESSAGES = 0x0304
    CALLBACK_NUM = 0x0381
    DPF_RESULT = 0x0420
    SET_DPF = 0x0421
    MS_AVAILABILITY_STATUS = 0x0422
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427
    USSD_SERVICE_OP = 0x0501
    DISPLAY_TIME = 0x1201
    SMS_SIGNAL = 0x1203
    MS_VALIDITY = 0x1204
    ALERT_ON_MESSAGE_DELIVERY = 0x130C
    ITS_REPLY_TYPE = 0x1380
    ITS_SESSION_INFO = 0x1383


class MessageState(IntEnum):
    """message_state values (SMPP 3.4 section 5.2.28), as in query_sm_resp and receipts."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


#: The SMPP version this codec speaks (interface_version / sc_interface_version).
INTERFACE_VERSION_34 = 0x34

# --- esm_class (SMPP 3.4 section 5.2.12) -----------------------------------

#: Bits 2-5: the message type (receipt, acks, ...).
ESM_MESSAGE_TYPE_MASK = 0x3C
#: Bit 6: the short message starts with a User Data Header.
ESM_UDHI = 0x40
#: Bit 7: reply path.
ESM_REPLY_PATH = 0x80
#: Bits 0-1: messaging mode (default / datagram / forward / store and forward).
ESM_MESSAGING_MODE_MASK = 0x03

ESM_TYPE_DEFAULT = 0x00
ESM_TYPE_SMSC_DELIVERY_RECEIPT = 0x04
ESM_TYPE_SME_DELIVERY_ACK = 0x08
ESM_TYPE_SME_MANUAL_ACK = 0x10
ESM_TYPE_CONVERSATION_ABORT = 0x20
ESM_TYPE_INTERMEDIATE_NOTIFICATION = 0x24

_RECEIPT_TYPES = frozenset(
    {
        ESM_TYPE_SMSC_DELIVERY_RECEIPT,
        ESM_TYPE_SME_DELIVERY_ACK,
        ESM_TYPE_SME_MANUAL_ACK,
        ESM_TYPE_CONVERSATION_ABORT,
        ESM_TYPE_INTERMEDIATE_NOTIFICATION,
    }
)


def is_receipt(esm_class: int) -> bool:
    """True if a deliver_sm / data_sm with this esm_class is a receipt or ack, not an MO.

    The message type lives in bits 2-5; the other bits (UDHI 0x40, reply
    path 0x80, messaging mode) must be masked off first: 0x44 is a receipt
    carrying a UDH and must not be read as an MO.
    """
    return (esm_class & ESM_MESSAGE_TYPE_MASK) in _RECEIPT_TYPES


def has_udh(esm_class: int) -> bool:
    """True if esm_class says the short message starts with a User Data Header."""
    return bool(esm_class & ESM_UDHI)
