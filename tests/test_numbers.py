"""Phone numbers: every spelling of a subscriber becomes one string, scope is
US/Canada only, and errors say what is wrong."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rules import numbers
from rules.model import InvalidNumber, OutOfScope
from rules.numbers import (
    destination,
    from_key,
    from_smpp,
    in_scope,
    mask,
    normalize,
    require_in_scope,
    to_key,
)
from tests.strategies import NANP_NSN, hostile_int_text, hostile_text, number_spelling, smpp_address


@pytest.fixture(autouse=True)
def nothing_remembered() -> None:
    """Every test checks what the functions compute now, not answers memoised
    by an earlier test: the hot-path caches and the in-scope area-code memo
    start empty (it also keeps the tests independent of their order, and a
    mutation tool forks after a first run that would fill them)."""
    for cached in (numbers._normalize_cached, numbers.from_smpp, numbers.destination,
                   numbers.region_of, numbers.in_scope, numbers.to_key):
        cached.cache_clear()
    numbers._IN_SCOPE_AREA_CODES.clear()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 (415) 555-0100", "+14155550100"),
        ("+14155550100", "+14155550100"),
        ("14155550100", "+14155550100"),
        ("4155550100", "+14155550100"),
        ("415.555.0100", "+14155550100"),
        ("(415) 555-0100", "+14155550100"),
        ("1 415 555 0100", "+14155550100"),
        ("  +1 415 555 0100\t", "+14155550100"),
        ("＋１ ４１５ ５５５ ０１００", "+14155550100"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+1 604 555 0100", "+16045550100"),  # Vancouver
        ("+1 876 555 0100", "+18765550100"),  # Jamaica: valid, just out of scope
        ("12345", "12345"),
        ("898211", "898211"),
        # An international dialling prefix before the shortest numbers (Niue: 4 digits)
        ("00 683 1234", "+6831234"),
        ("011 683 1234", "+6831234"),
    ],
)
def test_normalize_accepts_what_people_type(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("415-555", "too short"),
        ("5550100", "too short for a North American number (10 digits with the area code)"),
        ("1234", "too short"),
        ("hello", "it contains letters"),
        ("1-800-FLOWERS", "it contains letters"),
        ("+1 415 555 01000", "too long"),
        ("+1 415 555 010", "too short"),
        ("+999 123 4567", "unknown country code"),
        ("442079460958", "numbers outside North America need their country code after a '+'"),
        ("+1 015 555 0100", "a North American area code cannot start with 0 or 1"),
        ("+1 415 155 0100", "a North American exchange cannot start with 0 or 1"),
        ("415#555#0100", "only digits, spaces, '+', '(', ')', '-', '.' and '/' are allowed"),
        ("+", "it has no digits"),
        ("898-21", "too short"),  # a short code is a bare run of digits
        ("1 015 555 0100", "a North American area code cannot start with 0 or 1"),
        ("415 155 0100", "a North American exchange cannot start with 0 or 1"),
        ("44207946095", "numbers outside North America need their country code after a '+'"),
        # What phonenumbers itself cannot parse after the '+'
        ("+44 1", "too short"),
        ("+44 12345678901234567890", "too long"),
        ("+44", "not a number phonenumbers can read"),
    ],
)
def test_normalize_rejects_with_a_sentence(raw: str, why: str) -> None:
    # The sentence reaches API clients as the error's message.
    with pytest.raises(InvalidNumber) as caught:
        normalize(raw)
    assert str(caught.value) == f"{raw!r} is not a phone number: {why}"
    assert caught.value.code == "invalid_number"


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("x" * 24, "'" + "x" * 24 + "'"),
        ("x" * 25, "'" + "x" * 24 + "...'"),
        ("1" * 65, "'" + "1" * 24 + "...'"),
    ],
)
def test_an_error_quotes_at_most_24_characters_of_the_input(raw: str, quoted: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize(raw)
    assert str(caught.value).startswith(f"{quoted} is not a phone number: ")


def test_the_input_limit_is_64_characters() -> None:
    # Given a number padded with separators to exactly the limit, it is read
    padded = "+1 415 555 0100".ljust(63) + "."
    assert len(padded) == numbers.MAX_INPUT_LENGTH
    assert normalize(padded) == "+14155550100"
    # One character more is refused without being parsed
    with pytest.raises(InvalidNumber, match=r"longer than 64 characters$"):
        normalize(padded + ".")


def test_error_message_for_truncated_number_reads_well() -> None:
    with pytest.raises(InvalidNumber, match=r"^'415-555' is not a phone number: too short$"):
        normalize("415-555")


def test_megabytes_of_input_are_rejected_without_parsing() -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize("5" * 5_000_000)
    assert len(str(caught.value)) < 100


def test_normalize_refuses_non_strings() -> None:
    with pytest.raises(InvalidNumber, match=r"^a phone number must be text, not int$"):
        normalize(4155550100)  # type: ignore[arg-type]


# --- SMPP addresses -----------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "ton", "npi"),
    [
        ("14155550100", 1, 1),
        ("+14155550100", 1, 1),
        (b"14155550100", 1, 1),
        (b"14155550100\x00", 1, 1),
        ("4155550100", 2, 1),
        ("14155550100", 2, 1),
        ("4155550100", 0, 0),
        ("14155550100", 0, 0),
        ("+14155550100", 0, 0),
        ("4155550100", 2, 8),
    ],
)
def test_every_smpp_form_of_one_subscriber_is_the_same_string(
    addr: str | bytes, ton: int, npi: int
) -> None:
    assert from_smpp(addr, ton, npi) == "+14155550100" == normalize("+1 415 555 0100")


@pytest.mark.parametrize(
    ("addr", "ton", "expected"),
    [
        ("898211", 3, "898211"),
        ("12345", 6, "12345"),
        ("12345", 0, "12345"),
        ("12345", 2, "12345"),
        ("12345", 1, "12345"),  # some SMSCs label short codes international
        ("898211", 4, "898211"),
        ("442079460958", 1, "+442079460958"),
        ("442079460958", 0, "+442079460958"),
        ("18765550100", 1, "+18765550100"),
    ],
)
def test_smpp_short_codes_and_foreign_numbers(addr: str, ton: int, expected: str) -> None:
    assert from_smpp(addr, ton, 1) == expected


@pytest.mark.parametrize(
    ("addr", "ton", "why"),
    [
        ("ACME", 5, "alphanumeric"),
        ("14155550100", 5, "alphanumeric"),
        ("5550100", 4, "area code"),
        ("442079460958", 2, "TON 2"),
        (b"\xff\xfe", 1, "ASCII"),
        ("", 0, "empty"),
        ("SHOP", 0, "letters"),
    ],
)
def test_smpp_addresses_that_are_not_subscribers(addr: str | bytes, ton: int, why: str) -> None:
    with pytest.raises(InvalidNumber, match=why):
        from_smpp(addr, ton, 0)


@pytest.mark.parametrize(
    ("addr", "ton", "message"),
    [
        (b"\xff\xfe", 1, "an SMPP address must be ASCII"),
        ("ACME", 5, "'ACME' is an alphanumeric sender ID (TON 5), not a subscriber number"),
        ("5550100", 4,
         "'5550100' is not a phone number: a subscriber number (TON 4) without its area code"),
        ("442079460958", 2, "'442079460958' is not a phone number: "
         "not a North American national number (TON 2 expects 10 digits)"),
        ("9" * 65, 1, "'" + "9" * 24 + "...' is not a phone number: longer than 64 characters"),
    ],
)
def test_a_refused_smpp_address_says_why_in_full(addr: str | bytes, ton: int, message: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        from_smpp(addr, ton, 0)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("addr", "why"),
    [
        ("1415555010", "too short"),  # one digit short of 1 + NANP
        ("141555501001", "too long"),  # one digit too many
        ("10155550100", "a North American area code cannot start with 0 or 1"),
        ("14151550100", "a North American exchange cannot start with 0 or 1"),
    ],
)
def test_an_international_address_that_only_looks_north_american_is_refused(
    addr: str, why: str
) -> None:
    # Given TON 1 digits starting with 1 that are not a possible +1 number,
    # then neither reading (international, or mislabelled national) accepts them
    for read in (from_smpp, destination):
        with pytest.raises(InvalidNumber) as caught:
            read(addr, 1, 1)
        assert str(caught.value) == f"{addr!r} is not a phone number: {why}"


@pytest.mark.parametrize(
    ("addr", "ton", "expected"),
    [
        # 11 digits not starting with 1 are international, labelled so or not
        ("44207946095", 1, "+44207946095"),
        ("44207946095", 0, "+44207946095"),
        ("41445550100", 0, "+41445550100"),  # Zurich, not a mangled +1 number
        # A '+' says international whatever the TON label
        ("+442079460958", 2, "+442079460958"),
        ("+14155550100", 2, "+14155550100"),
    ],
)
def test_the_country_code_is_read_where_the_digits_carry_one(
    addr: str, ton: int, expected: str
) -> None:
    assert from_smpp(addr, ton, 1) == expected


@pytest.mark.parametrize(
    ("addr", "ton", "why"),
    [
        ("+898211", 0, "unknown country code"),  # a '+' makes it no short code
        ("+999123456", 1, "unknown country code"),
        ("999123456789", 0, "unknown country code"),
        ("415555010", 1, "too short"),  # 9 digits: not a mislabelled national number either
        ("5550100", 2, "not a North American national number (TON 2 expects 10 digits)"),
        ("44207946095", 2, "not a North American national number (TON 2 expects 10 digits)"),
    ],
)
def test_smpp_digits_that_are_no_number_are_refused_with_the_reason(
    addr: str, ton: int, why: str
) -> None:
    with pytest.raises(InvalidNumber) as caught:
        from_smpp(addr, ton, 1)
    assert str(caught.value) == f"{addr!r} is not a phone number: {why}"


@pytest.mark.parametrize("raw", ["+١ ٤١٥ ٥٥٥ ٠١٠٠",
                                 "४१५५५५०१००"])
def test_decimal_digits_of_other_scripts_are_read_as_digits(raw: str) -> None:
    # Arabic-Indic and Devanagari digits, as a phone keyboard in those locales types them
    assert normalize(raw) == "+14155550100"


@pytest.mark.parametrize("addr", ["X14155550100", "4155550100X", "X898211"])
def test_letters_at_the_edges_of_an_smpp_address_make_it_not_a_number(addr: str) -> None:
    with pytest.raises(InvalidNumber, match="it contains letters"):
        from_smpp(addr, 0, 0)


def test_an_smpp_address_of_exactly_64_characters_is_read() -> None:
    padded = "1 415 555 0100".ljust(64, "-")
    assert from_smpp(padded, 0, 0) == "+14155550100"
    assert from_smpp(padded.encode(), 1, 1) == "+14155550100"


def test_international_ton_means_the_digits_carry_the_country_code() -> None:
    # SMPP 3.4 5.2.5: TON 1 digits start with the country code.
    assert from_smpp("41445550100", 1, 1) == "+41445550100"  # Zurich, not +1 414
    assert from_smpp("442079460958", 1, 1) == "+442079460958"


def test_a_mislabelled_national_number_is_still_read() -> None:
    # TON 1 "4155550100" would be +41 55 555 0100, one digit short for
    # Switzerland: impossible, so it is the North American number it looks like.
    assert from_smpp("4155550100", 1, 1) == "+14155550100"
    with pytest.raises(InvalidNumber):
        from_smpp("4150550100", 1, 1)  # neither reading is possible


nanp_national = st.from_regex(r"\A[0-9]{10}\Z", fullmatch=True)


@given(nanp_national, st.sampled_from([0, 1, 2]), st.booleans())
def test_smpp_fast_path_equals_phonenumbers_path(nsn: str, ton: int, with_one: bool) -> None:
    """The digit fast path gives exactly what phonenumbers gives (or both
    refuse the number). A national form starting 00 or 011 is an international
    prefix, not an area code: that reading is tested on its own below."""
    addr = ("1" + nsn) if (with_one or ton == 1) else nsn
    assume(not addr.startswith(("00", "011")))
    try:
        slow: str | None = numbers._e164(addr, "1" + nsn)
    except InvalidNumber:
        slow = None
    try:
        fast: str | None = from_smpp(addr, ton, 1)
    except InvalidNumber:
        fast = None
    assert fast == slow
    try:
        typed: str | None = normalize(addr)
    except InvalidNumber:
        typed = None
    assert typed == slow


def test_a_national_form_starting_00_or_011_is_an_international_prefix() -> None:
    # 00 40 000000 dials Romania, never a North American area code "004".
    assert from_smpp("0040000000", 0, 1) == normalize("+40000000")
    assert from_smpp("01114155550100", 0, 1) == "+14155550100"
    assert from_smpp("0014155550100", 2, 1) == "+14155550100"


@given(st.one_of(st.text(max_size=40), hostile_text(max_size=40), hostile_int_text))
def test_normalize_never_crashes_on_any_text(raw: str) -> None:
    try:
        result = normalize(raw)
    except InvalidNumber:
        return
    # Whatever it accepts is stable and has a key that round-trips.
    assert normalize(result) == result
    assert from_key(to_key(result)) == result


@given(number_spelling())
def test_a_spelling_of_a_number_is_that_number_or_refused(case: tuple[str, str]) -> None:
    """However a +1 number is dressed (00 / 011 prefixes, separators,
    full-width digits), it is never read as a different subscriber."""
    e164, spelled = case
    try:
        got = normalize(spelled)
    except InvalidNumber:
        return
    assert got == e164, (spelled, got)


@given(NANP_NSN, st.sampled_from(["", "1", "+1"]), st.sampled_from(["", " ", "-", "."]),
       st.booleans())
def test_common_spellings_of_a_number_all_normalise_to_it(
    nsn: str, prefix: str, sep: str, full_width: bool,
) -> None:
    spelled = prefix + sep.join([nsn[:3], nsn[3:6], nsn[6:]])
    if full_width:
        spelled = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in spelled)
    try:
        got = normalize(spelled)
    except InvalidNumber:
        # Only numbers the numbering plan does not have (e.g. N11 area codes)
        assert not phonenumbers.is_valid_number(phonenumbers.parse("+1" + nsn)), spelled
        return
    assert got == "+1" + nsn


@given(st.one_of(
    smpp_address(),
    st.tuples(st.just(""), st.text("+0123456789 #*-()", max_size=24).map(str.encode),
              st.integers(0, 255), st.integers(0, 255)),
))
def test_every_destination_the_relay_accepts_has_an_index_key(
    address: tuple[str, bytes, int, int],
) -> None:
    # The relay keys every destination it reads (gateway.enforcement.Destinations)
    _, addr, ton, npi = address
    try:
        number = numbers.destination(addr, ton, npi)
    except InvalidNumber:
        return  # refused with ESME_RINVDSTADR, never keyed
    assert numbers.from_key(numbers.to_key(number)) == number


@given(smpp_address())
def test_any_smpp_address_is_that_subscriber_or_refused(
    case: tuple[str | None, bytes, int, int],
) -> None:
    """Whatever TON/NPI and prefix a carrier uses, an SMPP address is read as
    the subscriber it spells or refused with InvalidNumber, nothing else."""
    e164, addr, ton, npi = case
    try:
        got = from_smpp(addr, ton, npi)
    except InvalidNumber:
        return
    assert got.startswith("+") and got[1:].isdigit()
    # TON 1 says the digits start with the country code: the bare ten digits
    # may then be another country's number (+20 200 ... is Egypt).
    digits = bytes(b for b in addr if 0x30 <= b <= 0x39)
    ambiguous = ton == 1 and e164 is not None and digits == e164[2:].encode()
    if e164 is not None and not ambiguous:
        assert got == e164, (addr, ton, npi, got)


# --- scope --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+14155550100", True),  # US
        ("+16045550100", True),  # CA
        ("+18005550100", True),  # US toll-free
        ("+17875550100", True),  # PR
        ("+13405550100", True),  # VI
        ("+16715550100", True),  # GU
        ("+16845550100", True),  # AS
        ("+16705550100", True),  # MP
        ("898211", True),
        ("12345", True),
        ("+18765550100", False),  # Jamaica
        ("+12425550100", False),  # Bahamas
        ("+12465550100", False),  # Barbados
        ("+442079460958", False),
        ("+33123456789", False),
    ],
)
def test_in_scope_is_us_canada_and_us_territories(number: str, expected: bool) -> None:
    assert in_scope(number) is expected


def test_unknown_nanp_area_code_fails_closed_into_scope() -> None:
    # 555 is not an assigned area code; no region claims it, so a STOP from
    # it is still honoured rather than dropped.
    assert numbers.region_of("+15555550100") is None
    assert in_scope("+15555550100")


def test_require_in_scope_names_the_country() -> None:
    assert require_in_scope("(415) 555-0100") == "+14155550100"
    with pytest.raises(OutOfScope) as caught:
        require_in_scope("+1 876 555 0100")
    assert str(caught.value) == (
        "+18765550100 is in Jamaica (JM): opt-out handling covers the US and Canada only"
    )
    assert caught.value.code == "out_of_scope"
    with pytest.raises(OutOfScope, match=r"United Kingdom \(GB\)"):
        require_in_scope("+44 20 7946 0958")
    with pytest.raises(InvalidNumber):
        require_in_scope("nope")


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        # A 12-character E.164 number outside +1 is not read as North American.
        ("+33 1 23 45 67 89", "France (FR)"),
        # Non-geographic numbers (international freephone, satellite) have no country.
        ("+800 1234 5678", "no country"),
        ("+882 345 678 901", "no country"),
        # The geocoder has no English name for Ascension or Kosovo: the region code stands alone.
        ("+247 6288 9", "AC"),
        ("+383 28 012 345", "XK"),
    ],
)
def test_out_of_scope_numbers_name_where_they_are(raw: str, where: str) -> None:
    # Given a possible number outside the US and Canada
    number = normalize(raw)
    # When the API is asked to record it, then the refusal says where it is
    with pytest.raises(OutOfScope) as caught:
        require_in_scope(raw)
    assert str(caught.value) == (
        f"{number} is in {where}: opt-out handling covers the US and Canada only"
    )


@pytest.mark.parametrize(
    ("number", "region"),
    [("+33123456789", "FR"), ("+61212345678", "AU"), ("+14155550100", "US"),
     ("+16135550100", "CA"), ("+80012345678", "001"), ("898211", None)],
)
def test_region_of_a_normalised_number(number: str, region: str | None) -> None:
    assert numbers.region_of(number) == region


# --- masking and keys -----------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+14155550100", "+1415*****00"),
        ("+442079460958", "+442*******58"),
        ("898211", "898211"),
        ("not a number", "<12 chars masked>"),
        ("", "<0 chars masked>"),
    ],
)
def test_mask_hides_the_subscriber(number: str, masked: str) -> None:
    assert mask(number) == masked


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        # The shortest and the longest E.164 numbers keep their shape.
        ("+6831234", "+683**34"),  # Niue: 4-digit subscriber numbers
        ("+123456789012345", "+1234*********45"),  # 15 digits, the E.164 maximum
        # Too long for E.164, or a '+' before anything but digits: only the length.
        ("+1234567890123456", "<17 chars masked>"),
        ("+123456", "<7 chars masked>"),  # 6 digits: shorter than any E.164 number
        ("+1 (415) 555-0100", "<17 chars masked>"),
        ("+x4155550100", "<12 chars masked>"),
        ("+", "<1 chars masked>"),
        # However long the junk, the log line stays short.
        ("9" * 5000, "<999 chars masked>"),
    ],
)
def test_mask_shows_only_the_length_of_what_is_not_e164(number: str, masked: str) -> None:
    assert mask(number) == masked


def test_keys_are_compact_and_disjoint() -> None:
    assert to_key("+14155550100") == 14155550100
    short_keys = {to_key("12345"), to_key("012345"), to_key("123456"), to_key("01234")}
    assert len(short_keys) == 4
    assert all(key < 2**35 for key in short_keys)
    for key in short_keys:
        # No normalised E.164 number spells the digits of a short-code key.
        with pytest.raises(InvalidNumber):
            normalize("+" + str(key))
    assert from_key(to_key("012345")) == "012345"


@given(st.integers(min_value=2_000_000_000, max_value=9_999_999_999))
def test_every_nanp_key_round_trips(nsn: int) -> None:
    try:
        number = normalize(str(nsn))
    except InvalidNumber:
        return
    key = to_key(number)
    assert key < 2**35
    assert from_key(key) == number


@given(st.integers(min_value=0, max_value=999_999), st.sampled_from([5, 6]))
def test_every_short_code_key_round_trips(value: int, length: int) -> None:
    code = str(value).zfill(length)[-length:]
    assert from_key(to_key(code)) == code


@pytest.mark.parametrize(
    "key",
    [
        0,
        -14155550100,
        10_000_000_000,  # the start of the short-code range: length 0
        10_004_001_234,  # a 4-digit "short code"
        10_007_001_234,  # a 7-digit "short code"
        10_999_999_999,
    ],
)
def test_from_key_refuses_keys_no_number_has(key: int) -> None:
    # Keys are read back from the store: a corrupt one is an error, not a number.
    with pytest.raises(ValueError, match=f"^not a number key: {key}$"):
        from_key(key)


def test_from_key_reads_the_edges_of_the_short_code_range() -> None:
    assert from_key(10_005_000_000) == "00000"
    assert from_key(10_006_999_999) == "999999"


@pytest.mark.parametrize("bad", ["", "+", "+0123", "+10155550100", "1234", "abcde", "+1 415"])
def test_to_key_refuses_unnormalised_input(bad: str) -> None:
    with pytest.raises(ValueError):
        to_key(bad)


@given(st.integers(min_value=2_000_000_000, max_value=9_999_999_999))
def test_nanp_region_lookup_without_parsing_equals_phonenumbers(nsn: int) -> None:
    number = f"+1{nsn}"
    expected = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    assert numbers.region_of(number) == expected


def test_scope_by_area_code_memo_never_admits_other_nanp_countries() -> None:
    from rules.numbers import in_scope

    # Seen in scope first, then numbers of other +1 countries: still out.
    for number in ("+14155550100", "+16135550100", "+17875550100"):
        assert in_scope(number)
    for number in ("+18765550111", "+12425550111", "+18095550111", "+14415550111"):
        assert not in_scope(number)
    assert in_scope("+14155550999")  # answered from the area-code memo


# --- destinations as a carrier routes them (issue 8, hole 3) -----------------------

#: A NANP national number of possible shape: area code and exchange 2-9.
nanp_nsn = st.from_regex(r"\A[2-9][0-9]{2}[2-9][0-9]{6}\Z", fullmatch=True)
_SEPARATOR_CHARS = [" ", "-", ".", "(", ")", "/"]


@st.composite
def spellings(draw: st.DrawFn, nsn: str) -> tuple[str, int, int]:
    """(destination_addr, TON, NPI): one way a sender may address +1 `nsn`
    that a carrier routes to that subscriber."""
    national = draw(st.booleans())
    if national:
        # Bare 10 digits: North American national format under any TON but
        # 1, where SMPP says the digits start with the country code.
        prefix, ton = "", draw(st.sampled_from([0, 2, 3, 4, 5, 6]))
        digits = nsn
    else:
        prefix = draw(st.sampled_from(["", "+", "00", "011"]))
        ton = draw(st.integers(0, 6))
        digits = "1" + nsn
    # Separators anywhere between digits (not inside an IDD prefix).
    out = []
    for digit in digits:
        out.append(digit)
        if draw(st.integers(0, 4)) == 0:
            out.append(draw(st.sampled_from(_SEPARATOR_CHARS)))
    body = "".join(out).strip(" -./()") or digits
    lead = draw(st.sampled_from(["", "*", "**", "#"]))
    tail = draw(st.sampled_from(["", "#", "*", "##"]))
    return lead + prefix + body + tail, ton, draw(st.integers(0, 255))


@given(st.data(), nanp_nsn)
def test_every_routable_spelling_is_decided_as_the_one_subscriber(
    data: st.DataObject, nsn: str
) -> None:
    addr, ton, npi = data.draw(spellings(nsn))
    expected = "+1" + nsn
    assert destination(addr.encode(), ton, npi) == expected
    # HTTP /check and /mo read the same spelling the same way.
    assert normalize(addr) == expected


@pytest.mark.parametrize(
    ("addr", "ton"),
    [
        ("0014155550123", 1), ("01114155550123", 1), ("0014155550123", 2),
        ("14155550123", 4), ("14155550123", 5), ("14155550123#", 1), ("*14155550123", 1),
        ("(415) 555-0123", 0), ("+1-415-555-0123", 1), ("4155550123", 5),
    ],
)
def test_the_spellings_of_the_issue(addr: str, ton: int) -> None:
    assert destination(addr.encode(), ton, 1) == "+14155550123"


@pytest.mark.parametrize(
    ("addr", "ton"),
    [("", 1), ("ACME", 5), ("1415555O123", 1), ("#31#14155550123", 1),
     ("14155550123;", 1), ("++14155550123", 1), ("5550123", 4), ("4150550100", 1)],
)
def test_destinations_that_are_not_routable_numbers_are_invalid(addr: str, ton: int) -> None:
    with pytest.raises(InvalidNumber):
        destination(addr.encode(), ton, 1)


def test_short_codes_and_foreign_numbers_keep_their_meaning() -> None:
    assert destination(b"898211", 4, 0) == "898211"
    assert destination(b"00123", 1, 1) == "00123"  # too short for an IDD prefix
    assert destination(b"00442079460958", 0, 0) == "+442079460958"
    assert destination(b"41445550100", 1, 1) == "+41445550100"  # TON 1: Zurich


@given(st.binary(max_size=40), st.integers(0, 255), st.integers(0, 255))
def test_destination_only_ever_raises_invalid_number(addr: bytes, ton: int, npi: int) -> None:
    try:
        result = destination(addr, ton, npi)
    except InvalidNumber:
        return
    # What it accepts is a normalised subscriber whose key round-trips.
    assert normalize(result) == result
    assert from_key(to_key(result)) == result


@given(nanp_nsn, st.sampled_from([0, 1, 2]))
def test_plain_digits_read_as_before(nsn: str, ton: int) -> None:
    """The hot path: clean digit destinations mean what `from_smpp` says."""
    addr = ("1" + nsn).encode()
    assert destination(addr, ton, 1) == from_smpp(addr, ton, 1) == "+1" + nsn
