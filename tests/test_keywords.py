"""MO keywords: how end users actually type STOP, and what must not count."""

from __future__ import annotations

import dataclasses
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.keywords import (
    DEFAULT_KEYWORDS,
    MAX_KEYWORD_CHARS,
    MAX_KEYWORDS_PER_LIST,
    MAX_TEXT_CHARS,
    classify,
    normalize_text,
    validate_keywords,
)
from rules.model import Action, InvalidValue, Keywords, MatchMode
from tests.strategies import LOOK_ALIKES, hostile_text, keyword_message

FULL_WIDTH_STOP = "\uff33\uff34\uff2f\uff30"  # what a CJK keyboard sends
EXACT = dataclasses.replace(DEFAULT_KEYWORDS, match=MatchMode.EXACT)


def test_defaults_are_the_spec_lists() -> None:
    assert DEFAULT_KEYWORDS.opt_out == (
        "STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT",
        "REVOKE", "OPTOUT", "OPT OUT", "ARRET",
    )  # fmt: skip
    assert DEFAULT_KEYWORDS.opt_in == ("START", "SUBSCRIBE", "UNSTOP")
    assert DEFAULT_KEYWORDS.help == ("HELP", "INFO", "AIDE")
    assert DEFAULT_KEYWORDS.match is MatchMode.LEADING
    assert validate_keywords(DEFAULT_KEYWORDS) == DEFAULT_KEYWORDS


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Stop.", "stop"),
        (" stop ", "stop"),
        (FULL_WIDTH_STOP, "stop"),
        ("STOP!!", "stop"),
        ("🛑 stop 🛑", "stop"),
        ("ARRÊT", "arret"),
        ("  Stop   texting\tme!  ", "stop texting me"),
        ("\ufeffstop\u200d", "stop"),
        ("", ""),
        ("🙂🙂", ""),
    ],
)
def test_normalize_text(text: str, normalized: str) -> None:
    assert normalize_text(text) == normalized


@pytest.mark.parametrize(
    ("text", "action", "keyword"),
    [
        # The whole message is a keyword.
        ("STOP", Action.OPT_OUT, "STOP"),
        ("stop", Action.OPT_OUT, "STOP"),
        ("Stop.", Action.OPT_OUT, "STOP"),
        ("STOP!!", Action.OPT_OUT, "STOP"),
        (FULL_WIDTH_STOP, Action.OPT_OUT, "STOP"),  # full-width, e.g. from a CJK keyboard
        ("🛑 stop 🛑", Action.OPT_OUT, "STOP"),
        ("\u200bST\u200bOP\u200b", Action.OPT_OUT, "STOP"),  # zero-width spaces
        ("STOP\x00\x00", Action.OPT_OUT, "STOP"),  # C-string padding
        ("STOP ALL", Action.OPT_OUT, "STOP ALL"),
        ("stop  all", Action.OPT_OUT, "STOP ALL"),
        ("stopall", Action.OPT_OUT, "STOPALL"),
        ("opt out", Action.OPT_OUT, "OPT OUT"),
        ("Opt-Out", Action.OPT_OUT, "OPT OUT"),
        ("optout", Action.OPT_OUT, "OPTOUT"),
        ("Unsubscribe", Action.OPT_OUT, "UNSUBSCRIBE"),
        ("cancel", Action.OPT_OUT, "CANCEL"),
        ("End", Action.OPT_OUT, "END"),
        ("quit", Action.OPT_OUT, "QUIT"),
        ("revoke", Action.OPT_OUT, "REVOKE"),
        ("ARRÊT", Action.OPT_OUT, "ARRET"),
        ("arret", Action.OPT_OUT, "ARRET"),
        ("START", Action.OPT_IN, "START"),
        ("unstop", Action.OPT_IN, "UNSTOP"),
        ("Subscribe!", Action.OPT_IN, "SUBSCRIBE"),
        ("help", Action.HELP, "HELP"),
        ("info?", Action.HELP, "INFO"),
        ("Aide", Action.HELP, "AIDE"),
        # The message starts with an opt-out keyword.
        ("Stop texting me", Action.OPT_OUT, "STOP"),
        ("STOP ALL please", Action.OPT_OUT, "STOP ALL"),
        ("Stop. Thank you", Action.OPT_OUT, "STOP"),
        ("stop, wrong number", Action.OPT_OUT, "STOP"),
        ("Opt out of this please", Action.OPT_OUT, "OPT OUT"),
        ("Arrêt svp", Action.OPT_OUT, "ARRET"),
        # A keyword elsewhere, or a word that merely starts like one.
        ("we must stop this", Action.NONE, None),
        ("don't stop", Action.NONE, None),
        ("Please stop", Action.NONE, None),
        ("stopping by at 5", Action.NONE, None),
        ("Starting now", Action.NONE, None),
        ("help me please", Action.NONE, None),  # leading match is for opt-out only
        ("start the engine", Action.NONE, None),
        ("S T O P", Action.NONE, None),
        ("yes", Action.NONE, None),
        # Nothing to read.
        ("", Action.NONE, None),
        ("   \t\n", Action.NONE, None),
        ("🛑🛑🛑", Action.NONE, None),
        ("...", Action.NONE, None),
    ],
)
def test_classify_examples(text: str, action: Action, keyword: str | None) -> None:
    assert classify(text, DEFAULT_KEYWORDS) == (action, keyword)


