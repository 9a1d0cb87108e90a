"""Near-miss detection (rules.nearmiss): texts that matched no keyword but
read like an opt-out are flagged for review; ordinary texts are not.

One table of cases drives the flag; properties check the edit distance and
that folding (NFKC, case, accents) never changes the answer.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.keywords import DEFAULT_KEYWORDS, classify
from rules.model import Action, InvalidValue, Keywords, MatchMode
from rules.nearmiss import DEFAULT_PHRASES, detect, validate_phrases, within_one_edit

EXACT = Keywords(
    opt_out=DEFAULT_KEYWORDS.opt_out,
    opt_in=DEFAULT_KEYWORDS.opt_in,
    help=DEFAULT_KEYWORDS.help,
    match=MatchMode.EXACT,
)

# (text, keywords, expected kind or None)
CASES: list[tuple[str, Keywords, str | None]] = [
    # a keyword not at the start
    ("please STOP", DEFAULT_KEYWORDS, "keyword_inside"),
    ("ok. stop!", DEFAULT_KEYWORDS, "keyword_inside"),
    ("i want to unsubscribe", DEFAULT_KEYWORDS, "keyword_inside"),
    ("can you opt-out my number", DEFAULT_KEYWORDS, "keyword_inside"),
    ("Stop texting me", EXACT, "keyword_inside"),  # at the start, but the address is exact
    ("merci, ARRÊT", DEFAULT_KEYWORDS, "keyword_inside"),
    # one edit from a keyword of 4+ letters
    ("STPO", DEFAULT_KEYWORDS, "misspelt"),  # transposition
    ("sotp", DEFAULT_KEYWORDS, "misspelt"),
    ("STOPP", DEFAULT_KEYWORDS, "misspelt"),  # insertion
    ("stp", DEFAULT_KEYWORDS, "misspelt"),  # deletion
    ("UNSUBSRCIBE", DEFAULT_KEYWORDS, "misspelt"),
    ("unsubscibe please", DEFAULT_KEYWORDS, "misspelt"),
    ("CANCLE", DEFAULT_KEYWORDS, "misspelt"),
    ("quite", DEFAULT_KEYWORDS, "misspelt"),
    ("revoek", DEFAULT_KEYWORDS, "misspelt"),
    ("Ｓｔｐｏ", DEFAULT_KEYWORDS, "misspelt"),  # full-width, folded by NFKC
    ("opt outt", DEFAULT_KEYWORDS, "misspelt"),  # two words run together
    ("arrett", DEFAULT_KEYWORDS, "misspelt"),
    # phrases, English, French, Spanish, with accents and case
    ("Remove me from this list", DEFAULT_KEYWORDS, "phrase"),
    ("take me off", DEFAULT_KEYWORDS, "phrase"),
    ("NO MORE TEXTS", DEFAULT_KEYWORDS, "phrase"),
    ("wrong number", DEFAULT_KEYWORDS, "phrase"),
    ("Arrêtez de m'écrire", DEFAULT_KEYWORDS, "phrase"),
    ("ARRETEZ", DEFAULT_KEYWORDS, "phrase"),
    ("No más mensajes por favor", DEFAULT_KEYWORDS, "phrase"),
    ("no mas", DEFAULT_KEYWORDS, "phrase"),
    ("Quiero darme de baja", DEFAULT_KEYWORDS, "phrase"),
    ("número equivocado", DEFAULT_KEYWORDS, "phrase"),
    ("je ne veux plus recevoir ça", DEFAULT_KEYWORDS, "phrase"),
    # not flagged
    ("hello", DEFAULT_KEYWORDS, None),
    ("what time do you open tomorrow", DEFAULT_KEYWORDS, None),
    ("thanks!", DEFAULT_KEYWORDS, None),
    ("🙂", DEFAULT_KEYWORDS, None),
    ("", DEFAULT_KEYWORDS, None),
    ("yes please", DEFAULT_KEYWORDS, None),
    ("stops", Keywords(opt_out=("HALT",), opt_in=(), help=()), None),  # STOP is not a keyword
    # 3-letter keywords are not matched fuzzily ("and" is one edit from END)
    ("and", DEFAULT_KEYWORDS, None),
    # long conversational texts: only the first word is checked for misspellings
    ("I will be at the shop later and then home", DEFAULT_KEYWORDS, None),
]


@pytest.mark.parametrize(("text", "keywords", "kind"), CASES)
def test_near_miss_table(text: str, keywords: Keywords, kind: str | None) -> None:
    # given a text that matched no keyword
    assert classify(text, keywords)[0] is Action.NONE
    # when it is checked, then it is flagged (or not) for the expected reason
    found = detect(text, keywords)
    assert (found.kind if found else None) == kind, found


def test_the_match_names_the_keyword_or_phrase_as_configured() -> None:
    found = detect("please STPO", DEFAULT_KEYWORDS)
    assert found is not None and (found.kind, found.matched) == ("misspelt", "STOP")
    found = detect("can you take me off", DEFAULT_KEYWORDS)
    assert found is not None and found.matched == "take me off"


def test_an_address_adds_its_own_phrases() -> None:
    text = "halt the promos"
    assert detect(text, DEFAULT_KEYWORDS) is None
    found = detect(text, DEFAULT_KEYWORDS, ["Halt the PROMOS"])
    assert found is not None and (found.kind, found.matched) == ("phrase", "Halt the PROMOS")


def test_every_default_phrase_is_flagged_on_its_own() -> None:
    for phrase in DEFAULT_PHRASES:
        if classify(phrase, DEFAULT_KEYWORDS)[0] is Action.NONE:
            assert detect(phrase, DEFAULT_KEYWORDS) is not None, phrase


def test_phrase_lists_are_validated() -> None:
    assert validate_phrases(["  stop   the promos ", "STOP the promos!", "halt"]) == (
        "stop the promos",
        "halt",
    )
    for bad in ("not a list", [1], ["x" * 65], ["!!!"], ["a\x00b"], ["p"] * 101):
        with pytest.raises(InvalidValue):
            validate_phrases(bad)


def test_huge_texts_are_bounded() -> None:
    assert detect("hello " * 100_000, DEFAULT_KEYWORDS) is None
    assert detect("hello " * 10 + "stop", DEFAULT_KEYWORDS) is not None


# --- properties -----------------------------------------------------------------------

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=0, max_size=12)


@given(WORDS, WORDS)
def test_one_edit_is_symmetric(a: str, b: str) -> None:
    assert within_one_edit(a, b) == within_one_edit(b, a)


@given(st.text(alphabet="abcdefgh", min_size=2, max_size=10), st.data())
def test_every_single_edit_is_within_one(word: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(word) - 1))
    letter = data.draw(st.sampled_from("abcdefghz"))
    edits = [
        word[:i] + word[i + 1 :],  # deletion
        word[:i] + letter + word[i:],  # insertion
        word[:i] + letter + word[i + 1 :],  # substitution
    ]
    if i + 1 < len(word):
        edits.append(word[:i] + word[i + 1] + word[i] + word[i + 2 :])  # transposition
    for edited in edits:
        assert within_one_edit(word, edited), (word, edited)


@given(WORDS, WORDS)
def test_one_edit_agrees_with_a_reference_distance(a: str, b: str) -> None:
    assert within_one_edit(a, b) == (_osa_distance(a, b) <= 1)


def _osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance, the textbook dynamic programme."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


FLAGGED = [text for text, kw, kind in CASES if kind is not None and kw is DEFAULT_KEYWORDS]


@given(st.sampled_from(FLAGGED), st.sampled_from(["upper", "lower", "title", "nfd", "wide"]))
def test_case_accents_and_width_never_change_the_flag(text: str, form: str) -> None:
    if form == "nfd":
        variant = unicodedata.normalize("NFD", text)
    elif form == "wide":
        # full-width forms of ASCII letters: NFKC folds them back
        variant = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    else:
        variant = getattr(text, form)()
    if classify(variant, DEFAULT_KEYWORDS)[0] is not Action.NONE:
        return  # e.g. a title-cased phrase that now starts with a keyword: it acts
    assert detect(variant, DEFAULT_KEYWORDS) is not None, variant
