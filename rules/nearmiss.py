"""Near-miss opt-outs: MO texts that matched no keyword but plausibly revoke
consent, flagged for a person to review.

Why
---
The FCC's 2024 order (24-24) says consent may be revoked "by any reasonable
means": "please stop texting me", "STPO" or "arrêtez" is a revocation a
regulator may hold the sender to, even though no keyword matched. Acting on
such texts automatically would unsubscribe people who wrote "I'll stop by
the shop", so the sidecar only *flags* them; an admin decides (opt out or
dismiss). Nothing here unsubscribes anyone.

What is flagged (only texts whose action is "none"; the caller checks)
---------------------------------------------------------------------
Texts are compared as words after the keyword normalisation
(`rules.keywords.keyword_words`: NFKC, case and accent folding), so
"ARRÊTEZ", "arretez" and full-width letters behave alike.

1. ``keyword_inside``: an opt-out keyword of the address appears as whole
   words anywhere in the text ("please STOP", "ok stop all"; also "Stop
   texting me" at an address that matches whole messages only).
2. ``misspelt``: a word (or two adjacent words run together) is one edit
   away from an opt-out keyword of at least 4 letters, where an edit is an
   insertion, deletion, substitution or transposition of adjacent letters
   (optimal string alignment / restricted Damerau-Levenshtein): "STPO",
   "STOPP", "UNSUBSRCIBE", "CANCLE", "opt outt". To keep ordinary words in
   long conversational texts ("I'll stop by the shop") from filling the
   queue, only the first word is checked in texts longer than
   `MISSPELLING_MAX_WORDS` words; every word is checked in shorter ones.
3. ``phrase``: a phrase of `DEFAULT_PHRASES` (English, French, Spanish) or
   one of the address's own extra phrases appears as consecutive words.

Work is bounded: only the first `MAX_TEXT_WORDS` words are examined, and
the edit distance stops as soon as it exceeds one.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from rules.keywords import keyword_words
from rules.model import InvalidValue, Keywords

__all__ = [
    "DEFAULT_PHRASES",
    "MAX_PHRASES",
    "MAX_PHRASE_CHARS",
    "MAX_TEXT_WORDS",
    "MISSPELLING_MAX_WORDS",
    "NearMiss",
    "detect",
    "validate_phrases",
    "within_one_edit",
]

MAX_TEXT_WORDS: Final = 200
MISSPELLING_MAX_WORDS: Final = 4
MIN_MISSPELT_LETTERS: Final = 4
MAX_PHRASES: Final = 100
MAX_PHRASE_CHARS: Final = 64

#: Phrases that say "stop messaging me" without a keyword, in the languages
#: US and Canadian senders meet most: English, French (Quebec) and Spanish.
#: Written as people type them; matching folds case and accents.
DEFAULT_PHRASES: Final[tuple[str, ...]] = (
    # English
    "stop texting",
    "stop text",
    "stop txt",
    "stop sending",
    "stop messaging",
    "stop message",
    "stop contacting",
    "stop calling",
    "stop these",
    "stop this",
    "quit texting",
    "quit sending",
    "remove me",
    "remove my number",
    "remove from list",
    "take me off",
    "take my number off",
    "delete my number",
    "delete me",
    "lose my number",
    "no more texts",
    "no more text",
    "no more messages",
    "no more msgs",
    "don't text",
    "dont text",
    "do not text",
    "don't message",
    "dont message",
    "do not message",
    "don't contact",
    "dont contact",
    "do not contact",
    "don't send",
    "dont send",
    "do not send",
    "leave me alone",
    "wrong number",
    "wrong person",
    "not interested",
    "opt me out",
    "unsub",
    "unsubscribe me",
    "i did not sign up",
    "i didn't sign up",
    "never signed up",
    "spam",
    # French
    "arrêtez",
    "arrête",
    "arrêter",
    "arrêt svp",
    "cessez",
    "désabonner",
    "désabonnez",
    "désabonnement",
    "désinscrire",
    "désinscription",
    "retirez moi",
    "retirez mon numéro",
    "enlevez moi",
    "ne plus recevoir",
    "plus de messages",
    "plus de textos",
    "je ne veux plus",
    "ne m'écrivez plus",
    "mauvais numéro",
    "pas intéressé",
    # Spanish
    "no más",
    "no mas mensajes",
    "no más mensajes",
    "ya no",
    "basta",
    "baja",
    "darme de baja",
    "dar de baja",
    "dejen de",
    "deje de",
    "no me escriban",
    "no me envíen",
    "no envíen",
    "quítenme",
    "quitenme",
    "elimínenme",
    "eliminar mi número",
    "borrar mi número",
    "cancelar",
    "número equivocado",
    "no me interesa",
    "parar",
)


@dataclass(frozen=True, slots=True)
class NearMiss:
    """Why a text was flagged: `kind` is ``keyword_inside``, ``misspelt`` or
    ``phrase``; `matched` is the keyword or phrase as configured."""

    kind: str
    matched: str


def within_one_edit(a: str, b: str) -> bool:
    """True when `a` and `b` differ by at most one insertion, deletion,
    substitution or transposition of two adjacent characters."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diffs = [i for i in range(la) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    if la > lb:
        a, b = b, a  # a is the shorter
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


