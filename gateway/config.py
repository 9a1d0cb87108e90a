"""The sidecar's TOML configuration: parsing, validation and defaults.

Every key is declared once, in the dataclasses below; a key that is not
declared is an error, not silently ignored, because a misspelt
`reply_pasword` that quietly does nothing is worse than a refusal to start.
Errors name the file and the dotted key so that the operator can fix the
file from the one line the CLI prints.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.passwords import PasswordHashError, parse_hash
from rules.model import InvalidValue, SmsType, is_scalar_text
from rules.store import backend_for

__all__ = [
    "MIN_TOKEN_CHARS",
    "PLACEHOLDER_TOKENS",
    "AccountConfig",
    "Config",
    "ConfigError",
    "HttpConfig",
    "LoggingConfig",
    "ProgramConfig",
    "SmppConfig",
    "StoreConfig",
    "TokenConfig",
    "UpstreamConfig",
    "is_placeholder_token",
    "load_config",
    "parse_config",
    "parse_hostport",
]


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one printable line."""


#: Shortest API token accepted: a guessable token is no protection.
MIN_TOKEN_CHARS = 16

#: Token values printed in this project's README, deploy files and history.
#: Anyone can read them, so a config that still holds one is refused.
PLACEHOLDER_TOKENS: frozenset[str] = frozenset({
    "change-me",
    "replace-with-a-long-random-admin-token",
    "replace-with-a-long-random-viewer-token",
    "demo-admin-token",
    "demo-viewer-token",
})

# Spellings of "put your token here" in any template, ours or a copied one.
_PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "replace-with", "replace_with",
                      "replace-me", "replaceme", "replace_me", "placeholder", "your-token",
                      "your_token")


def is_placeholder_token(token: str) -> bool:
    """Whether `token` is (or plainly spells) a documented placeholder."""
    lower = token.strip().lower()
    return lower in PLACEHOLDER_TOKENS or any(word in lower for word in _PLACEHOLDER_WORDS)


#: Upper bound of `[smpp] workers` (a typo such as 1000 must not fork-bomb a host).
MAX_WORKERS = 256


def resolve_workers(value: int | str) -> int:
    """The number of worker processes `[smpp] workers` asks for: "auto" is the
    cores this process may run on (its CPU affinity, which a container's
    cpuset narrows), not the host's core count."""
    if value == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            cores = os.cpu_count() or 1
        return max(1, min(cores, MAX_WORKERS))
    assert isinstance(value, int)
    return value


@dataclass(frozen=True)
class SmppConfig:
    listen: str = "127.0.0.1:2775"
    # Sender connections at once, bound or not; more are closed on arrival.
    max_connections: int = 1000
    # Sender connections from one source IP (an IPv6 /64), bound or not.
    max_connections_per_ip: int = 50
    # Connections that have not bound yet, from one source IP: more are closed
    # on arrival. Kept small so idle sockets cannot use up the IP's share.
    max_unbound_connections_per_ip: int = 10
    # Connections that have not bound yet, all IPs together. When a new one
    # would exceed it, the oldest that has not even sent a bind is closed.
    max_unbound_connections: int = 100
    tls_cert: str | None = None
    tls_key: str | None = None
    max_pdu_size: int = 65536
    # Outstanding requests per leg; when full, reading from the other side pauses.
    window: int = 64
    response_timeout: float = 30.0
    enquire_link_interval: float = 30.0
    bind_timeout: float = 10.0
    # SIGTERM: seconds to wait for outstanding work before closing (0 = close at once).
    drain_timeout: float = 10.0
    # Processes sharing the listeners (gateway.workers): an integer, or "auto"
    # for the cores this process may run on. 1 = one process, no supervisor.
    workers: int | str = 1
    allow_unknown_accounts: bool = False
    forward_mo: bool = True
    # Status answered for a blocked submit: permanent by design (NOTES 2).
    blocked_status: int = 0x45
    # "reject": answer blocked submits with blocked_status. "receipt": accept them
    # with a message id and send a stat:REJECTD receipt when one was requested.
    blocked_mode: str = "reject"
    # How MO data_coding 0 ("SMSC default alphabet") is decoded.
    default_alphabet: str = "gsm0338"
    # Optional TLV tag whose value names the SMS type of a submit.
    sms_type_tlv: int | None = None
    # service_type value -> SMS type.
    service_type_map: dict[str, str] = field(default_factory=dict)
    # "auto": uvloop when installed (pip install '.[fast]'); "asyncio": never;
    # "uvloop": required. The OPTOUT_EVENT_LOOP environment variable wins.
    event_loop: str = "auto"


@dataclass(frozen=True)
class UpstreamConfig:
    # None: run the bundled carrier simulator (demo / embedded defaults).
    address: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_verify: bool = True
    reply_system_id: str | None = None
    reply_password: str | None = None
    reply_system_type: str = ""


