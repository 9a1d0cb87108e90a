"""The SMPP session state table: what may be sent and received in each bind state."""

from __future__ import annotations

import pytest

from gateway.smpp import (
    AlreadyBound,
    Command,
    CommandStatus,
    InvalidBindState,
    Role,
    SessionState,
    SessionStateMachine,
    UnknownCommand,
)
from gateway.smpp import session as session_module

C = Command
ST = SessionState


@pytest.fixture(autouse=True)
def table_built_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test checks the table as `_build()` makes it now, not the copy
    made at import: a mutation tool changes the builder after import (see
    bench/mutation.py), and a table frozen before would hide its mutants."""
    monkeypatch.setattr(session_module, "TRANSITIONS", session_module._build())
    monkeypatch.setattr(session_module, "_BY_STATE", session_module._by_state())


def machine(role: Role, bind: Command | None = None) -> SessionStateMachine:
    """A session in OPEN, or bound with ``bind``."""
    sm = SessionStateMachine(role)
    if bind is not None:
        sm.bound(bind)
    return sm


# (role, bind or None for OPEN, "receive"/"send", command, expected next state or error type)
CASES: list[tuple[Role, Command | None, str, Command, SessionState | type[Exception]]] = [
    # --- a listener (SMSC toward the sender) ---
    (Role.SMSC, None, "receive", C.BIND_TRANSCEIVER, ST.OPEN),
    (Role.SMSC, None, "send", C.BIND_TRANSCEIVER_RESP, ST.OPEN),
    (Role.SMSC, None, "receive", C.ENQUIRE_LINK, ST.OPEN),
    (Role.SMSC, None, "receive", C.SUBMIT_SM, InvalidBindState),  # submit before bind
    (Role.SMSC, None, "receive", C.UNBIND, InvalidBindState),
    (Role.SMSC, None, "send", C.DELIVER_SM, InvalidBindState),
    (Role.SMSC, None, "send", C.GENERIC_NACK, ST.OPEN),
    (Role.SMSC, C.BIND_TRANSMITTER, "receive", C.SUBMIT_SM, ST.BOUND_TX),
    (Role.SMSC, C.BIND_TRANSMITTER, "receive", C.SUBMIT_MULTI, ST.BOUND_TX),
    (Role.SMSC, C.BIND_TRANSMITTER, "receive", C.DATA_SM, ST.BOUND_TX),
    (Role.SMSC, C.BIND_TRANSMITTER, "send", C.SUBMIT_SM_RESP, ST.BOUND_TX),
    (Role.SMSC, C.BIND_TRANSMITTER, "send", C.DELIVER_SM, InvalidBindState),  # to a TX bind
    (Role.SMSC, C.BIND_TRANSMITTER, "receive", C.BIND_TRANSMITTER, AlreadyBound),
    (Role.SMSC, C.BIND_TRANSMITTER, "receive", C.BIND_RECEIVER, AlreadyBound),
    (Role.SMSC, C.BIND_RECEIVER, "receive", C.SUBMIT_SM, InvalidBindState),  # submit on RX
    (Role.SMSC, C.BIND_RECEIVER, "send", C.DELIVER_SM, ST.BOUND_RX),
    (Role.SMSC, C.BIND_RECEIVER, "send", C.DATA_SM, ST.BOUND_RX),
    (Role.SMSC, C.BIND_RECEIVER, "send", C.ALERT_NOTIFICATION, ST.BOUND_RX),
    (Role.SMSC, C.BIND_RECEIVER, "receive", C.DELIVER_SM_RESP, ST.BOUND_RX),
    (Role.SMSC, C.BIND_RECEIVER, "receive", C.DELIVER_SM, InvalidBindState),  # wrong direction
    (Role.SMSC, C.BIND_TRANSCEIVER, "receive", C.SUBMIT_SM, ST.BOUND_TRX),
    (Role.SMSC, C.BIND_TRANSCEIVER, "send", C.DELIVER_SM, ST.BOUND_TRX),
    (Role.SMSC, C.BIND_TRANSCEIVER, "receive", C.QUERY_SM, ST.BOUND_TRX),
    (Role.SMSC, C.BIND_TRANSCEIVER, "receive", C.BIND_TRANSCEIVER, AlreadyBound),
    (Role.SMSC, C.BIND_TRANSCEIVER, "send", C.BIND_TRANSCEIVER_RESP, InvalidBindState),
    (Role.SMSC, C.BIND_TRANSCEIVER, "receive", C.UNBIND, ST.UNBOUND),
    (Role.SMSC, C.BIND_TRANSCEIVER, "send", C.UNBIND, ST.UNBOUND),
    (Role.SMSC, C.BIND_TRANSCEIVER, "send", C.OUTBIND, InvalidBindState),
    # --- an upstream leg (ESME toward the carrier) ---
    (Role.ESME, None, "send", C.BIND_TRANSMITTER, ST.OPEN),
    (Role.ESME, None, "receive", C.BIND_TRANSMITTER_RESP, ST.OPEN),
    (Role.ESME, None, "receive", C.OUTBIND, ST.OPEN),
    (Role.ESME, None, "send", C.SUBMIT_SM, InvalidBindState),
    (Role.ESME, None, "receive", C.BIND_TRANSMITTER, InvalidBindState),  # we are not an SMSC
    (Role.ESME, C.BIND_TRANSMITTER, "send", C.SUBMIT_SM, ST.BOUND_TX),
    (Role.ESME, C.BIND_TRANSMITTER, "receive", C.SUBMIT_SM_RESP, ST.BOUND_TX),
    (Role.ESME, C.BIND_TRANSMITTER, "receive", C.DELIVER_SM, InvalidBindState),
    (Role.ESME, C.BIND_TRANSMITTER, "send", C.BIND_TRANSMITTER, AlreadyBound),
    (Role.ESME, C.BIND_RECEIVER, "send", C.SUBMIT_SM, InvalidBindState),
    (Role.ESME, C.BIND_RECEIVER, "receive", C.DELIVER_SM, ST.BOUND_RX),
    (Role.ESME, C.BIND_RECEIVER, "send", C.DELIVER_SM_RESP, ST.BOUND_RX),
    (Role.ESME, C.BIND_TRANSCEIVER, "receive", C.DATA_SM, ST.BOUND_TRX),
    (Role.ESME, C.BIND_TRANSCEIVER, "send", C.DATA_SM_RESP, ST.BOUND_TRX),
    (Role.ESME, C.BIND_TRANSCEIVER, "send", C.ENQUIRE_LINK, ST.BOUND_TRX),
    (Role.ESME, C.BIND_TRANSCEIVER, "receive", C.ENQUIRE_LINK, ST.BOUND_TRX),
    (Role.ESME, C.BIND_TRANSCEIVER, "receive", C.GENERIC_NACK, ST.BOUND_TRX),
    (Role.ESME, C.BIND_TRANSCEIVER, "receive", C.UNBIND, ST.UNBOUND),
]


def _case_id(case: tuple[Role, Command | None, str, Command, object]) -> str:
    role, bind, verb, command, _ = case
    where = bind.name.lower() if bind else "open"
    return f"{role.value}-{where}-{verb}-{command.name.lower()}"


@pytest.mark.parametrize(
    ("role", "bind", "verb", "command", "expected"), CASES, ids=[_case_id(c) for c in CASES]
)
def test_transition_table(
    role: Role,
    bind: Command | None,
    verb: str,
    command: Command,
    expected: SessionState | type[Exception],
) -> None:
    sm = machine(role, bind)
    before = sm.state
    step = sm.receive if verb == "receive" else sm.send
    may = sm.may_receive if verb == "receive" else sm.may_send
    assert may(command) == isinstance(expected, SessionState)
    if isinstance(expected, SessionState):
        assert step(command) is expected
        assert sm.state is expected
    else:
        with pytest.raises(expected):
            step(command)
        assert sm.state is before  # a refused PDU changes nothing


def test_errors_carry_the_status_to_answer_with() -> None:
    sm = machine(Role.SMSC)
    with pytest.raises(InvalidBindState) as invalid:
        sm.receive(C.SUBMIT_SM)
    assert invalid.value.command_status == CommandStatus.ESME_RINVBNDSTS
    assert invalid.value.command_id == C.SUBMIT_SM
    sm.bound(C.BIND_TRANSCEIVER_RESP)
    with pytest.raises(AlreadyBound) as already:
        sm.receive(C.BIND_TRANSCEIVER)
    assert already.value.command_status == CommandStatus.ESME_RALYBND
    with pytest.raises(UnknownCommand) as unknown:
        sm.receive(0x00010200)
    assert unknown.value.command_status == CommandStatus.ESME_RINVCMDID


def test_a_full_session_from_bind_to_close() -> None:
    # Given a sender binding as a transceiver to our listener
    sm = SessionStateMachine(Role.SMSC)
    sm.receive(C.BIND_TRANSCEIVER)
    sm.send(C.BIND_TRANSCEIVER_RESP)
    sm.bound(C.BIND_TRANSCEIVER)
    assert sm.is_bound and sm.can_transmit and sm.can_receive
    assert sm.bind_command is C.BIND_TRANSCEIVER
    # When it submits while we deliver an MO, then unbinds with a submit in flight
    sm.receive(C.SUBMIT_SM)
    sm.send(C.DELIVER_SM)
    sm.receive(C.UNBIND)
    # Then the owed submit_sm_resp and the unbind_resp may still go out...
    assert sm.send(C.SUBMIT_SM_RESP) is ST.UNBOUND
    assert sm.receive(C.DELIVER_SM_RESP) is ST.UNBOUND
    assert sm.send(C.UNBIND_RESP) is ST.UNBOUND
    # ...but no new request may start
    with pytest.raises(InvalidBindState):
        sm.receive(C.SUBMIT_SM)
    with pytest.raises(InvalidBindState):
        sm.send(C.DELIVER_SM)
    with pytest.raises(InvalidBindState):
        sm.receive(C.BIND_TRANSMITTER)
    assert sm.close() is ST.CLOSED
    with pytest.raises(InvalidBindState):
        sm.receive(C.ENQUIRE_LINK)
    assert sm.close() is ST.CLOSED  # idempotent


def test_crossing_unbinds_are_allowed() -> None:
    sm = machine(Role.ESME, C.BIND_TRANSMITTER)
    sm.send(C.UNBIND)
    assert sm.receive(C.UNBIND) is ST.UNBOUND
    sm.send(C.UNBIND_RESP)
    sm.receive(C.UNBIND_RESP)


def test_a_failed_bind_leaves_the_session_open_to_retry() -> None:
    sm = SessionStateMachine(Role.ESME)
    sm.send(C.BIND_TRANSCEIVER)
    sm.receive(C.BIND_TRANSCEIVER_RESP)  # with ESME_RINVPASWD: the owner does not call bound()
    assert sm.state is ST.OPEN
    sm.send(C.BIND_TRANSCEIVER)


def test_bound_is_only_valid_from_open() -> None:
    sm = machine(Role.SMSC, C.BIND_RECEIVER)
    with pytest.raises(AlreadyBound):
        sm.bound(C.BIND_TRANSMITTER)
    sm.receive(C.UNBIND)
    with pytest.raises(InvalidBindState):
        sm.bound(C.BIND_TRANSMITTER)
    with pytest.raises(ValueError):
        SessionStateMachine(Role.SMSC).bound(C.SUBMIT_SM)


def test_the_table_is_symmetric_between_the_two_ends() -> None:
    """Whatever one end may send, the other end may receive in the same state."""
    for state in SessionState:
        for command in Command:
            smsc = SessionStateMachine(Role.SMSC)
            esme = SessionStateMachine(Role.ESME)
            smsc.state = esme.state = state
            assert smsc.may_send(command) == esme.may_receive(command)
            assert esme.may_send(command) == smsc.may_receive(command)


def test_nothing_passes_once_closed() -> None:
    assert not [key for key in session_module.TRANSITIONS if key[0] is ST.CLOSED]


@pytest.mark.parametrize(
    ("role", "bind", "verb", "command", "error", "message", "state"),
    [
        (Role.SMSC, None, "receive", C.SUBMIT_SM, InvalidBindState,
         "cannot receive submit_sm as smsc in state open", "open"),
        (Role.SMSC, C.BIND_TRANSMITTER, "send", C.DELIVER_SM, InvalidBindState,
         "cannot send deliver_sm as smsc in state bound_tx", "bound_tx"),
        (Role.ESME, C.BIND_RECEIVER, "send", C.SUBMIT_SM, InvalidBindState,
         "cannot send submit_sm as esme in state bound_rx", "bound_rx"),
        (Role.SMSC, C.BIND_TRANSCEIVER, "receive", C.BIND_RECEIVER, AlreadyBound,
         "cannot receive bind_receiver: already bound", "bound_trx"),
        (Role.ESME, C.BIND_TRANSMITTER, "send", C.BIND_TRANSCEIVER, AlreadyBound,
         "cannot send bind_transceiver: already bound", "bound_tx"),
    ],
)
def test_a_refused_pdu_says_what_was_refused_where_and_by_whom(
    role: Role,
    bind: Command | None,
    verb: str,
    command: Command,
    error: type[InvalidBindState | AlreadyBound],
    message: str,
    state: str,
) -> None:
    # Given a session in some state
    sm = machine(role, bind)
    # When a PDU that state does not allow is sent or received
    step = sm.receive if verb == "receive" else sm.send
    with pytest.raises(error) as caught:
        step(command)
    # Then the error names the command, the direction, our role and the state
    # (what an operator reads in the log), and carries them for the caller
    assert caught.value.message == message
    assert caught.value.command_id == command
    assert caught.value.state == state


def test_binding_twice_or_after_unbind_names_the_state() -> None:
    sm = machine(Role.SMSC, C.BIND_RECEIVER)
    with pytest.raises(AlreadyBound) as already:
        sm.bound(C.BIND_TRANSMITTER_RESP)
    assert already.value.message == "cannot bind in state bound_rx"
    assert (already.value.command_id, already.value.state) == (C.BIND_TRANSMITTER_RESP, "bound_rx")
    sm.receive(C.UNBIND)
    with pytest.raises(InvalidBindState) as invalid:
        sm.bound(C.BIND_TRANSMITTER)
    assert invalid.value.message == "cannot bind in state unbound"
    assert (invalid.value.command_id, invalid.value.state) == (C.BIND_TRANSMITTER, "unbound")
    with pytest.raises(ValueError, match=r"^submit_sm is not a bind command$"):
        SessionStateMachine(Role.SMSC).bound(C.SUBMIT_SM)


def test_a_session_has_no_bind_command_until_it_binds() -> None:
    sm = SessionStateMachine(Role.ESME)
    assert sm.bind_command is None
    sm.send(C.BIND_RECEIVER)
    sm.receive(C.BIND_RECEIVER_RESP)
    assert sm.bind_command is None  # the resp alone does not bind: bound() does
    sm.bound(C.BIND_RECEIVER_RESP)
    assert sm.bind_command is C.BIND_RECEIVER


def test_unbound_without_a_pdu_stops_new_requests_but_not_after_close() -> None:
    # Given a bound transmitter whose unbind exchange finished out of band
    sm = machine(Role.ESME, C.BIND_TRANSMITTER)
    sm.send(C.SUBMIT_SM)
    assert sm.unbound() is ST.UNBOUND
    # Then the owed response may still arrive, but no new submit may go out
    assert sm.receive(C.SUBMIT_SM_RESP) is ST.UNBOUND
    assert not sm.may_send(C.SUBMIT_SM)
    # And a closed session stays closed
    sm.close()
    assert sm.unbound() is ST.CLOSED
    assert sm.state is ST.CLOSED
