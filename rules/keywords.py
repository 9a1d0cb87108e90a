"""MO keywords: what an end user's text asks for (opt out, opt in, help).

A lost STOP is the worst failure this product can have (TCPA penalties are
per message), so matching leans towards recognising an opt-out:

* Both sides are normalised the same way (`normalize_text`): Unicode NFKC
  (full-width STOP, U+FF33 U+FF34 U+FF2F U+FF30, becomes ``stop``), case-folded, accents folded
  (NFKD, combining marks dropped: Canadian French users type ``ARRÊT`` and
  expect the ``ARRET`` keyword to work), white space, punctuation, symbols
  and emoji stripped from both ends, inner white space collapsed.
* Messages and keywords are then compared as sequences of words, a word
  being a run of letters and digits. Inner punctuation therefore separates
  words like a space does: ``opt-out`` matches ``OPT OUT``, ``stop.`` and
  ``stop!!`` match ``STOP``.
* The whole message matching a keyword of any list acts. In addition, with
  ``match = "leading"`` (the default), a message whose first word(s) are an
  opt-out keyword opts out ("Stop texting me", "STOP ALL please",
  "Stop. Thank you"); the longest such keyword is reported. Leading match
  applies to opt-out only (SPEC section 2): "help me" is not a HELP.
* A keyword anywhere else ("we must stop this", "don't stop") is not a
  command.
* If a text could match several lists, opt-out wins.

Work is bounded: only the first `MAX_TEXT_CHARS` characters of a message are
looked at (a longer message cannot be a whole-message keyword), and the
keyword tables of each `Keywords` value are compiled once and cached.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from rules.model import Action, InvalidValue, Keywords, MatchMode

__all__ = [
    "DEFAULT_KEYWORDS",
    "MAX_KEYWORDS_PER_LIST",
    "MAX_KEYWORD_CHARS",
    "MAX_TEXT_CHARS",
    "classify",
    "keyword_words",
    "normalize_text",
    "validate_keywords",
]

#: The defaults of SPEC section 2: the seed's words, those the FCC's 2024
#: consent-revocation order and CTIA require, and French for Canada.
DEFAULT_KEYWORDS: Final = Keywords(
    opt_out=(
        "STOP",
        "STOPALL",
        "STOP ALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
        "OPT OUT",
        "ARRET",
    ),
    opt_in=("START", "SUBSCRIBE", "UNSTOP"),
    help=("HELP", "INFO", "AIDE"),
    match=MatchMode.LEADING,
)

MAX_KEYWORD_CHARS: Final = 32
MAX_KEYWORDS_PER_LIST: Final = 50
#: An SMS is at most a few concatenated segments; beyond this a message is
#: only read for a leading opt-out keyword.
MAX_TEXT_CHARS: Final = 1600

# Unicode general categories stripped from both ends: punctuation, symbols
# (emoji are So), separators and control/format characters (ZWJ, BOM).
_EDGE_CATEGORY_INITIALS: Final = frozenset("PSZC")

# Nonspacing marks (accents, variation selectors) and format characters.
_DROPPED: Final = frozenset({"Mn", "Cf"})

# A word: letters and digits ([^\W_] is \w without the underscore).
_WORD: Final = re.compile(r"[^\W_]+")


def _is_edge(char: str) -> bool:
    return unicodedata.category(char)[0] in _EDGE_CATEGORY_INITIALS


def _fold(text: str) -> str:
    """NFKC, case fold and accent fold (see the module docstring). Invisible
    format characters (zero-width space, soft hyphen, ZWJ) are dropped too:
    "ST\u200bOP" looks like STOP to the person who sent it."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    if folded.isascii():
        return folded
    decomposed = unicodedata.normalize("NFKD", folded)
    stripped = "".join(c for c in decomposed if unicodedata.category(c) not in _DROPPED)
    return unicodedata.normalize("NFC", stripped)


def normalize_text(text: str) -> str:
    """The matching form of an MO text or a keyword: ``"Stop."``,
    ``" stop "``, full-width STOP, ``"STOP!!"`` and ``"🛑 stop 🛑"`` all
    give ``"stop"``; ``"ARRÊT"`` gives ``"arret"``.

    This is a comparison key, not display text: accents and other combining
    marks are removed.
    """
    folded = _fold(text)
    start, end = 0, len(folded)
    while start < end and _is_edge(folded[start]):
        start += 1
    while end > start and _is_edge(folded[end - 1]):
        end -= 1
    return " ".join(folded[start:end].split())


