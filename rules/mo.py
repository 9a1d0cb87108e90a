"""What one MO does to a subscriber, as a pure function of (action, state).

The service classifies the MO text with the inbound address's keywords,
reads the subscriber's current state inside its write transaction, asks
`plan_mo` what to do, and applies the plan (state change, record, reply) in
that same transaction. Keeping the table here, away from SQL and asyncio,
lets one table of cases drive the tests.

The table (CTIA Messaging Principles; FCC 24-24; SPEC section 2):

=========  ============  ==============  ===========================  ===========
action     state now     new state       record                       reply
=========  ============  ==============  ===========================  ===========
opt_out    subscribed    unsubscribed    yes ("opt-out keyword")      opt-out
opt_out    unsubscribed  (unchanged)     yes ("repeated opt-out")     none [1]
opt_in     unsubscribed  subscribed      yes ("opt-in keyword")       opt-in
opt_in     subscribed    (unchanged)     no                           none [2]
help       either        (unchanged)     no [3]                       help [4]
none       either        (unchanged)     no                           none
=========  ============  ==============  ===========================  ===========

[1] At most one confirmation per revocation (FCC 24-24 allows one). The
    repeated STOP is still recorded: it is evidence the user asked again.
[2] Confirming a START that changed nothing would be an unsolicited message
    to someone who never left; a confirmation answers a state change.
[3] The history is of status changes; a HELP changes none.
[4] CTIA: a HELP answer is owed even to a number that never subscribed.

A reply switched off at the address (`Replies.<field> is None`) is simply
not queued; the state change and record still happen.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.model import Action, Replies, Status

__all__ = [
    "REASON_OPT_IN",
    "REASON_OPT_OUT",
    "REASON_REPEATED_OPT_OUT",
    "MoPlan",
    "plan_mo",
]

REASON_OPT_OUT = "opt-out keyword"
REASON_REPEATED_OPT_OUT = "repeated opt-out"
REASON_OPT_IN = "opt-in keyword"


@dataclass(frozen=True, slots=True)
class MoPlan:
    """What to write for one MO. Every field None/empty means "do nothing"."""

    new_status: Status | None = None  # the state change to apply
    record_status: Status | None = None  # write a record with this status
    reason: str = ""
    reply_action: Action | None = None  # queue this reply...
    reply_text: str | None = None  # ...with this text
    notes: tuple[str, ...] = ()

    @property
    def writes(self) -> bool:
        """True when the plan needs a store transaction at all."""
        return self.record_status is not None or self.reply_text is not None


def _reply(action: Action, text: str | None) -> tuple[Action | None, str | None, tuple[str, ...]]:
    if text is None:
        return None, None, (f"{action.value} reply switched off",)
    return action, text, ()


def plan_mo(action: Action, unsubscribed: bool, replies: Replies) -> MoPlan:
    """The plan for an MO of `action` from a subscriber who is currently
    `unsubscribed` (or not) at the inbound address whose replies are
    `replies`."""
    if action is Action.OPT_OUT:
        if unsubscribed:
            return MoPlan(
                record_status=Status.UNSUBSCRIBED,
                reason=REASON_REPEATED_OPT_OUT,
                notes=("already unsubscribed: recorded, no second confirmation",),
            )
        reply_action, text, notes = _reply(Action.OPT_OUT, replies.opt_out)
        return MoPlan(
            new_status=Status.UNSUBSCRIBED,
            record_status=Status.UNSUBSCRIBED,
            reason=REASON_OPT_OUT,
            reply_action=reply_action,
            reply_text=text,
            notes=notes,
        )
    if action is Action.OPT_IN:
        if not unsubscribed:
            return MoPlan(notes=("already subscribed: nothing changed",))
        reply_action, text, notes = _reply(Action.OPT_IN, replies.opt_in)
        return MoPlan(
            new_status=Status.SUBSCRIBED,
            record_status=Status.SUBSCRIBED,
            reason=REASON_OPT_IN,
            reply_action=reply_action,
            reply_text=text,
            notes=notes,
        )
    if action is Action.HELP:
        reply_action, text, notes = _reply(Action.HELP, replies.help)
        return MoPlan(reply_action=reply_action, reply_text=text, notes=notes)
    return MoPlan()
