"""Configuration: the SPEC keys parse; every mistake stops start-up with one
clear line naming the file and the key, and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config

SPEC_EXAMPLE = """
[smpp]
listen = "127.0.0.1:2775"

[upstream]
address = "127.0.0.1:2776"

[http]
listen = "127.0.0.1:8080"

[[http.tokens]]
name = "ops"
token = "k3V9-e2e-ops-token-long-enough"
role = "admin"

[store]
url = "sqlite:///var/optout.db"

[[accounts]]
system_id = "acme"
app_id = "1400000001"
default_sms_type = "marketing"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text(text)
    return path


def test_spec_example_parses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    assert config.smpp.listen == "127.0.0.1:2775"
    assert config.upstream.address == "127.0.0.1:2776"
    assert config.http.tokens[0].name == "ops" and config.http.tokens[0].role == "admin"
    assert config.store.url == "sqlite:///var/optout.db"
    acct = config.account("acme")
    assert acct is not None and acct.app_id == "1400000001"
    assert config.smpp.blocked_status == 0x45  # permanent by default
    assert config.smpp.drain_timeout == 10.0  # SPEC section 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[smpp]\nlisten = 2775\n", "smpp.listen must be a string"),
        ("[smpp]\nlisen = '127.0.0.1:1'\n", "unknown key smpp.lisen"),
        ("[bogus]\nx = 1\n", "unknown key 'bogus'"),
        ("[smpp]\nlisten = '127.0.0.1'\n", "smpp.listen: expected HOST:PORT"),
        ("[smpp]\nwindow = 0\n", "smpp.window must be between"),
        ("[smpp]\nblocked_status = 0x58\n", "smpp.blocked_status must be a permanent"),
        ("[smpp]\nblocked_mode = 'drop'\n", "smpp.blocked_mode"),
        ("[smpp]\ndrain_timeout = -1\n", "smpp.drain_timeout must be between 0 and 3600"),
        ("[[http.tokens]]\nname = 'x'\ntoken = 'abcdefgh'\nrole = 'root'\n",
         "http.tokens[0].role"),
        ("[[accounts]]\napp_id = '1'\n", "accounts[0].system_id is required"),
        ("[[accounts]]\nsystem_id = 'a'\napp_id = '1'\ndefault_sms_type = 'spam'\n",
         "accounts[0].default_sms_type"),
        ("[store]\nurl = 'mysql://x'\n", "store.url must be a sqlite:// or postgresql:// URL"),
        ("[store]\nurl = 'sqlite:/x.db'\n", "store.url must be a sqlite:// or postgresql:// URL"),
        ("[smpp\n", "invalid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "url", ["postgresql://optout:s3cret@db.example:5432/optout", "postgres://db.example/optout"]
)
def test_a_fleet_database_url_is_accepted(tmp_path: Path, url: str) -> None:
    config = load_config(write(tmp_path, f"[store]\nurl = '{url}'\n"))
    assert config.store.url == url


def test_a_bad_store_url_is_not_echoed(tmp_path: Path) -> None:
    # It may carry a database password: the error names the key, not the value.
    path = write(tmp_path, "[store]\nurl = 'mysql://optout:s3cret@db/optout'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "s3cret" not in str(info.value)


def test_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[smpp]\nwindow = 'big'\n")
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(path) in err[0] and "smpp.window" in err[0]


def test_console_script_missing_file_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(tmp_path / "nope.toml")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "nope.toml" in proc.stderr and "cannot read" in proc.stderr


# --- sender passwords and connection pools (SPEC section 7) -----------------------

MAPPED = """
[[accounts]]
system_id = "acme"
app_id = "1"
upstream_system_id = "acme-up"
upstream_password = "carrier"
"""


def test_mapped_credentials_without_a_sender_password_exit_2_naming_the_key(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, MAPPED)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert str(path) in line and "accounts[0].password_hash" in line
    assert "upstream_system_id" in line


@pytest.mark.parametrize("key", ["password = 'pw'",
                                 "password_hash = 'scrypt$1024$1$1$c2FsdHNhbHRz$"
                                 "QUFBQUFBQUFBQUFBQUFBQUFBQUE='"])
def test_mapped_credentials_with_a_sender_password_load(tmp_path: Path, key: str) -> None:
    config = load_config(write(tmp_path, MAPPED + key + "\n"))
    acct = config.account("acme")
    assert acct is not None and acct.max_binds == 10


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("password = 'pw'\npassword_hash = 'x'\n", "accounts[0].password and password_hash"),
        ("password = 'longer-than-8'\n", "accounts[0].password must be 1 to 8"),
        ("password = ''\n", "accounts[0].password must be 1 to 8"),
        ("password_hash = 'md5$abc'\n", "accounts[0].password_hash is not valid"),
        ("password_hash = 'scrypt$3$8$1$c2FsdHNhbHRz$QUFB'\n",
         "accounts[0].password_hash is not valid: N must be a power of 2"),
        ("max_binds = 0\n", "accounts[0].max_binds must be between"),
    ],
)
def test_bad_account_credentials_name_the_key(tmp_path: Path, extra: str, expected: str) -> None:
    path = write(tmp_path, "[[accounts]]\nsystem_id = 'acme'\napp_id = '1'\n" + extra)
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_connection_pool_keys_parse_and_are_checked(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[smpp]\nmax_connections_per_ip = 20\n"
                                         "max_unbound_connections_per_ip = 4\n"
                                         "max_unbound_connections = 40\n"))
    assert (config.smpp.max_connections_per_ip, config.smpp.max_unbound_connections_per_ip,
            config.smpp.max_unbound_connections) == (20, 4, 40)
    assert load_config(write(tmp_path, "")).smpp.max_connections_per_ip == 50
    with pytest.raises(ConfigError, match=r"smpp\.max_connections_per_ip must be between"):
        load_config(write(tmp_path, "[smpp]\nmax_connections_per_ip = 0\n"))


