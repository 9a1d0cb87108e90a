"""Phone numbers: one spelling per subscriber, and whether opt-out applies.

Every layer (SMPP relay, HTTP API, store, in-memory index) must agree on
which string names a subscriber, or an opt-out recorded under one spelling
would not block a send addressed under another. This module is that single
place. Numbering-plan knowledge comes from `phonenumbers`; the only rules
written here are the ones it does not cover (SMPP TON handling, US/CA short
codes, the in-memory key encoding).

Decisions
---------
* **E.164 or short code.** A subscriber is an E.164 string (``+14155550100``)
  or a US/CA short code kept as its 5-6 digits (``"898211"``).
* **Possible, not valid.** A number is accepted when
  ``phonenumbers.is_possible_number`` says so (length fits the country), not
  ``is_valid_number``: tests and demos use the fictional 555-01xx range, and
  an area code newer than the installed metadata must not make a STOP
  bounce. For +1 numbers the NANP shape is checked as well (area code and
  exchange start with 2-9), which rejects strings no subscriber can have and
  keeps the ``+10...`` key range free for short codes (see `to_key`).
* **Bare digits.** Without a ``+`` only North America is assumed: 10 digits,
  or 11 digits starting with 1, mean +1; 5-6 digits are a short code.
  Anything else must carry its country code after a ``+`` or an
  international dialling prefix: ``011`` (North America) and ``00`` (most
  of the world) at the start of a longer run of digits mean ``+`` (no
  NANP number starts with 0, so the reading is unambiguous).
* **Dial-string decorations.** ``*`` and ``#`` before the first digit or
  after the last (``*14155550123``, ``14155550123#``) are keypad noise a
  carrier ignores when routing, so they are dropped; inside the digits
  (``*67``-style service codes, ``#31#``) they make the input not a number.
* **Scope.** Opt-out handling covers short codes and +1 numbers whose region
  is US, CA or a US territory (PR, VI, GU, AS, MP). A +1 number whose area
  code the installed metadata does not place in any region is treated as in
  scope: failing closed (handling one number too many) is better than
  dropping a STOP from a newly opened US area code.
* **SMPP TON.** TON 1 (international) means the digits carry the country
  code, as SMPP 3.4 section 5.2.5 defines, so ``41445550100`` with TON 1 is
  Zurich. Only when that reading is impossible are 10 digits of NANP shape
  read as +1 (``4155550100`` would be a Swiss number one digit short):
  carriers do mislabel national numbers, and a dropped STOP is the worst
  outcome. TON 2 (national) is North American national format. TON 0
  (unknown) is read like free-form input, and 12+ digits (or 11 not
  starting with 1) are taken as international. 5-6 digits without a ``+``
  are a short code whatever the TON (SMSCs label short codes as 0, 1, 3 or
  6; no subscriber number is that short, and a STOP sent to a short code
  must not be lost to a label). TON 5 (alphanumeric) is a sender ID, never
  a subscriber; TON 4 (subscriber number) lacks its area code. NPI is
  informational and ignored.
* **Destinations.** `destination` reads a submit's destination as the
  subscriber a carrier would route it to (SPEC section 7): like
  `from_smpp`, except that TON 4 (subscriber number), 5 (alphanumeric),
  3 and 6 are labels a carrier does not route on, so their digits are read
  as TON 0. Whatever is still not a number is InvalidNumber, which the
  relay answers ESME_RINVDSTADR and never forwards (fail closed: what we
  cannot read we cannot check against the opt-outs).
* **Hot path.** `from_smpp` and `in_scope` run for every submit_sm; both are
  bounded LRU caches over pure functions, and plain NANP digit strings skip
  ``phonenumbers.parse`` (the results are equal; a property test checks it).
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Final

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, ValidationResult

from rules.model import InvalidNumber, OutOfScope

__all__ = [
    "IN_SCOPE_REGIONS",
    "MAX_INPUT_LENGTH",
    "destination",
    "from_key",
    "from_smpp",
    "in_scope",
    "is_short_code",
    "mask",
    "normalize",
    "region_of",
    "require_in_scope",
    "to_key",
]

#: Regions whose +1 numbers get opt-out handling (SPEC section 2).
IN_SCOPE_REGIONS: Final = frozenset({"US", "CA", "PR", "VI", "GU", "AS", "MP"})

#: Longest input looked at; nobody's phone number is longer, and the bound
#: keeps a hostile client from making us parse megabytes.
MAX_INPUT_LENGTH: Final = 64

#: Separators people type inside phone numbers; dropped before parsing.
_SEPARATORS: Final = frozenset(" \t()-./\u00a0")

#: Keypad characters a dial string may start or end with (see the module doc).
_DECORATIONS: Final = "*#"

#: International dialling prefixes that stand for "+" (longest first).
_IDD_PREFIXES: Final = ("011", "00")

#: Fewest digits after an IDD prefix: country code plus the shortest
#: national numbers (so "00123" stays a short code, not "+123").
_MIN_INTERNATIONAL_DIGITS: Final = 7

_NXX_FIRST: Final = frozenset("23456789")

_CACHE_SIZE: Final = 65536

# SMPP 3.4 section 5.2.5 type-of-number values.
TON_UNKNOWN: Final = 0
TON_INTERNATIONAL: Final = 1
TON_NATIONAL: Final = 2
TON_NETWORK_SPECIFIC: Final = 3
TON_SUBSCRIBER: Final = 4
TON_ALPHANUMERIC: Final = 5
TON_ABBREVIATED: Final = 6

_REASONS: Final = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong number of digits for its country",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "a local number: add the area code",
}


def _quote(raw: str) -> str:
    """The input as it can appear in an error message (bounded length)."""
    return repr(raw if len(raw) <= 24 else raw[:24] + "...")


def _bad(raw: str, why: str) -> InvalidNumber:
    return InvalidNumber(f"{_quote(raw)} is not a phone number: {why}")


def _is_ascii_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _nanp_fast(nsn: str) -> str | None:
    """E.164 for a 10-digit NANP national number of the right shape, else
    None (the caller falls back to the phonenumbers path, which explains)."""
    if nsn[0] in _NXX_FIRST and nsn[3] in _NXX_FIRST:
        return "+1" + nsn
    return None


def _e164(raw: str, digits: str) -> str:
    """Parse "+<digits>" with phonenumbers and check it is a possible number.

    This is the slow path every fast path must agree with.
    """
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            raise _bad(raw, "unknown country code") from None
        if exc.error_type == NumberParseException.TOO_SHORT_NSN:
            raise _bad(raw, "too short") from None
        if exc.error_type == NumberParseException.TOO_LONG:
            raise _bad(raw, "too long") from None
        raise _bad(raw, "not a number phonenumbers can read") from None
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != ValidationResult.IS_POSSIBLE:
        raise _bad(raw, _REASONS.get(reason, "not a possible number"))
    if parsed.country_code == 1:
        nsn = phonenumbers.national_significant_number(parsed)
        if nsn[0] not in _NXX_FIRST:
            raise _bad(raw, "a North American area code cannot start with 0 or 1")
        if nsn[3] not in _NXX_FIRST:
            raise _bad(raw, "a North American exchange cannot start with 0 or 1")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _digits_only(raw: str) -> tuple[bool, str]:
    """Split free-form input into (had a leading '+', the digits). Short
    codes are only recognised as a bare run of digits ("415-555" is a
    truncated phone number, not a short code), so separators in a 5-6 digit
    input make it "too short".

    Raises InvalidNumber for anything that is not digits and separators.
    """
    text = raw.strip()
    if not text:
        raise _bad(raw, "it is empty")
    if not text.isascii():
        # Full-width digits and '+' (typed on CJK keyboards) become ASCII.
        text = unicodedata.normalize("NFKC", text)
        text = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)
    text = text.strip(_DECORATIONS).strip()
    plus = text.startswith("+")
    if plus:
        text = text[1:]
    digits = "".join(c for c in text if c not in _SEPARATORS)
    if not _is_ascii_digits(digits):
        if any(c.isalpha() for c in digits):
            raise _bad(raw, "it contains letters")
        if not digits:
            raise _bad(raw, "it has no digits")
        raise _bad(raw, "only digits, spaces, '+', '(', ')', '-', '.' and '/' are allowed")
    if not plus:
        for prefix in _IDD_PREFIXES:
            if (digits.startswith(prefix)
                    and len(digits) - len(prefix) >= _MIN_INTERNATIONAL_DIGITS):
                return True, digits[len(prefix):]
    if len(digits) in (5, 6) and digits != text and not plus:
        raise _bad(raw, "too short")
    return plus, digits


def _from_digits(raw: str, plus: bool, digits: str) -> str:
    """The free-form rules (see the module docstring) on separated input."""
    n = len(digits)
    if plus:
        if n == 11 and digits[0] == "1":
            fast = _nanp_fast(digits[1:])
            if fast is not None:
                return fast
        return _e164(raw, digits)
    if n in (5, 6):
        return digits  # a US/CA short code
    if n == 10:
        return _nanp_fast(digits) or _e164(raw, "1" + digits)
    if n == 11 and digits[0] == "1":
        return _nanp_fast(digits[1:]) or _e164(raw, digits)
    if n < 5:
        raise _bad(raw, "too short")
    if n < 10:
        raise _bad(raw, "too short for a North American number (10 digits with the area code)")
    raise _bad(raw, "numbers outside North America need their country code after a '+'")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _normalize_cached(raw: str) -> str:
    plus, digits = _digits_only(raw)
    return _from_digits(raw, plus, digits)


def normalize(raw: object) -> str:
    """Free-form input (``"+1 (415) 555-0100"``, ``"415.555.0100"``,
    ``"+44 20 7946 0958"``, ``"898211"``) as the one string that names the
    subscriber: E.164, or the digits of a US/CA short code.

    Raises InvalidNumber with a sentence a person understands.
    """
    if not isinstance(raw, str):
        raise InvalidNumber(f"a phone number must be text, not {type(raw).__name__}")
    if len(raw) > MAX_INPUT_LENGTH:
        raise _bad(raw, f"longer than {MAX_INPUT_LENGTH} characters")
    return _normalize_cached(raw)


def _smpp_international(raw: str, digits: str) -> str:
    if len(digits) == 11 and digits[0] == "1":
        fast = _nanp_fast(digits[1:])
        if fast is not None:
            return fast
    return _e164(raw, digits)


def _from_smpp_uncached(addr: str | bytes, ton: int) -> str:
    if isinstance(addr, bytes):
        try:
            text = addr.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidNumber("an SMPP address must be ASCII") from None
    else:
        text = addr
    text = text.strip("\x00 \t")
    if ton == TON_ALPHANUMERIC:
        raise InvalidNumber(
            f"{_quote(text)} is an alphanumeric sender ID (TON 5), not a subscriber number"
        )
    if len(text) > MAX_INPUT_LENGTH:
        raise _bad(text, f"longer than {MAX_INPUT_LENGTH} characters")
    # Fast path: plain digits, the overwhelmingly common case on the wire
    # (a leading 0 may be an international dialling prefix: slow path).
    if _is_ascii_digits(text) and text[0] != "0":
        plus, digits = False, text
    elif text.startswith("+") and _is_ascii_digits(text[1:]):
        plus, digits = True, text[1:]
    else:
        plus, digits = _digits_only(text)
    n = len(digits)
    if n in (5, 6) and not plus:
        return digits  # a short code, whatever the TON says
    if plus:
        return _smpp_international(text, digits)
    if ton == TON_INTERNATIONAL:
        try:
            return _smpp_international(text, digits)
        except InvalidNumber:
            # A North American national number mislabelled international
            # (seen on US binds): read it as such only when the
            # international reading is impossible, rather than drop a STOP.
            nanp = _nanp_fast(digits) if n == 10 else None
            if nanp is None:
                raise
            return nanp
    if ton == TON_NATIONAL:
        if n in (5, 6, 10) or (n == 11 and digits[0] == "1"):
            return _from_digits(text, False, digits)
        raise _bad(text, "not a North American national number (TON 2 expects 10 digits)")
    if ton == TON_SUBSCRIBER:
        raise _bad(text, "a subscriber number (TON 4) without its area code")
    if n > 11 or (n == 11 and digits[0] != "1"):
        return _smpp_international(text, digits)
    return _from_digits(text, False, digits)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def from_smpp(addr: str | bytes, ton: int, npi: int) -> str:
    """An SMPP address (``source_addr``/``destination_addr`` with its TON and
    NPI) as `normalize` would spell the subscriber.

    ``("14155550100", 1, 1)``, ``("+14155550100", 1, 1)``,
    ``("4155550100", 2, 1)`` and ``("4155550100", 0, 0)`` all give
    ``"+14155550100"``. Short codes (5-6 digits, any TON) stay digits.
    Raises InvalidNumber, e.g. for alphanumeric (TON 5) sender IDs.
    Runs per submit_sm: results are cached (bounded LRU, the function
    itself, to save a call level), errors are not.
    """
    del npi  # informational only, see the module docstring
    return _from_smpp_uncached(addr, ton)


#: TONs a carrier routes on; any other label is read as TON 0 (unknown).
_ROUTED_TONS: Final = frozenset({TON_UNKNOWN, TON_INTERNATIONAL, TON_NATIONAL})


@functools.lru_cache(maxsize=_CACHE_SIZE)
def destination(addr: str | bytes, ton: int, npi: int) -> str:
    """A submit's destination (``destination_addr`` with its TON and NPI) as
    the subscriber a carrier would route it to, spelt as `normalize` spells
    it: a leading ``+``, ``00`` or ``011``, separators, keypad decorations
    and any TON/NPI label all give the same subscriber, so
    ``("0014155550123", 1, 1)``, ``("14155550123", 5, 0)``,
    ``("(415) 555-0123", 0, 0)`` and ``("14155550123#", 4, 9)`` are all
    ``"+14155550123"``.

    Raises InvalidNumber for anything that is still not a number (letters,
    junk, an empty or impossible address): the relay refuses those with
    ESME_RINVDSTADR rather than forward what it cannot check. Cached like
    `from_smpp` (it runs per submit); errors are not cached.
    """
    del npi  # informational only, see the module docstring
    return _from_smpp_uncached(addr, ton if ton in _ROUTED_TONS else TON_UNKNOWN)


def is_short_code(number: str) -> bool:
    """True for a normalised US/CA short code (5-6 digits, no '+')."""
    return len(number) in (5, 6) and _is_ascii_digits(number)


def _parse_normalized(number: str) -> PhoneNumber | None:
    if not number.startswith("+"):
        return None
    if len(number) == 12 and number.startswith("+1") and _is_ascii_digits(number[2:]):
        # A normalised NANP number needs no parsing (parse costs ~10 us, a
        # third of an uncached in_scope; campaigns reach millions of numbers).
        return PhoneNumber(country_code=1, national_number=int(number[2:]))
    try:
        return phonenumbers.parse(number, None)
    except NumberParseException:
        return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def region_of(number: str) -> str | None:
    """The ISO region of a normalised E.164 number (``"US"``, ``"JM"``,
    ``"GB"``, ``"001"`` for non-geographic), or None when the metadata does
    not place it (and for short codes)."""
    parsed = _parse_normalized(number)
    if parsed is None:
        return None
    region: str | None = phonenumbers.region_code_for_number(parsed)
    return region


# NANP area codes already seen in scope. A campaign to millions of distinct
# numbers would otherwise pay a phonenumbers region look-up (~10 us) per
# number on the relay's hot path. Only in-scope answers are remembered, so if
# an area code were ever shared with an out-of-scope region the error would be
# to honour an opt-out there, never to ignore one (fail closed). Bounded: at
# most 800 NANP area codes exist.
_IN_SCOPE_AREA_CODES: set[str] = set()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def in_scope(number: str) -> bool:
    """Whether opt-out handling applies to a normalised number: short codes,
    and +1 numbers of the US, Canada and US territories. A +1 number whose
    area code no region claims counts as in scope (fail closed)."""
    if is_short_code(number):
        return True
    if not number.startswith("+1"):
        return False
    area_code = number[2:5]
    if area_code in _IN_SCOPE_AREA_CODES:
        return True
    region = region_of(number)
    if region is None or region in IN_SCOPE_REGIONS:
        _IN_SCOPE_AREA_CODES.add(area_code)
        return True
    return False


def _country_name(number: str, region: str | None) -> str:
    if region is None or region == "001":
        return "no country"
    parsed = _parse_normalized(number)
    name = ""
    if parsed is not None:
        # The geocoder pulls in locale data; only error paths need it.
        from phonenumbers import geocoder

        name = geocoder.country_name_for_number(parsed, "en")
    return f"{name} ({region})" if name else region


def require_in_scope(raw: str) -> str:
    """`normalize`, then OutOfScope unless opt-out handling covers the
    number (e.g. ``"+18765550100 is in Jamaica (JM): ..."``)."""
    number = normalize(raw)
    if not in_scope(number):
        where = _country_name(number, region_of(number))
        raise OutOfScope(
            f"{number} is in {where}: opt-out handling covers the US and Canada only"
        )
    return number


def mask(number: str) -> str:
    """A number as it may appear in logs: ``+1415*****00`` (country code,
    area code and the last two digits). Short codes are not personal and stay
    whole; anything else shows only its length."""
    if is_short_code(number):
        return number
    if number.startswith("+") and _is_ascii_digits(number[1:]) and 8 <= len(number) <= 16:
        keep = 5 if number.startswith("+1") else 4
        return number[:keep] + "*" * (len(number) - keep - 2) + number[-2:]
    return f"<{min(len(number), 999)} chars masked>"


# --- compact integer keys for the in-memory index ----------------------------
#
# E.164 numbers map to their digits as an int. No normalised number has the
# digits "10..." (country code 1 with an area code starting with 0, which
# `normalize` rejects; no other country code starts with 1), so the 11-digit
# range 10_000_000_000..10_999_999_999 is free: short codes live there, with
# their length encoded so that a leading zero survives the round trip.
# Every in-scope key is below 2**35, far inside the index's packable range.

_SHORT_BASE: Final = 10_000_000_000
_SHORT_END: Final = 11_000_000_000


@functools.lru_cache(maxsize=_CACHE_SIZE)
def to_key(number: str) -> int:
    """A compact integer for a normalised number (its E.164 digits, or a
    reserved range for short codes). Raises ValueError for anything
    `normalize` cannot have produced. Cached: it runs per submit_sm."""
    if number.startswith("+") and _is_ascii_digits(number[1:]) and number[1] != "0":
        if number.startswith("+10"):
            raise ValueError(f"not a normalised number: {mask(number)}")
        return int(number[1:])
    if is_short_code(number):
        return _SHORT_BASE + len(number) * 1_000_000 + int(number)
    raise ValueError(f"not a normalised number: {mask(number)}")


def from_key(key: int) -> str:
    """The inverse of `to_key`."""
    if _SHORT_BASE <= key < _SHORT_END:
        rest = key - _SHORT_BASE
        length, value = divmod(rest, 1_000_000)
        if length not in (5, 6):
            raise ValueError(f"not a number key: {key}")
        return str(value).zfill(length)
    if key <= 0:
        raise ValueError(f"not a number key: {key}")
    return "+" + str(key)