@dataclass(frozen=True)
class TokenConfig:
    name: str
    token: str
    role: str = "viewer"


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:8080"
    tokens: tuple[TokenConfig, ...] = ()
    # /metrics, /healthz and /readyz without a token.
    open_endpoints: bool = True
    max_body_bytes: int = 1 << 20
    # Seconds a connection has to send a complete request head (request line
    # and headers); also the idle time after which a kept-alive one closes.
    header_timeout: float = 10.0
    # Seconds a client has to send a request body once its head arrived.
    body_timeout: float = 30.0
    # HTTP connections at once; more are answered 503 and closed on arrival.
    max_connections: int = 256


@dataclass(frozen=True)
class StoreConfig:
    url: str = "sqlite:///optout.db"
    # Take the URL from this environment variable instead (e.g. filled from
    # a Kubernetes Secret), so the database password stays out of the file.
    url_env: str = ""
    # Seconds a sidecar holds a confirmation it claimed from the outbox
    # before another sidecar of the fleet may send it (its sender presumed dead).
    reply_lease: float = 60.0
    # Days the inbound message log keeps an MO (open near-misses are kept
    # until reviewed); pruned in the background.
    inbound_retention_days: int = 90


@dataclass(frozen=True)
class ProgramConfig:
    """Named in the default confirmation texts (CTIA)."""

    name: str = "Messages"
    contact: str = "support"


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    # Full phone numbers and message text in logs: for debugging only.
    unmask: bool = False


@dataclass(frozen=True)
class AccountConfig:
    system_id: str
    app_id: str
    default_sms_type: str = "marketing"
    # Credentials used toward the carrier instead of the sender's own.
    upstream_system_id: str | None = None
    upstream_password: str | None = None
    # The sender's password, checked by the sidecar itself (constant time):
    # plain text, or a hash from `optout-sidecar hash-password`. Required
    # with upstream_* credentials; without either the carrier decides.
    password: str | None = None
    password_hash: str | None = None
    # Concurrent bound sessions of this account; more binds get 0x0D.
    max_binds: int = 10


@dataclass(frozen=True)
class Config:
    smpp: SmppConfig = SmppConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    http: HttpConfig = HttpConfig()
    store: StoreConfig = StoreConfig()
    program: ProgramConfig = ProgramConfig()
    logging: LoggingConfig = LoggingConfig()
    accounts: tuple[AccountConfig, ...] = ()

    def account(self, system_id: str) -> AccountConfig | None:
        for acct in self.accounts:
            if acct.system_id == system_id:
                return acct
        return None


def parse_hostport(value: str, where: str) -> tuple[str, int]:
    """'127.0.0.1:2775' or '[::1]:2775' -> (host, port)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port_s)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; raise ConfigError with one clear line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, source=str(p))


_SECTIONS: dict[str, type[Any]] = {
    "smpp": SmppConfig,
    "upstream": UpstreamConfig,
    "http": HttpConfig,
    "store": StoreConfig,
    "program": ProgramConfig,
    "logging": LoggingConfig,
}


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> Config:
    """Build a Config from parsed TOML, checking every key and value."""
    parts: dict[str, Any] = {}
    for key, value in data.items():
        if key == "accounts":
            parts["accounts"] = tuple(
                _build(AccountConfig, item, f"accounts[{i}]", source)
                for i, item in enumerate(_as_list(value, "accounts", source))
            )
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table")
            if key == "http":
                value = dict(value)
                tokens = value.pop("tokens", [])
                section = _build(HttpConfig, value, "http", source)
                section = dataclasses.replace(
                    section,
                    tokens=tuple(
                        _build(TokenConfig, t, f"http.tokens[{i}]", source)
                        for i, t in enumerate(_as_list(tokens, "http.tokens", source))
                    ),
                )
                parts[key] = section
            else:
                parts[key] = _build(_SECTIONS[key], value, key, source)
        else:
            raise ConfigError(f"{source}: unknown key {key!r}")
    config = Config(**parts)
    if config.store.url_env:
        name = config.store.url_env
        from_env = os.environ.get(name, "")
        if not from_env:
            raise ConfigError(f"{source}: store.url_env: environment variable {name} is not set")
        config = dataclasses.replace(config, store=dataclasses.replace(config.store, url=from_env))
    _validate(config, source)
    return config


def _as_list(value: Any, where: str, source: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{source}: {where} must be an array of tables ([[{where}]])")
    return value


def _build(cls: type[Any], values: dict[str, Any], where: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {where} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        f = fields.get(key)
        if f is None:
            raise ConfigError(f"{source}: unknown key {where}.{key}")
        kwargs[key] = _check_type(value, str(f.type), f"{where}.{key}", source)
    missing = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and name not in kwargs
    ]
    if missing:
        raise ConfigError(f"{source}: {where}.{missing[0]} is required")
    return cls(**kwargs)


def _check_type(value: Any, annotation: str, where: str, source: str) -> Any:
    """Check a TOML value against the (string) annotation of its field."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    ok: bool
    if base == "str":
        ok = isinstance(value, str)
        if ok and not is_scalar_text(value):
            raise ConfigError(f"{source}: {where} is not valid Unicode text "
                              "(it holds a lone surrogate)")
    elif base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "int | str":  # an integer or a keyword such as "auto"
        ok = isinstance(value, int | str) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base.startswith("dict[str, str]"):
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        if ok and not all(is_scalar_text(k) and is_scalar_text(v) for k, v in value.items()):
            raise ConfigError(f"{source}: {where} is not valid Unicode text "
                              "(it holds a lone surrogate)")
    else:  # pragma: no cover - a field type this function does not know yet
        raise AssertionError(f"unhandled config type {annotation}")
    if not ok:
        expected = {"str": "a string", "bool": "true or false", "int": "an integer",
                    "float": "a number", "int | str": 'an integer or "auto"',
                    }.get(base, "a table of strings")
        hint = " (or omit it)" if optional else ""
        raise ConfigError(f"{source}: {where} must be {expected}{hint}, got {value!r}")
    return value