@dataclass(frozen=True, slots=True)
class _Tables:
    keywords: tuple[tuple[tuple[str, ...], str], ...]  # (words, as configured)
    spellings: tuple[tuple[str, str], ...]  # (letters run together, as configured)
    phrases: tuple[tuple[tuple[str, ...], str], ...]


def _letters(words: Sequence[str]) -> str:
    return "".join(words)


@functools.lru_cache(maxsize=1024)
def _tables(keywords: Keywords, extra_phrases: tuple[str, ...]) -> _Tables:
    kw: list[tuple[tuple[str, ...], str]] = []
    spellings: list[tuple[str, str]] = []
    for keyword in keywords.opt_out:
        words = keyword_words(keyword)
        if not words:
            continue
        kw.append((words, keyword))
        letters = _letters(words)
        if sum(1 for c in letters if c.isalpha()) >= MIN_MISSPELT_LETTERS:
            spellings.append((letters, keyword))
    phrases: list[tuple[tuple[str, ...], str]] = []
    for phrase in (*DEFAULT_PHRASES, *extra_phrases):
        words = keyword_words(phrase)
        if words:
            phrases.append((words, phrase))
    return _Tables(tuple(kw), tuple(spellings), tuple(phrases))


def _find(words: Sequence[str], needle: Sequence[str]) -> int:
    """Index of the first occurrence of `needle` as consecutive words, or -1."""
    n = len(needle)
    for i in range(len(words) - n + 1):
        if tuple(words[i : i + n]) == tuple(needle):
            return i
    return -1


def detect(
    text: str, keywords: Keywords, extra_phrases: Iterable[str] = ()
) -> NearMiss | None:
    """Whether an MO `text` that matched no keyword of `keywords` looks like
    an attempt to opt out (see the module docstring), and why; None if not.

    Call it only for texts whose action is "none": a text that opted out
    already needs no review.
    """
    tables = _tables(keywords, tuple(extra_phrases))
    words = list(keyword_words(text[: MAX_TEXT_WORDS * 20]))[:MAX_TEXT_WORDS]
    if not words:
        return None
    for needle, keyword in tables.keywords:
        if _find(words, needle) >= 0:
            return NearMiss("keyword_inside", keyword)
    # Short texts: every word (and adjacent pair run together) is checked;
    # long ones only their first word and first pair.
    reach = len(words) if len(words) <= MISSPELLING_MAX_WORDS else 1
    runs = words[:reach] + [words[i] + words[i + 1] for i in range(min(reach, len(words) - 1))]
    for run in runs:
        if not run.isalpha():
            continue
        for letters, keyword in tables.spellings:
            if within_one_edit(run, letters):
                return NearMiss("misspelt", keyword)
    for needle, phrase in tables.phrases:
        if _find(words, needle) >= 0:
            return NearMiss("phrase", phrase)
    return None


def validate_phrases(phrases: object) -> tuple[str, ...]:
    """An admin's extra near-miss phrases, cleaned (white space collapsed,
    duplicates that match the same words dropped, order kept), or
    InvalidValue saying what is wrong."""
    if isinstance(phrases, str) or not isinstance(phrases, Sequence):
        raise InvalidValue("phrases must be a list of texts")
    if len(phrases) > MAX_PHRASES:
        raise InvalidValue(f"too many phrases: {len(phrases)} (at most {MAX_PHRASES})")
    seen: set[tuple[str, ...]] = set()
    out: list[str] = []
    for position, raw in enumerate(phrases, 1):
        if not isinstance(raw, str):
            raise InvalidValue(f"phrase #{position} is not text")
        phrase = " ".join(raw.split())
        if len(phrase) > MAX_PHRASE_CHARS:
            raise InvalidValue(f"phrase #{position} is longer than {MAX_PHRASE_CHARS} characters")
        if any(unicodedata.category(c)[0] == "C" for c in phrase):
            raise InvalidValue(f"phrase #{position} contains control characters")
        words = keyword_words(phrase)
        if not words:
            raise InvalidValue(f"phrase #{position} has no letters or digits")
        if words not in seen:
            seen.add(words)
            out.append(phrase)
    return tuple(out)
