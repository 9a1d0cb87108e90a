"""The shared hostile strategies (tests/strategies.py) really reach what
they promise. Hypothesis's default text strategy produced no lone surrogate
in 3,000 examples; `find` shows these do, within Hypothesis's default budget.
"""

from __future__ import annotations

import unicodedata

from hypothesis import Phase, find, settings
from hypothesis import strategies as st

from tests.strategies import (
    c_octet_string,
    has_surrogate,
    hostile_int,
    hostile_int_text,
    hostile_text,
    number_spelling,
    smpp_address,
)

# Generation only: the examples need not be shrunk to be proof that they exist.
BUDGET = settings(max_examples=1000, database=None, phases=[Phase.generate])


def test_the_text_strategy_produces_lone_surrogates() -> None:
    found = find(hostile_text(), has_surrogate, settings=BUDGET)
    assert has_surrogate(found)
    # ...which is exactly what a UTF-8 encoder (a database driver, a metric
    # label) refuses:
    try:
        found.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        raise AssertionError("a lone surrogate encoded")


def test_the_text_strategy_produces_full_width_and_look_alike_letters() -> None:
    full_width = find(hostile_text(), lambda s: any(0xFF21 <= ord(c) <= 0xFF5A for c in s),
                      settings=BUDGET)
    letter = next(c for c in full_width if 0xFF21 <= ord(c) <= 0xFF5A)
    assert unicodedata.normalize("NFKC", letter).isascii()
    cyrillic = find(hostile_text(), lambda s: any("CYRILLIC" in unicodedata.name(c, "")
                                                  for c in s), settings=BUDGET)
    assert cyrillic
    invisible = find(hostile_text(), lambda s: "\u200b" in s or "\ufeff" in s, settings=BUDGET)
    assert invisible


def test_number_spellings_use_international_prefixes_and_every_ton() -> None:
    assert find(number_spelling(), lambda c: c[1].startswith("011"), settings=BUDGET)
    assert find(number_spelling(), lambda c: c[1].startswith("00"), settings=BUDGET)
    assert find(number_spelling(), lambda c: any(0xFF10 <= ord(ch) <= 0xFF19 for ch in c[1]),
                settings=BUDGET)
    for ton in range(7):
        assert find(smpp_address(), lambda c, t=ton: c[2] == t, settings=BUDGET)


def test_integers_go_past_64_bits_both_ways() -> None:
    assert find(hostile_int, lambda n: n >= 2**64, settings=BUDGET) >= 2**64
    assert find(hostile_int, lambda n: n < -(2**63), settings=BUDGET) < -(2**63)
    assert find(hostile_int_text, lambda t: not t.isascii(), settings=BUDGET)


def test_smpp_fields_come_empty_and_at_their_maximum() -> None:
    assert find(c_octet_string(21), lambda b: b == b"", settings=BUDGET) == b""
    longest = find(c_octet_string(21), lambda b: len(b) == 20, settings=BUDGET)
    assert b"\x00" not in longest
    assert find(st.lists(c_octet_string(6), min_size=1), lambda bs: len(bs[0]) == 5,
                settings=BUDGET)
