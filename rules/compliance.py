"""Guardrails: what an inbound address's configuration owes the law, as pure
functions of that configuration (no I/O).

* `REQUIRED_OPT_OUT`: the words the FCC's 2024 consent-revocation order
  (24-24) names as revoking consent on their own: stop, quit, end, revoke,
  opt out, cancel and unsubscribe. An opt-out keyword list without one of
  them is refused unless the admin insists (`allow_noncompliant`), and the
  address then carries a warning.
* `address_warnings`: choices an admin may make but should see every time
  they look at the address: no opt-out confirmation, no HELP reply, a
  blocking rule or default rule that blocks nothing, and missing required
  keywords.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from rules.keywords import keyword_words
from rules.model import AddressWarning, Keywords, Replies, SmsType

__all__ = ["REQUIRED_OPT_OUT", "address_warnings", "missing_required_keywords"]

REQUIRED_OPT_OUT: Final[tuple[str, ...]] = (
    "STOP",
    "QUIT",
    "END",
    "REVOKE",
    "OPT OUT",
    "CANCEL",
    "UNSUBSCRIBE",
)


def missing_required_keywords(keywords: Keywords) -> tuple[str, ...]:
    """The required opt-out words `keywords.opt_out` does not contain,
    compared the way messages are matched ("opt-out" counts as OPT OUT,
    "Stop" as STOP)."""
    have = {keyword_words(k) for k in keywords.opt_out}
    return tuple(word for word in REQUIRED_OPT_OUT if keyword_words(word) not in have)


def address_warnings(
    keywords: Keywords,
    replies: Replies,
    default_rule: frozenset[SmsType],
    rules: Mapping[str, frozenset[SmsType]],
) -> tuple[AddressWarning, ...]:
    """Warnings for an address's effective configuration, in a fixed order."""
    out: list[AddressWarning] = []
    missing = missing_required_keywords(keywords)
    if missing:
        out.append(
            AddressWarning(
                "noncompliant_keywords",
                "The opt-out keywords lack " + ", ".join(missing) + " (FCC 24-24 requires "
                "STOP, QUIT, END, REVOKE, OPT OUT, CANCEL and UNSUBSCRIBE to revoke consent).",
            )
        )
    if replies.opt_out is None:
        out.append(
            AddressWarning(
                "opt_out_reply_off",
                "The opt-out confirmation is switched off: end users who text STOP get no "
                "confirmation (CTIA expects one).",
            )
        )
    if replies.help is None:
        out.append(
            AddressWarning(
                "help_reply_off",
                "The HELP reply is switched off: CTIA requires an answer to HELP.",
            )
        )
    if not default_rule:
        out.append(
            AddressWarning(
                "default_rule_blocks_nothing",
                "The default rule blocks nothing: applications without their own rule may "
                "send every SMS type to numbers unsubscribed here.",
            )
        )
    for app_id in sorted(rules):
        if not rules[app_id]:
            out.append(
                AddressWarning(
                    "rule_blocks_nothing",
                    f"The blocking rule of application {app_id} blocks nothing: it may send "
                    "every SMS type to numbers unsubscribed here.",
                )
            )
    return tuple(out)