def test_readme_config_example_loads(tmp_path: Path) -> None:
    """The README's "Running it for real" file is one an operator copies."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("optout-sidecar run --config sidecar.toml")
    example = readme[readme.index("```toml\n", start) + 8:]
    example = example[:example.index("```")]
    # Placeholder tokens are the operator's to replace (and may be refused as such).
    example = re.sub(r'^token = "[^"]*"', 'token = "' + "t0ken-for-the-test" * 2 + '"',
                     example, flags=re.M)
    config = load_config(write(tmp_path, example))
    acct = config.account("acme")
    assert acct is not None and acct.max_binds == 10
    assert config.smpp.max_connections_per_ip == 50


# --- secrets (issue 8, hole 8) ------------------------------------------------------


def _with_token(token: str) -> str:
    return f"[[http.tokens]]\nname = 'ops'\ntoken = '{token}'\nrole = 'admin'\n"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("abcdefgh", "at least 16 characters"),
        ("fifteen-chars-x", "at least 16 characters"),
        ("change-me", "at least 16 characters"),
        ("REPLACE-WITH-A-LONG-RANDOM-ADMIN-TOKEN", "documented placeholder"),
        ("REPLACE-WITH-A-LONG-RANDOM-VIEWER-TOKEN", "documented placeholder"),
        ("please-change-me-now", "documented placeholder"),
        ("Change-Me-Change-Me", "documented placeholder"),
        ("demo-admin-token", "documented placeholder"),
    ],
)
def test_short_or_placeholder_tokens_stop_start_up_with_exit_2(
    tmp_path: Path, token: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, _with_token(token))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "http.tokens[0].token" in err and expected in err
    assert token not in err  # the rejected secret is not echoed


def test_a_long_random_token_is_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, _with_token("q7Yv2-bW9kLm3xT0a")))
    assert config.http.tokens[0].token == "q7Yv2-bW9kLm3xT0a"


def test_readme_token_example_is_a_placeholder_the_sidecar_refuses() -> None:
    from gateway.config import is_placeholder_token

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    tokens = [line.split('"')[1] for line in readme.splitlines()
              if line.strip().startswith("token = \"")]
    assert tokens, "the README shows a token line"
    for token in tokens:
        assert is_placeholder_token(token) or len(token) < 16, token


def test_config_strings_must_be_unicode_scalar_values() -> None:
    from gateway.config import parse_config

    with pytest.raises(ConfigError, match=r"program.name is not valid Unicode"):
        parse_config({"program": {"name": "Acme \ud800"}})
    with pytest.raises(ConfigError, match=r"smpp.service_type_map is not valid Unicode"):
        parse_config({"smpp": {"service_type_map": {"\udc80": "marketing"}}})


def test_a_lone_surrogate_escape_in_the_file_is_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, '[program]\nname = "Acme \\ud800"\n')
    assert main(["check-config", "--config", str(path)]) == 2


def test_the_store_url_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a Kubernetes Secret fills it: the password never sits in the file.
    monkeypatch.setenv("OPTOUT_DB", "postgresql://optout:s3cret@db:5432/optout")
    config = load_config(write(tmp_path, "[store]\nurl_env = 'OPTOUT_DB'\n"))
    assert config.store.url == "postgresql://optout:s3cret@db:5432/optout"
    monkeypatch.delenv("OPTOUT_DB")
    with pytest.raises(ConfigError, match="OPTOUT_DB is not set"):
        load_config(write(tmp_path, "[store]\nurl_env = 'OPTOUT_DB'\n"))


def test_the_reply_lease_must_outlast_a_carrier_answer(tmp_path: Path) -> None:
    text = "[smpp]\nresponse_timeout = 30\n[store]\nreply_lease = 10\n"
    with pytest.raises(ConfigError, match=r"store\.reply_lease must be longer"):
        load_config(write(tmp_path, text))