def test_ucs2_decoded_text_matches() -> None:
    # What a UCS-2 (data_coding 8) MO decodes to, emoji and all.
    text = "STOP 🙏".encode("utf-16-be").decode("utf-16-be")
    assert classify(text, DEFAULT_KEYWORDS) == (Action.OPT_OUT, "STOP")


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("STOP", Action.OPT_OUT),
        ("Stop!", Action.OPT_OUT),
        ("stop all", Action.OPT_OUT),
        ("Stop texting me", Action.NONE),
        ("STOP ALL please", Action.NONE),
        ("start", Action.OPT_IN),
    ],
)
def test_exact_mode_needs_the_whole_message(text: str, action: Action) -> None:
    assert classify(text, EXACT)[0] is action


def test_opt_out_wins_when_a_text_could_mean_two_things() -> None:
    # Hand-built (unvalidated) lists where the same word is in two lists.
    keywords = Keywords(opt_out=("STOP",), opt_in=("STOP", "GO"), help=("STOP",))
    assert classify("stop", keywords) == (Action.OPT_OUT, "STOP")
    # A leading opt-out beats a whole-message opt-in.
    keywords = Keywords(opt_out=("OPT",), opt_in=("OPT IN",), help=())
    assert classify("opt in", keywords) == (Action.OPT_OUT, "OPT")


def test_custom_keywords_report_the_configured_spelling() -> None:
    keywords = Keywords(opt_out=("Halt Now",), opt_in=("Resume",), help=("Aide-moi",))
    assert classify("HALT NOW!!", keywords) == (Action.OPT_OUT, "Halt Now")
    assert classify("halt now and forever", keywords) == (Action.OPT_OUT, "Halt Now")
    assert classify("halt", keywords) == (Action.NONE, None)
    assert classify("aide moi", keywords) == (Action.HELP, "Aide-moi")
    assert classify("stop", keywords) == (Action.NONE, None)


def test_long_messages_are_bounded_but_leading_stop_still_counts() -> None:
    assert classify("STOP " + "x" * 100_000, DEFAULT_KEYWORDS) == (Action.OPT_OUT, "STOP")
    assert classify("x" * 100_000 + " STOP", DEFAULT_KEYWORDS) == (Action.NONE, None)
    # White space padding alone does not hide a whole-message keyword.
    padded = " " * MAX_TEXT_CHARS + "start" + " " * MAX_TEXT_CHARS
    assert classify(padded, DEFAULT_KEYWORDS) == (Action.OPT_IN, "START")


def test_stop_then_a_long_blank_run_still_opts_out() -> None:
    # Past the length bound only the first MAX_TEXT_CHARS characters are read,
    # and a STOP alone in them is still a leading opt-out.
    text = "STOP" + " " * (2 * MAX_TEXT_CHARS) + "and more"
    assert classify(text, DEFAULT_KEYWORDS) == (Action.OPT_OUT, "STOP")


def test_a_whole_message_keyword_is_read_up_to_the_bound_and_not_past_it() -> None:
    keywords = dataclasses.replace(DEFAULT_KEYWORDS, help=("NEED HELP",))
    at_bound = "NEED" + " " * (MAX_TEXT_CHARS - 8) + "HELP"
    assert len(at_bound) == MAX_TEXT_CHARS
    assert classify(at_bound, keywords) == (Action.HELP, "NEED HELP")
    # Blank padding around it is not counted against the bound.
    assert classify(" \t" + at_bound + "\n", keywords) == (Action.HELP, "NEED HELP")
    # One more character and the message is too long to be a whole keyword.
    assert classify("NEED" + " " * (MAX_TEXT_CHARS - 7) + "HELP", keywords) == (Action.NONE,
                                                                                  None)
    assert classify("HELP" + " " * (2 * MAX_TEXT_CHARS) + "me", DEFAULT_KEYWORDS) == (
        Action.NONE, None)


