"""Sender passwords: what `optout-sidecar hash-password` prints is accepted
by the config and checks the right password only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.passwords import (
    PasswordHashError,
    check_plain,
    hash_password,
    parse_hash,
    verify_password,
)

ROOT = Path(__file__).resolve().parent.parent


def hash_cli(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "hash-password"], input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_hash_password_reads_stdin_and_prints_a_verifiable_salted_hash() -> None:
    first, second = hash_cli("s3cret\n"), hash_cli("s3cret\n")
    assert first.returncode == 0 and second.returncode == 0
    encoded = first.stdout.strip()
    assert "s3cret" not in first.stdout + first.stderr
    assert encoded != second.stdout.strip()  # salted: the same password hashes differently
    stored = parse_hash(encoded)
    assert (stored.n, stored.r, stored.p) == (1 << 14, 8, 1)
    assert verify_password(b"s3cret", stored)
    assert not verify_password(b"s3cret ", stored)
    assert not verify_password(b"S3cret", stored)


def test_hash_password_refuses_what_smpp_cannot_carry() -> None:
    too_long = hash_cli("a-password-of-17\n")
    assert too_long.returncode == 2 and "1 to 8 characters" in too_long.stderr
    assert too_long.stdout == ""
    empty = hash_cli("\n")
    assert empty.returncode == 2


def test_a_hash_is_self_describing_so_cheaper_parameters_verify_too() -> None:
    cheap = hash_password("pw", n=1 << 10, r=1, p=1)
    assert cheap.startswith("scrypt$1024$1$1$")
    assert verify_password(b"pw", parse_hash(cheap))


@pytest.mark.parametrize(
    ("encoded", "why"),
    [
        ("", "expected scrypt$N$r$p$salt$hash"),
        ("bcrypt$2b$12$abc", "expected scrypt"),
        ("scrypt$16384$8$1$c2FsdHNhbHQ=", "expected scrypt"),
        ("scrypt$1000$8$1$c2FsdHNhbHRz$" + "QUFB" * 8, "power of 2"),
        ("scrypt$2097152$8$1$c2FsdHNhbHRz$" + "QUFB" * 8, "power of 2"),
        ("scrypt$16384$0$1$c2FsdHNhbHRz$" + "QUFB" * 8, "r must be"),
        ("scrypt$16384$8$x$c2FsdHNhbHRz$" + "QUFB" * 8, "integers"),
        ("scrypt$16384$8$1$not base64!$" + "QUFB" * 8, "base64"),
        ("scrypt$16384$8$1$c2FsdA==$" + "QUFB" * 8, "salt must be at least 8 bytes"),
        ("scrypt$16384$8$1$c2FsdHNhbHRz$QUFB", "hash must be 16 to 64 bytes"),
    ],
)
def test_bad_hash_strings_are_refused_with_a_reason(encoded: str, why: str) -> None:
    with pytest.raises(PasswordHashError, match=why.replace("$", r"\$")):
        parse_hash(encoded)


def test_plain_passwords_compare_whole_bytes() -> None:
    assert check_plain(b"secret", "secret")
    assert not check_plain(b"secre", "secret")
    assert not check_plain(b"secret\x00", "secret")
    assert check_plain("café".encode(), "café")
