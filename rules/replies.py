"""Auto-reply texts: the CTIA-style defaults, and checks on edited texts.

CTIA's Messaging Principles ask that the opt-out confirmation name the
program and say no further messages will be sent, that the HELP answer give
contact information, and that both fit in one SMS. The FCC's 2024 order
allows one confirmation, without marketing, that may say how to opt back in.
The defaults below do exactly that and fit in 160 GSM 03.38 characters for
any reasonable program name (`fits_one_sms` lets a test or the admin check).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from rules.model import InvalidValue, Replies, require_scalar_text

__all__ = [
    "HELP_TEMPLATE",
    "MAX_REPLY_CHARS",
    "OPT_IN_TEMPLATE",
    "OPT_OUT_TEMPLATE",
    "ProgramInfo",
    "ReplyMode",
    "ReplySetting",
    "ReplySettings",
    "default_replies",
    "fits_one_sms",
    "gsm7_length",
    "validate_replies",
]

OPT_OUT_TEMPLATE = (
    "{name}: You are unsubscribed and will receive no further messages. Reply START to resubscribe."
)
OPT_IN_TEMPLATE = "{name}: You are resubscribed. Reply STOP to unsubscribe, HELP for help."
HELP_TEMPLATE = "{name}: Help at {contact}. Msg&data rates may apply. Reply STOP to unsubscribe."

MAX_REPLY_CHARS = 918
"""Longest reply text accepted from an admin: six concatenated GSM segments
(6 x 153). Anything longer is almost certainly a mistake and costs the
sender money on every STOP."""


@dataclass(frozen=True, slots=True)
class ProgramInfo:
    """Used in default reply texts (CTIA: name the program, say how to opt
    back in, give contact information for HELP)."""

    name: str = "Messages"
    contact: str = "support"


def default_replies(program: ProgramInfo) -> Replies:
    """The default texts for a new inbound address, all switched on."""
    return Replies(
        opt_out=OPT_OUT_TEMPLATE.format(name=program.name, contact=program.contact),
        opt_in=OPT_IN_TEMPLATE.format(name=program.name, contact=program.contact),
        help=HELP_TEMPLATE.format(name=program.name, contact=program.contact),
    )


# GSM 03.38 basic character set, and the extension table (each costs two
# septets: ESC + char).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")


def gsm7_length(text: str) -> int | None:
    """Septets `text` takes in GSM 03.38, or None if it needs UCS-2."""
    n = 0
    for ch in text:
        if ch in _GSM_BASIC:
            n += 1
        elif ch in _GSM_EXTENSION:
            n += 2
        else:
            return None
    return n


def fits_one_sms(text: str) -> bool:
    """True when `text` goes out as a single SMS (160 GSM septets, or 70
    UCS-2 characters when it has characters outside GSM 03.38)."""
    septets = gsm7_length(text)
    if septets is not None:
        return septets <= 160
    return len(text.encode("utf-16-be")) // 2 <= 70


def validate_replies(replies: Replies) -> Replies:
    """Checks admin-edited texts and returns them with surrounding white space
    stripped. `None` switches a reply off; an empty text is refused (say
    `None` to mean off, so an accidental blank does not silently disable a
    confirmation)."""

    def one(field: str, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidValue(f"replies.{field} must be a string or null")
        text = value.strip()
        if not text:
            raise InvalidValue(f"replies.{field} is empty; use null to switch it off")
        if len(text) > MAX_REPLY_CHARS:
            raise InvalidValue(f"replies.{field} is longer than {MAX_REPLY_CHARS} characters")
        if "\x00" in text:
            raise InvalidValue(f"replies.{field} contains a NUL character")
        return require_scalar_text(text, f"replies.{field}")

    return Replies(
        opt_out=one("opt_out", replies.opt_out),
        opt_in=one("opt_in", replies.opt_in),
        help=one("help", replies.help),
    )


# --- per-address reply settings, as stored ------------------------------------


class ReplyMode(enum.StrEnum):
    """How one reply of an address is configured. `DEFAULT` follows the
    default template with the *current* program name and contact, so
    changing them in the config updates every address that never had its
    text edited."""

    DEFAULT = "default"
    CUSTOM = "custom"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class ReplySetting:
    mode: ReplyMode = ReplyMode.DEFAULT
    text: str | None = None  # only for CUSTOM

    def render(self, template: str, program: ProgramInfo) -> str | None:
        if self.mode is ReplyMode.OFF:
            return None
        if self.mode is ReplyMode.CUSTOM and self.text is not None:
            return self.text
        return template.format(name=program.name, contact=program.contact)


@dataclass(frozen=True, slots=True)
class ReplySettings:
    """The three reply settings of one inbound address."""

    opt_out: ReplySetting = ReplySetting()
    opt_in: ReplySetting = ReplySetting()
    help: ReplySetting = ReplySetting()

    def effective(self, program: ProgramInfo) -> Replies:
        """The texts that go out now (None: switched off)."""
        return Replies(
            opt_out=self.opt_out.render(OPT_OUT_TEMPLATE, program),
            opt_in=self.opt_in.render(OPT_IN_TEMPLATE, program),
            help=self.help.render(HELP_TEMPLATE, program),
        )

    @classmethod
    def from_replies(cls, replies: Replies, program: ProgramInfo) -> ReplySettings:
        """Settings for texts an admin set (already validated). A text equal
        to the current default stays "default" so it keeps following the
        program name."""
        defaults = default_replies(program)

        def one(text: str | None, default: str | None) -> ReplySetting:
            if text is None:
                return ReplySetting(ReplyMode.OFF)
            if text == default:
                return ReplySetting(ReplyMode.DEFAULT)
            return ReplySetting(ReplyMode.CUSTOM, text)

        return cls(
            opt_out=one(replies.opt_out, defaults.opt_out),
            opt_in=one(replies.opt_in, defaults.opt_in),
            help=one(replies.help, defaults.help),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                name: {"mode": s.mode.value, "text": s.text}
                for name, s in (
                    ("opt_out", self.opt_out),
                    ("opt_in", self.opt_in),
                    ("help", self.help),
                )
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: str) -> ReplySettings:
        raw = json.loads(data)

        def one(name: str) -> ReplySetting:
            item = raw.get(name) or {}
            return ReplySetting(ReplyMode(item.get("mode", "default")), item.get("text"))

        return cls(opt_out=one("opt_out"), opt_in=one("opt_in"), help=one("help"))