def test_lists_and_keywords_at_their_size_limits_are_accepted_one_more_is_not() -> None:
    fifty = [f"STOP{i}" for i in range(MAX_KEYWORDS_PER_LIST)]
    assert len(validate_keywords(Keywords(fifty, (), (), MatchMode.LEADING)).opt_out) == 50
    with pytest.raises(InvalidValue, match=r"too many opt-out keywords: 51 \(at most 50\)"):
        validate_keywords(Keywords([*fifty, "QUIT"], (), (), MatchMode.LEADING))
    longest = "S" * MAX_KEYWORD_CHARS
    assert validate_keywords(Keywords([longest], (), (), MatchMode.LEADING)).opt_out == (longest,)
    with pytest.raises(InvalidValue, match="longer than 32 characters"):
        validate_keywords(Keywords([longest + "S"], (), (), MatchMode.LEADING))


def test_keywords_an_admin_just_configured_take_effect() -> None:
    # A spelling no earlier call has seen (so nothing about it is cached).
    word = "HALT" + secrets.token_hex(4).upper()
    keywords = validate_keywords(Keywords((word, "STOP"), ("GO " + word,), (), MatchMode.EXACT))
    assert classify(word.lower(), keywords) == (Action.OPT_OUT, word)
    assert classify(f"go  {word}!", keywords) == (Action.OPT_IN, "GO " + word)
    assert classify("stop", keywords) == (Action.OPT_OUT, "STOP")


def test_refusals_tell_the_admin_what_to_fix() -> None:
    with pytest.raises(InvalidValue) as info:
        validate_keywords(Keywords((), ("START",), ("HELP",), MatchMode.LEADING))
    assert str(info.value) == ("an inbound address needs at least one opt-out keyword "
                               "(such as STOP): opt-outs must always be possible")
    with pytest.raises(InvalidValue) as info:
        validate_keywords(Keywords(("STOP",), (), ("stop",), MatchMode.LEADING))
    assert str(info.value) == ("'stop' is both an opt-out keyword ('STOP') and a help "
                               "keyword: a message must mean one thing")
    with pytest.raises(InvalidValue) as info:
        validate_keywords(Keywords(("STOP",), ("GO",), ("go",), MatchMode.LEADING))
    assert "both an opt-in keyword ('GO') and a help keyword" in str(info.value)
    # The client's bad value is echoed, but only its first 20 characters.
    with pytest.raises(InvalidValue) as info:
        validate_keywords(Keywords(("STOP",), (), (), "y" * 500))  # type: ignore[arg-type]
    assert str(info.value) == f"match must be 'leading' or 'exact', not {'y' * 20!r}"


# --- property tests -------------------------------------------------------------

PADDING = st.text(alphabet=" \t\n\r\u00a0\u3000\u200b", max_size=5)
TRAILERS = st.text(alphabet=".,!?;:…🛑🙏😡👍❤️*#\"')(-", max_size=5)
LEADERS = st.text(alphabet="🛑🙏😡\"'(*#¿¡", max_size=3)


def any_case(word: str) -> st.SearchStrategy[str]:
    def apply(flags: list[bool]) -> str:
        return "".join(c.upper() if up else c.lower() for c, up in zip(word, flags, strict=True))

    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(apply)


ALL_DEFAULTS = (
    [(k, Action.OPT_OUT) for k in DEFAULT_KEYWORDS.opt_out]
    + [(k, Action.OPT_IN) for k in DEFAULT_KEYWORDS.opt_in]
    + [(k, Action.HELP) for k in DEFAULT_KEYWORDS.help]
)


@st.composite
def dressed_keyword(draw: st.DrawFn) -> tuple[str, str, Action]:
    keyword, action = draw(st.sampled_from(ALL_DEFAULTS))
    typed = draw(any_case(keyword))
    if draw(st.booleans()):
        typed = typed.replace(" ", draw(st.sampled_from(["  ", "-", " \t ", "\u3000"])))
    text = draw(PADDING) + draw(LEADERS) + typed + draw(TRAILERS) + draw(PADDING)
    return text, keyword, action


@given(dressed_keyword(), st.sampled_from([MatchMode.LEADING, MatchMode.EXACT]))
def test_any_dressing_of_a_default_keyword_matches(
    case: tuple[str, str, Action], mode: MatchMode
) -> None:
    text, keyword, action = case
    keywords = dataclasses.replace(DEFAULT_KEYWORDS, match=mode)
    assert classify(text, keywords) == (action, keyword)


@given(dressed_keyword())
def test_full_width_forms_match_too(case: tuple[str, str, Action]) -> None:
    text, keyword, action = case
    full_width = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    assert classify(full_width, DEFAULT_KEYWORDS) == (action, keyword)


SENTENCE_WORDS = st.sampled_from(
    ["we", "must", "please", "don't", "i", "want", "to", "you", "now", "ok", "thanks", "why"]
)