def keyword_words(keyword: str) -> tuple[str, ...]:
    """The words a keyword (or a message) is compared by: ``"Opt-Out!"``
    gives ``("opt", "out")``."""
    return tuple(_WORD.findall(normalize_text(keyword)))


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One `Keywords` value, ready for matching."""

    opt_out: dict[tuple[str, ...], str]  # words -> keyword as configured
    opt_in: dict[tuple[str, ...], str]
    help: dict[tuple[str, ...], str]
    leading_lengths: tuple[int, ...]  # opt-out keyword lengths in words, longest first
    max_words: int  # no whole-message match has more words than this


def _table(keywords: Sequence[str]) -> dict[tuple[str, ...], str]:
    table: dict[tuple[str, ...], str] = {}
    for keyword in keywords:
        words = keyword_words(keyword)
        if words:
            table.setdefault(words, keyword)  # the first spelling wins
    return table


@functools.lru_cache(maxsize=1024)
def _compiled(keywords: Keywords) -> _Compiled:
    opt_out = _table(keywords.opt_out)
    opt_in = _table(keywords.opt_in)
    help_ = _table(keywords.help)
    lengths = sorted({len(words) for words in opt_out}, reverse=True)
    longest = max((len(w) for t in (opt_out, opt_in, help_) for w in t), default=0)
    return _Compiled(opt_out, opt_in, help_, tuple(lengths), longest)


def classify(text: str, keywords: Keywords) -> tuple[Action, str | None]:
    """What an MO text asks for, and the keyword that matched as configured
    (e.g. ``(Action.OPT_OUT, "STOP ALL")``); ``(Action.NONE, None)`` when it
    is not a command (including empty, white space or emoji only)."""
    table = _compiled(keywords)
    whole_possible = True
    if len(text) > MAX_TEXT_CHARS:
        text = text.strip()
        if len(text) > MAX_TEXT_CHARS:
            text = text[:MAX_TEXT_CHARS]
            whole_possible = False
    words: list[str] = []
    for match in _WORD.finditer(normalize_text(text)):
        words.append(match.group())
        if len(words) > table.max_words:
            whole_possible = False  # too long to be a whole-message keyword
            break
    if not words:
        return Action.NONE, None

    message = tuple(words)
    if whole_possible and message in table.opt_out:
        return Action.OPT_OUT, table.opt_out[message]
    if keywords.match == MatchMode.LEADING:
        for length in table.leading_lengths:  # longest first: "STOP ALL" over "STOP"
            if len(message) >= length:
                keyword = table.opt_out.get(message[:length])
                if keyword is not None:
                    return Action.OPT_OUT, keyword
    if whole_possible:
        if message in table.opt_in:
            return Action.OPT_IN, table.opt_in[message]
        if message in table.help:
            return Action.HELP, table.help[message]
    return Action.NONE, None


_LIST_LABELS: Final = (("opt_out", "opt-out"), ("opt_in", "opt-in"), ("help", "help"))


def _clean_list(label: str, values: object) -> list[tuple[str, tuple[str, ...]]]:
    """Strip, check and dedupe one list; returns (keyword, words) pairs."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidValue(f"{label} keywords must be a list of words")
    if len(values) > MAX_KEYWORDS_PER_LIST:
        raise InvalidValue(
            f"too many {label} keywords: {len(values)} (at most {MAX_KEYWORDS_PER_LIST})"
        )
    cleaned: list[tuple[str, tuple[str, ...]]] = []
    seen: set[tuple[str, ...]] = set()
    for position, raw in enumerate(values, 1):
        if not isinstance(raw, str):
            raise InvalidValue(f"{label} keyword #{position} is not text")
        keyword = " ".join(raw.split())
        if not keyword:
            raise InvalidValue(f"{label} keyword #{position} is empty")
        if len(keyword) > MAX_KEYWORD_CHARS:
            raise InvalidValue(
                f"{label} keyword {keyword[:MAX_KEYWORD_CHARS]!r}... is longer than "
                f"{MAX_KEYWORD_CHARS} characters"
            )
        if any(unicodedata.category(c)[0] == "C" for c in keyword):
            raise InvalidValue(f"{label} keyword #{position} contains control characters")
        words = keyword_words(keyword)
        if not words:
            raise InvalidValue(f"{label} keyword {keyword!r} has no letters or digits")
        if words not in seen:
            seen.add(words)
            cleaned.append((keyword, words))
    return cleaned


def _article(label: str) -> str:
    return ("an " if label[0] in "aeio" else "a ") + label


def validate_keywords(kw: Keywords) -> Keywords:
    """A cleaned copy of an admin's keyword lists (white space trimmed,
    duplicates that match the same texts dropped, order kept), or
    InvalidValue saying what is wrong: an empty or over-long keyword, a
    keyword in two lists, more than 50 in a list, or no opt-out keyword at
    all (an address must always honour opt-outs)."""
    try:
        match = MatchMode(kw.match)
    except ValueError:
        raise InvalidValue(
            f"match must be 'leading' or 'exact', not {str(kw.match)[:20]!r}"
        ) from None
    lists: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    owner: dict[tuple[str, ...], tuple[str, str]] = {}  # words -> (label, keyword)
    for attr, label in _LIST_LABELS:
        lists[attr] = _clean_list(label, getattr(kw, attr))
        for keyword, words in lists[attr]:
            if words in owner:
                other_label, other = owner[words]
                raise InvalidValue(
                    f"{keyword!r} is both {_article(other_label)} keyword ({other!r}) "
                    f"and {_article(label)} keyword: a message must mean one thing"
                )
            owner[words] = (label, keyword)
    if not lists["opt_out"]:
        raise InvalidValue(
            "an inbound address needs at least one opt-out keyword (such as STOP): "
            "opt-outs must always be possible"
        )
    return Keywords(
        opt_out=tuple(k for k, _ in lists["opt_out"]),
        opt_in=tuple(k for k, _ in lists["opt_in"]),
        help=tuple(k for k, _ in lists["help"]),
        match=match,
    )
