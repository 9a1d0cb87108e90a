"""Hypothesis strategies for what attackers and careless clients send.

Hypothesis's default text strategy never produces a lone surrogate
(`st.characters()` leaves out category Cs) and rarely a full-width or
look-alike letter; its integers stay small. The strategies here reach those
inputs on purpose, and the property tests of keywords, numbers, the SMPP
codec and the HTTP API share them:

* `hostile_text`: lone surrogates, full-width forms, Cyrillic/Greek letters
  that look Latin, invisible and bidi format characters, odd white space,
  NUL and controls, combining marks, emoji, mixed with ordinary text;
* `keyword_message`: an opt-out keyword dressed up with all of the above;
* `number_spelling` / `smpp_address`: one subscriber's number as people and
  carriers write it: `+`, `1`, `00`, `011` prefixes, separators, full-width
  digits, every TON/NPI;
* `hostile_int` / `hostile_int_text`: huge and negative integers, and the
  strings that Python's `int()` accepts but a client should not send
  (`"1_000"`, `" 5"`, Arabic-Indic digits);
* `c_octet_string` / `octet_string`: SMPP fields empty and at their maximum.
"""

from __future__ import annotations

from hypothesis import strategies as st

# --- characters and text -----------------------------------------------------------

SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
"""Lone surrogates: not Unicode scalar values; `str.encode('utf-8')` refuses them."""

FULL_WIDTH = st.integers(0xFF01, 0xFF5E).map(chr)
"""Full-width ASCII (U+FF01..U+FF5E), as East Asian keyboards type it."""

LOOK_ALIKES = st.sampled_from(
    "АВЕКМНОРСТХЅІЈаеорсхѕіј"  # Cyrillic that looks Latin (ЅТОР is not STOP)
    "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧοτ"  # Greek
    "ⅠⅤⅩⅬⅭⅮⅯⅰⅴⅹ"  # Roman numerals (NFKC maps them to Latin letters)
    "𝐒𝐓𝐎𝐏𝑺𝑻𝑶𝑷𝕊𝕋𝕆ℙ"  # mathematical alphanumerics
    "ſıŀĸ"  # long s, dotless i, ...
)

INVISIBLES = st.sampled_from("\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u202a\u202e\u2066")
SPACES = st.sampled_from(" \t\r\n\x0b\x0c\x00\x1b\x7f\u0085\u00a0\u1680\u2000\u2028\u2029\u3000")
COMBINING = st.sampled_from("\u0300\u0301\u0308\u0327\u0338\u20dd\ufe0f\ufe0e")
EMOJI = st.sampled_from("🛑✋🙅‍♀️👍🏽🇺🇸❤️")

HOSTILE_CHARS = st.one_of(
    st.characters(), SURROGATES, FULL_WIDTH, LOOK_ALIKES, INVISIBLES, SPACES, COMBINING, EMOJI,
)