def _validate(config: Config, source: str) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: {key} {why}")

    s = config.smpp
    parse_hostport(s.listen, f"{source}: smpp.listen")
    parse_hostport(config.http.listen, f"{source}: http.listen")
    if config.upstream.address is not None:
        parse_hostport(config.upstream.address, f"{source}: upstream.address")
    if not 16 <= s.max_pdu_size <= 16 * 1024 * 1024:
        raise bad("smpp.max_pdu_size", "must be between 16 and 16777216")
    if not 1 <= s.max_connections <= 100000:
        raise bad("smpp.max_connections", "must be between 1 and 100000")
    # The smaller pools are capped by the larger ones where they are used
    # (gateway.admission), so lowering max_connections alone stays valid.
    for key in ("max_connections_per_ip", "max_unbound_connections",
                "max_unbound_connections_per_ip"):
        if not 1 <= getattr(s, key) <= 100000:
            raise bad(f"smpp.{key}", "must be between 1 and 100000")
    if not 1 <= s.window <= 10000:
        raise bad("smpp.window", "must be between 1 and 10000")
    for key in ("response_timeout", "enquire_link_interval", "bind_timeout"):
        if getattr(s, key) <= 0:
            raise bad(f"smpp.{key}", "must be a positive number of seconds")
    if not 1 <= config.store.reply_lease <= 3600:
        raise bad("store.reply_lease", "must be between 1 and 3600 seconds")
    if config.store.reply_lease <= s.response_timeout:
        # Else a slow carrier answer would let a second sidecar send it too.
        raise bad("store.reply_lease", "must be longer than smpp.response_timeout")
    if not 0 <= s.drain_timeout <= 3600:
        raise bad("smpp.drain_timeout", "must be between 0 and 3600 seconds")
    if isinstance(s.workers, str) and s.workers != "auto":
        raise bad("smpp.workers", f'must be a number of processes or "auto", got {s.workers!r}')
    if isinstance(s.workers, int) and not 1 <= s.workers <= MAX_WORKERS:
        raise bad("smpp.workers", f"must be between 1 and {MAX_WORKERS}")
    if s.workers != 1 and config.upstream.address is None:
        # The bundled simulator is one process's carrier: several workers
        # would each start one on the same ports.
        raise bad("smpp.workers", "above 1 needs [upstream] address (the bundled carrier "
                                  "simulator runs in a single process)")
    if s.blocked_mode not in ("reject", "receipt"):
        raise bad("smpp.blocked_mode", f'must be "reject" or "receipt", got {s.blocked_mode!r}')
    if s.blocked_status in (0, 0x08, 0x14, 0x58, 0x64) or not 0 < s.blocked_status <= 0xFFFFFFFF:
        raise bad(
            "smpp.blocked_status",
            f"must be a permanent error status, not {s.blocked_status:#x} "
            "(0x08, 0x14, 0x58 and 0x64 make senders retry)",
        )
    if s.event_loop not in ("auto", "asyncio", "uvloop"):
        raise bad("smpp.event_loop", f'must be "auto", "asyncio" or "uvloop", got {s.event_loop!r}')
    if s.default_alphabet not in ("gsm0338", "ascii", "latin-1"):
        raise bad("smpp.default_alphabet", 'must be "gsm0338", "ascii" or "latin-1"')
    if s.sms_type_tlv is not None and not 0 < s.sms_type_tlv <= 0xFFFF:
        raise bad("smpp.sms_type_tlv", "must be a TLV tag between 1 and 0xFFFF")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise bad("smpp.tls_cert", "and smpp.tls_key must be given together")
    types = {t.value for t in SmsType}
    for svc, sms_type in s.service_type_map.items():
        if sms_type not in types:
            raise bad(f"smpp.service_type_map.{svc}", f"must be one of {sorted(types)}")
    u = config.upstream
    if bool(u.reply_system_id) != bool(u.reply_password):
        raise bad("upstream.reply_system_id", "and upstream.reply_password must be given together")
    # SMPP 3.4 section 4.1: system_id is at most 15 octets, password at most 8.
    if u.reply_system_id is not None and len(u.reply_system_id.encode()) > 15:
        raise bad("upstream.reply_system_id", "must be at most 15 characters (SMPP limit)")
    if u.reply_password is not None and len(u.reply_password.encode()) > 8:
        raise bad("upstream.reply_password", "must be at most 8 characters (SMPP limit)")
    if not 0 < config.http.header_timeout <= 3600:
        raise bad("http.header_timeout", "must be a positive number of seconds (at most 3600)")
    if not 0 < config.http.body_timeout <= 3600:
        raise bad("http.body_timeout", "must be a positive number of seconds (at most 3600)")
    if not 1 <= config.http.max_connections <= 100000:
        raise bad("http.max_connections", "must be between 1 and 100000")
    seen_tokens: set[str] = set()
    for i, t in enumerate(config.http.tokens):
        if t.role not in ("admin", "viewer"):
            raise bad(f"http.tokens[{i}].role", f'must be "admin" or "viewer", got {t.role!r}')
        if len(t.token) < MIN_TOKEN_CHARS:
            raise bad(f"http.tokens[{i}].token",
                      f"must be at least {MIN_TOKEN_CHARS} characters (a long random string)")
        if is_placeholder_token(t.token):
            raise bad(f"http.tokens[{i}].token",
                      "is a documented placeholder: replace it with a long random string "
                      "(python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
        if t.token in seen_tokens:
            raise bad(f"http.tokens[{i}].token", "is used twice")
        seen_tokens.add(t.token)
    try:
        backend_for(config.store.url)
    except InvalidValue:
        # The URL is not echoed: a postgresql:// one carries a password.
        raise bad(
            "store.url",
            "must be a sqlite:// or postgresql:// URL (sqlite:///path.db, "
            "postgresql://user:password@host:port/database)",
        ) from None
    if not 1 <= config.store.inbound_retention_days <= 36500:
        raise bad("store.inbound_retention_days", "must be between 1 and 36500 days")
    seen_ids: set[str] = set()
    for i, a in enumerate(config.accounts):
        if a.default_sms_type not in types:
            raise bad(f"accounts[{i}].default_sms_type", f"must be one of {sorted(types)}")
        if a.system_id in seen_ids:
            raise bad(f"accounts[{i}].system_id", f"{a.system_id!r} is configured twice")
        if not a.system_id or len(a.system_id) > 15:
            raise bad(f"accounts[{i}].system_id", "must be 1 to 15 characters (SMPP limit)")
        if a.upstream_system_id is not None and len(a.upstream_system_id.encode()) > 15:
            raise bad(f"accounts[{i}].upstream_system_id", "must be at most 15 characters")
        if a.upstream_password is not None and len(a.upstream_password.encode()) > 8:
            raise bad(f"accounts[{i}].upstream_password", "must be at most 8 characters")
        _validate_account_password(a, f"accounts[{i}]", bad)
        if not 1 <= a.max_binds <= 10000:
            raise bad(f"accounts[{i}].max_binds", "must be between 1 and 10000")
        seen_ids.add(a.system_id)
    if config.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise bad("logging.level", "must be DEBUG, INFO, WARNING or ERROR")


def _validate_account_password(
    a: AccountConfig, where: str, bad: Callable[[str, str], ConfigError]
) -> None:
    """The sender's own credentials: one form at most, well formed, and
    required when the account maps credentials toward the carrier (else any
    password would bind with the stored one)."""
    if a.password is not None and a.password_hash is not None:
        raise bad(f"{where}.password", "and password_hash are both set: keep one")
    if a.password is not None and not 1 <= len(a.password.encode()) <= 8:
        raise bad(f"{where}.password", "must be 1 to 8 characters (SMPP limit)")
    if a.password_hash is not None:
        try:
            parse_hash(a.password_hash)
        except PasswordHashError as exc:
            raise bad(f"{where}.password_hash", f"is not valid: {exc}") from None
    mapped = a.upstream_system_id is not None or a.upstream_password is not None
    if mapped and a.password is None and a.password_hash is None:
        key = "upstream_system_id" if a.upstream_system_id is not None else "upstream_password"
        raise bad(f"{where}.password_hash",
                  f"(or password) is required with {key}: the sidecar must check the "
                  "sender's password itself")
