"""SMPP session state: which PDU may be sent or received in which bind state.

Theory of operation
-------------------

An SMPP session (SMPP 3.4 section 2.2) has two ends with different roles:
the ESME (an application: our senders, or the sidecar itself toward the
carrier) and the SMSC (the carrier, or the sidecar toward its senders). A
listener session of the sidecar plays the SMSC; an upstream session plays
the ESME. Both ends of a session walk through the same states:

    OPEN ──bind_resp OK──> BOUND_TX | BOUND_RX | BOUND_TRX ──unbind──> UNBOUND ──> CLOSED
      │                                                                 ▲
      └──────────────────── connection lost / closed ──────────────────┘

* OPEN: connected, not bound. Only binds (ESME → SMSC), outbind
  (SMSC → ESME), enquire_link and generic_nack may pass. A bind request
  does not change the state by itself; the owner calls :meth:`bound` once a
  bind_resp with ESME_ROK has been sent (SMSC) or received (ESME). A failed
  bind leaves the session OPEN, so the ESME may try again.
* BOUND_TX / BOUND_RX / BOUND_TRX: what may flow depends on the bind type
  (SMPP 3.4 table 2-1..2-3): a transmitter may submit (submit_sm,
  submit_multi, data_sm, query_sm, cancel_sm, replace_sm) and gets their
  responses; a receiver gets deliver_sm, data_sm and alert_notification and
  answers them; a transceiver does both.
* UNBOUND: an unbind was sent or received. No new requests may start; the
  responses still owed for requests in flight (and the unbind_resp itself)
  may still pass, as the spec asks each end to answer outstanding requests.
  Crossing unbinds (both ends unbind at once) are allowed.
* CLOSED: the connection is gone; nothing passes.

The rules live in one explicit table, :data:`TRANSITIONS`, keyed by
``(state, sender role, command)`` and giving the next state. "Sender role"
is whoever emits the PDU, so the same table answers both "may I send this?"
(sender = my role) and "may the peer send me this?" (sender = the peer's
role). **A missing entry is the error**: :class:`InvalidBindState`
(ESME_RINVBNDSTS), or :class:`AlreadyBound` (ESME_RALYBND) for a bind on a
bound session, or :class:`UnknownCommand` (ESME_RINVCMDID) for a command id
SMPP 3.4 does not define. The caller answers the peer with the error's
``command_status`` (a *_resp, or generic_nack where there is none).

The machine is pure: no I/O, no clock. Timers (enquire_link, response
timeouts) belong to the asyncio adapter around it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from .constants import BIND_COMMANDS, RESPONSE_BIT, Command, command_name
from .errors import AlreadyBound, InvalidBindState, UnknownCommand


class SessionState(Enum):
    """Where one end of an SMPP session is (see the module docstring)."""

    OPEN = "open"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBOUND = "unbound"
    CLOSED = "closed"


class Role(Enum):
    """Which end of the session we are."""

    SMSC = "smsc"  # the sidecar's listener toward senders; the carrier
    ESME = "esme"  # the sidecar's upstream leg toward the carrier; senders

    @property
    def peer(self) -> Role:
        """The role at the other end."""
        return Role.ESME if self is Role.SMSC else Role.SMSC


ST = SessionState
C = Command
ESME = Role.ESME
SMSC = Role.SMSC

BOUND_STATES = frozenset({ST.BOUND_TX, ST.BOUND_RX, ST.BOUND_TRX})

#: The bound state each bind command (or its resp) leads to.
BIND_STATE: dict[int, SessionState] = {
    C.BIND_TRANSMITTER: ST.BOUND_TX,
    C.BIND_TRANSMITTER_RESP: ST.BOUND_TX,
    C.BIND_RECEIVER: ST.BOUND_RX,
    C.BIND_RECEIVER_RESP: ST.BOUND_RX,
    C.BIND_TRANSCEIVER: ST.BOUND_TRX,
    C.BIND_TRANSCEIVER_RESP: ST.BOUND_TRX,
}

Key = tuple[SessionState, Role, Command]


def _allow(
    table: dict[Key, SessionState],
    states: Iterable[SessionState],
    sender: Role,
    commands: Iterable[Command],
    next_state: SessionState | None = None,
) -> None:
    """Add rows: in each of ``states``, ``sender`` may emit each of ``commands``."""
    for state in states:
        for command in commands:
            table[(state, sender, command)] = next_state or state


def _build() -> dict[Key, SessionState]:
    t: dict[Key, SessionState] = {}
    tx_side = (ST.BOUND_TX, ST.BOUND_TRX)  # the ESME may submit
    rx_side = (ST.BOUND_RX, ST.BOUND_TRX)  # the SMSC may deliver
    both = (ESME, SMSC)

    # OPEN: binding (SMPP 3.4 section 4.1). The bind_resp is emitted in OPEN;
    # the owner then calls bound().
    _allow(t, [ST.OPEN], ESME, [C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER])
    _allow(
        t,
        [ST.OPEN],
        SMSC,
        [C.BIND_TRANSMITTER_RESP, C.BIND_RECEIVER_RESP, C.BIND_TRANSCEIVER_RESP, C.OUTBIND],
    )

    # Link upkeep: enquire_link in OPEN too (SMPP 5.0 allows it and some
    # ESMEs probe before binding); generic_nack whenever a PDU can flow.
    for sender in both:
        _allow(t, [ST.OPEN, *BOUND_STATES], sender, [C.ENQUIRE_LINK])
        _allow(t, [ST.OPEN, *BOUND_STATES, ST.UNBOUND], sender, [C.ENQUIRE_LINK_RESP])
        _allow(t, [ST.OPEN, *BOUND_STATES, ST.UNBOUND], sender, [C.GENERIC_NACK])

    # Transmitter traffic: ESME requests, SMSC responses (SMPP 3.4 section 4.4-4.10).
    tx_requests = [C.SUBMIT_SM, C.SUBMIT_MULTI, C.DATA_SM, C.QUERY_SM, C.CANCEL_SM, C.REPLACE_SM]
    tx_responses = [
        C.SUBMIT_SM_RESP,
        C.SUBMIT_MULTI_RESP,
        C.DATA_SM_RESP,
        C.QUERY_SM_RESP,
        C.CANCEL_SM_RESP,
        C.REPLACE_SM_RESP,
    ]
    _allow(t, tx_side, ESME, tx_requests)
    _allow(t, [*tx_side, ST.UNBOUND], SMSC, tx_responses)

    # Receiver traffic: SMSC requests, ESME responses (section 4.6, 4.7, 4.12).
    _allow(t, rx_side, SMSC, [C.DELIVER_SM, C.DATA_SM, C.ALERT_NOTIFICATION])
    _allow(t, [*rx_side, ST.UNBOUND], ESME, [C.DELIVER_SM_RESP, C.DATA_SM_RESP])

    # Unbinding (section 4.2): either end, from any bound state; crossing unbinds.
    for sender in both:
        _allow(t, BOUND_STATES, sender, [C.UNBIND], ST.UNBOUND)
        _allow(t, [ST.UNBOUND], sender, [C.UNBIND])
        _allow(t, [ST.UNBOUND], sender, [C.UNBIND_RESP])
    return t


#: (state, role of the PDU's sender, command) -> next state. A missing key is an error.
TRANSITIONS: dict[Key, SessionState] = _build()


def _by_state() -> dict[tuple[SessionState, Role], dict[int, SessionState]]:
    """TRANSITIONS split by (state, sender) into plain-int tables: the per-PDU
    look-up then hashes one int instead of a tuple of two enum members (whose
    __hash__ is Python code)."""
    tables: dict[tuple[SessionState, Role], dict[int, SessionState]] = {
        (state, role): {} for state in SessionState for role in Role
    }
    for (state, role, command), next_state in TRANSITIONS.items():
        tables[(state, role)][int(command)] = next_state
    return tables


_BY_STATE = _by_state()


class SessionStateMachine:
    """One end of an SMPP session: checks every PDU against :data:`TRANSITIONS`.

    Call :meth:`receive` for each PDU read and :meth:`send` before each PDU
    written; both raise a typed :class:`~gateway.smpp.errors.SmppError`
    whose ``command_status`` is the answer to give, and leave the state
    unchanged when they do.
    """

    __slots__ = ("_peer", "_rx_state", "_rx_table", "bind_command", "role", "state")

    def __init__(self, role: Role) -> None:
        self.role = role
        self._peer = role.peer
        # receive()'s table for the state it last saw (re-fetched when it changes).
        self._rx_state: SessionState | None = None
        self._rx_table: dict[int, SessionState] = {}
        self.state = SessionState.OPEN
        #: The bind request that bound this session, once bound.
        self.bind_command: Command | None = None

    def __repr__(self) -> str:
        return f"<SessionStateMachine {self.role.value} {self.state.value}>"

    @property
    def is_bound(self) -> bool:
        """True in BOUND_TX, BOUND_RX and BOUND_TRX."""
        return self.state in BOUND_STATES

    @property
    def can_transmit(self) -> bool:
        """True if the ESME end may submit (bound TX or TRX)."""
        return self.state in (ST.BOUND_TX, ST.BOUND_TRX)

    @property
    def can_receive(self) -> bool:
        """True if the SMSC end may deliver (bound RX or TRX)."""
        return self.state in (ST.BOUND_RX, ST.BOUND_TRX)

    def receive(self, command_id: int) -> SessionState:
        """The peer sent us ``command_id``: check it and move on. Returns the new state."""
        # Fast path, once per relayed PDU: the TRANSITIONS rows of the current
        # state, keyed by plain int, so no Command is constructed and no enum
        # hashed. A miss (an error, or an unknown id) takes _step for the
        # typed error, exactly as before.
        state = self.state
        if state is not self._rx_state:
            self._rx_table = _BY_STATE[(state, self._peer)]
            self._rx_state = state
        next_state = self._rx_table.get(command_id)
        if next_state is None:
            return self._step(self._peer, command_id, "receive")
        self.state = next_state
        return next_state

    def send(self, command_id: int) -> SessionState:
        """We are about to send ``command_id``: check it and move on. Returns the new state."""
        return self._step(self.role, command_id, "send")

    def may_receive(self, command_id: int) -> bool:
        """Whether :meth:`receive` would accept ``command_id`` now (no state change)."""
        return _lookup(self.state, self.role.peer, command_id) is not None

    def may_send(self, command_id: int) -> bool:
        """Whether :meth:`send` would accept ``command_id`` now (no state change)."""
        return _lookup(self.state, self.role, command_id) is not None

    def bound(self, bind_command: int) -> SessionState:
        """A bind succeeded (its bind_resp carried ESME_ROK): enter the bound state.

        ``bind_command`` is the bind request or its resp. Only valid from OPEN.
        """
        target = BIND_STATE.get(bind_command)
        if target is None:
            raise ValueError(f"{command_name(bind_command)} is not a bind command")
        if self.state is not ST.OPEN:
            error = AlreadyBound if self.is_bound else InvalidBindState
            raise error(
                f"cannot bind in state {self.state.value}", bind_command, self.state.value
            )
        self.state = target
        self.bind_command = Command(bind_command & ~RESPONSE_BIT)
        return target

    def unbound(self) -> SessionState:
        """Enter UNBOUND without a PDU (e.g. the unbind exchange finished out of band)."""
        if self.state is not ST.CLOSED:
            self.state = ST.UNBOUND
        return self.state

    def close(self) -> SessionState:
        """The connection is gone. Always allowed, idempotent."""
        self.state = ST.CLOSED
        return self.state

    def _step(self, sender: Role, command_id: int, verb: str) -> SessionState:
        try:
            command = Command(command_id)
        except ValueError:
            raise UnknownCommand(command_id) from None
        next_state = TRANSITIONS.get((self.state, sender, command))
        if next_state is None:
            name = command.name.lower()
            state = self.state.value
            if command in BIND_COMMANDS and self.is_bound:
                raise AlreadyBound(f"cannot {verb} {name}: already bound", command, state)
            where = f"{self.role.value} in state {state}"
            raise InvalidBindState(f"cannot {verb} {name} as {where}", command, state)
        self.state = next_state
        return next_state


def _lookup(state: SessionState, sender: Role, command_id: int) -> SessionState | None:
    try:
        command = Command(command_id)
    except ValueError:
        return None
    return TRANSITIONS.get((state, sender, command))