@given(
    st.lists(SENTENCE_WORDS, min_size=1, max_size=4),
    st.sampled_from(DEFAULT_KEYWORDS.opt_out),
    st.lists(SENTENCE_WORDS, max_size=3),
)
def test_a_keyword_that_is_not_first_does_not_opt_out(
    before: list[str], keyword: str, after: list[str]
) -> None:
    text = " ".join([*before, keyword.lower(), *after])
    assert classify(text, DEFAULT_KEYWORDS) == (Action.NONE, None)


@given(
    st.sampled_from(DEFAULT_KEYWORDS.opt_out),
    st.lists(SENTENCE_WORDS, min_size=1, max_size=5),
    st.sampled_from([" ", ". ", "! ", ", ", " - "]),
)
def test_a_message_starting_with_an_opt_out_keyword_opts_out(
    keyword: str, rest: list[str], joiner: str
) -> None:
    action, matched = classify(keyword + joiner + " ".join(rest), DEFAULT_KEYWORDS)
    assert action is Action.OPT_OUT
    assert matched is not None
    assert keyword.startswith(matched)  # "STOP ALL ..." may report STOP ALL or STOP


@given(st.text(alphabet=" \t\r\n\u00a0\u2028\u3000\u200b\ufeff", max_size=50))
def test_white_space_only_matches_nothing(text: str) -> None:
    assert classify(text, DEFAULT_KEYWORDS) == (Action.NONE, None)


@given(st.one_of(st.text(max_size=200), hostile_text(max_size=200)))
def test_classify_is_total(text: str) -> None:
    """Any text, lone surrogates and look-alikes included, gets an answer."""
    action, keyword = classify(text, DEFAULT_KEYWORDS)
    assert (keyword is None) == (action is Action.NONE)
    assert normalize_text(normalize_text(text)) == normalize_text(text)


@given(keyword_message())
def test_an_opt_out_keyword_among_hostile_characters_still_opts_out(
    case: tuple[str, str],
) -> None:
    """Full-width forms, invisible characters, odd spaces and emoji around
    the keyword do not hide it."""
    keyword, message = case
    action, matched = classify(message, DEFAULT_KEYWORDS)
    assert action is Action.OPT_OUT, (message, matched)
    assert matched is not None and normalize_text(keyword).startswith(normalize_text(matched))


@given(st.lists(LOOK_ALIKES, min_size=1, max_size=6).map("".join), st.booleans())
def test_look_alike_letters_never_read_as_opt_in_or_help(word: str, leading: bool) -> None:
    """A word spelled with Cyrillic or Greek look-alikes (ЅТОР is not STOP)
    may not turn into a START or HELP: at worst nothing, never the opposite."""
    text = word if leading else "x " + word
    action, _ = classify(text, DEFAULT_KEYWORDS)
    assert action in (Action.NONE, Action.OPT_OUT)


# --- validation -----------------------------------------------------------------


def test_validation_cleans_without_reordering() -> None:
    cleaned = validate_keywords(
        Keywords(
            opt_out=(" stop ", "STOP", "Stop.", "opt   out", "Quit"),
            opt_in=("start",),
            help=("help", "HELP"),
            match=MatchMode.EXACT,
        )
    )
    assert cleaned == Keywords(
        opt_out=("stop", "opt out", "Quit"),
        opt_in=("start",),
        help=("help",),
        match=MatchMode.EXACT,
    )


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        (Keywords((), ("START",), ()), "at least one opt-out keyword"),
        (Keywords(("STOP", " "), (), ()), "opt-out keyword #2 is empty"),
        (Keywords(("STOP",), ("x" * 33,), ()), "longer than 32 characters"),
        (Keywords(("STOP",), (), ("!!",)), "no letters or digits"),
        (Keywords(("STOP",), ("stop",), ()), "both an opt-out keyword"),
        (Keywords(("STOP",), ("GO",), ("go!",)), "and a help keyword"),
        (Keywords(tuple(f"word{i}" for i in range(51)), (), ()), "at most 50"),
        (Keywords(("STOP",), "START", ()), "must be a list"),  # type: ignore[arg-type]
        (Keywords(("STOP", 5), (), ()), "not text"),  # type: ignore[arg-type]
        (Keywords(("ST\x07OP",), (), ()), "control characters"),
        (Keywords(("STOP",), (), (), "fuzzy"), "'leading' or 'exact'"),  # type: ignore[arg-type]
    ],
)
def test_validation_refuses_with_a_reason(keywords: Keywords, message: str) -> None:
    with pytest.raises(InvalidValue, match=message) as caught:
        validate_keywords(keywords)
    assert caught.value.code == "invalid_value"


def test_validation_accepts_a_string_match_mode() -> None:
    keywords = Keywords(("STOP",), (), (), "exact")  # type: ignore[arg-type]
    assert validate_keywords(keywords).match is MatchMode.EXACT