def hostile_text(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Text in which every character may be hostile (see the module docstring)."""
    return st.lists(HOSTILE_CHARS, min_size=min_size, max_size=max_size).map("".join)


def has_surrogate(text: str) -> bool:
    """Whether `text` holds a lone surrogate (is not valid Unicode)."""
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _full_width(word: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c
                   for c in word)


def keyword_message(keywords: tuple[str, ...] = ("STOP", "stop", "Stop", "STOP ALL", "OPT OUT",
                                                 "ARRET", "ARRÊT", "UNSUBSCRIBE")
                    ) -> st.SearchStrategy[tuple[str, str]]:
    """(keyword, message) where message is the keyword (maybe full-width) with
    hostile characters around it."""
    spelled = st.sampled_from(keywords).flatmap(
        lambda k: st.sampled_from([k, k.lower(), _full_width(k)]).map(lambda s: (k, s)))
    edge = st.lists(st.one_of(SPACES, INVISIBLES, EMOJI, st.sampled_from(".!?¡¿…\"'()")),
                    max_size=4).map("".join)
    return st.tuples(spelled, edge, edge).map(lambda t: (t[0][0], t[1] + t[0][1] + t[2]))


# --- phone numbers -----------------------------------------------------------------

NANP_NSN = st.tuples(st.integers(2, 9), st.integers(0, 99), st.integers(2, 9),
                     st.integers(0, 999_999)).map(lambda t: f"{t[0]}{t[1]:02d}{t[2]}{t[3]:06d}")
"""A ten-digit North American number (area code and subscriber), no country code."""

NUMBER_PREFIXES = ("", "1", "+1", "+ 1", "001", "0111", "+001", "00 1", "011 1")
"""How a +1 number is prefixed: national, trunk 1, E.164, and the
international call prefixes 00 (most of the world) and 011 (NANP)."""


def _dress_digits(digits: str, draw: st.DrawFn) -> str:
    separators = draw(st.lists(st.sampled_from(["", " ", "-", ".", "(", ")", "/", "\u00a0"]),
                               min_size=len(digits), max_size=len(digits)))
    text = "".join(d + s for d, s in zip(digits, separators, strict=True))
    if draw(st.booleans()):
        text = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in text)
    return text


@st.composite
def number_spelling(draw: st.DrawFn, nsn: str | None = None) -> tuple[str, str]:
    """(E.164, spelling): one +1 number, and a way a person or a carrier may
    write it (prefix, separators, full-width digits)."""
    nsn = nsn if nsn is not None else draw(NANP_NSN)
    prefix = draw(st.sampled_from(NUMBER_PREFIXES))
    return "+1" + nsn, prefix + _dress_digits(nsn, draw)


TONS = st.one_of(st.integers(0, 6), st.sampled_from([7, 0x7F, 0xFF]))
NPIS = st.one_of(st.sampled_from([0, 1, 3, 4, 6, 8, 9, 10, 14, 18]), st.integers(0, 0xFF))


@st.composite
def smpp_address(draw: st.DrawFn) -> tuple[str, bytes, int, int]:
    """(E.164, addr, TON, NPI): a +1 number as a carrier might put it in an
    SMPP address field, with any TON/NPI; sometimes with junk bytes."""
    e164 = "+1" + draw(NANP_NSN)
    digits = e164[2:]
    addr = draw(st.sampled_from([digits, "1" + digits, "+1" + digits, "001" + digits,
                                 "0111" + digits, digits + "#", "*1" + digits]))
    raw = addr.encode("ascii")
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=21))
    return e164, raw, draw(TONS), draw(NPIS)


# --- integers ------------------------------------------------------------------------

EDGE_INTS = (0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
             -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**30), 10**400)

hostile_int = st.one_of(st.sampled_from(EDGE_INTS), st.integers(),
                        st.integers(-(2**80), 2**80))
"""Integers well past 32 and 64 bits, both signs."""

hostile_int_text = st.one_of(
    hostile_int.map(str),
    st.sampled_from(["", " ", " 5", "5 ", "+5", "-0", "05", "0x10", "1e3", "1.0", "1_000",
                     "٣", "５", "NaN", "inf", "9" * 500, "5\x00", "5\ud800"]),
    hostile_text(max_size=8),
)
"""What arrives where an integer is expected (limits, cursors' contents)."""


# --- SMPP fields ---------------------------------------------------------------------


def c_octet_string(max_len: int) -> st.SearchStrategy[bytes]:
    """A C-Octet String value (without its NUL) of 0..max_len-1 octets, biased
    to empty and to the maximum."""
    longest = max_len - 1
    no_nul = st.binary(max_size=longest).map(lambda b: b.replace(b"\x00", b"x"))
    return st.one_of(st.just(b""), st.just(b"9" * longest),
                     st.binary(min_size=longest, max_size=longest).map(
                         lambda b: b.replace(b"\x00", b"\xff")), no_nul)


def octet_string(max_len: int) -> st.SearchStrategy[bytes]:
    """An Octet String of 0..max_len octets (any byte), biased to the edges."""
    return st.one_of(st.just(b""), st.binary(min_size=max_len, max_size=max_len),
                     st.binary(max_size=max_len))
