"""Bearer-token authentication and the admin/viewer split.

Tokens come from the config (`[[http.tokens]]`). A request's token is
compared with *every* configured token using `hmac.compare_digest`, and the
loop never exits early, so the time taken says nothing about which token
(or how much of one) matched.

Roles: `admin` may change anything; `viewer` may only read. Reading means
GET/HEAD, plus `POST /api/v1/check`, which answers a question ("may app A
send type T to S?") and changes nothing, so the HTTP senders that call it
can hold viewer tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter

from gateway import logs
from gateway.http.errors import ApiError
from gateway.http.throttle import FailureThrottle

log = logging.getLogger("gateway.http.auth")

__all__ = [
    "PRINCIPAL_KEY",
    "ApiToken",
    "TokenBook",
    "auth_middleware",
    "principal",
    "token_hint",
]

Role = Literal["admin", "viewer"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ApiToken:
    """One configured API token. `name` is recorded as the actor of every
    change made with it; `token` is the secret."""

    name: str
    token: str
    role: Role

    def __repr__(self) -> str:  # never print the secret
        return f"ApiToken(name={self.name!r}, role={self.role!r})"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


PRINCIPAL_KEY = web.RequestKey("principal", Principal)


class TokenBook:
    """The configured tokens, looked up in constant time."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        for t in tokens:
            if not t.token:
                raise ValueError(f"API token {t.name!r} has an empty secret")
            if t.role not in ("admin", "viewer"):
                raise ValueError(f"API token {t.name!r} has unknown role {t.role!r}")
        self._tokens = tuple((t.token.encode("utf-8"), t) for t in tokens)

    def lookup(self, presented: str) -> ApiToken | None:
        """The token whose secret equals `presented`, or None."""
        # Any lone surrogate (from undecodable header bytes, or a caller) encodes
        # to bytes no valid UTF-8 secret has, instead of raising.
        candidate = presented.encode("utf-8", "surrogatepass")
        found: ApiToken | None = None
        for secret, token in self._tokens:
            # No early exit: every secret is compared on every call.
            if hmac.compare_digest(secret, candidate) and found is None:
                found = token
        return found


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def principal(request: web.Request) -> Principal:
    """The authenticated caller of an API request (set by `auth_middleware`)."""
    return request[PRINCIPAL_KEY]


_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="optout-sidecar"'}

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_hint(presented: str) -> str:
    """What a log may say about a token that failed: a short hash, so that
    repeated attempts with one token can be told apart from many tokens,
    and never the token or a prefix of it (a near-miss of a real token must
    not leak the real token's first characters)."""
    digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest[:8]}"


def auth_middleware(
    book: TokenBook,
    *,
    public_routes: frozenset[str],
    read_only_routes: frozenset[tuple[str, str]],
    throttle: FailureThrottle | None = None,
    failures: Counter | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Middleware:
    """A middleware that authenticates every route not in `public_routes`
    (route templates such as "/healthz") and refuses writes by viewers.

    `read_only_routes` lists (method, route template) pairs that are not GET
    but change nothing, so viewers may call them.

    A wrong token is counted in `failures`, logged (masked, see `token_hint`)
    and recorded in `throttle` under the peer's IP address; a peer the
    throttle refuses gets 429 with Retry-After on every route that needs a
    token, before any token is compared (so a guess cannot succeed either).
    """
    throttle = throttle if throttle is not None else FailureThrottle()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else None
        if template in public_routes:
            return await handler(request)
        if template is None and not request.path.startswith("/api/"):
            return await handler(request)  # unknown page: let the router's 404 answer
        source = request.remote or "unknown"
        wait = throttle.retry_after(source, clock())
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "too_many_auth_failures",
                f"Too many wrong tokens from this address; retry in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
        presented = _bearer(request)
        if presented is None:
            raise ApiError(
                401,
                "unauthorized",
                "Missing bearer token (send 'Authorization: Bearer <token>').",
                headers=_UNAUTHORIZED_HEADERS,
            )
        token = book.lookup(presented)
        if token is None:
            if failures is not None:
                failures.inc()
            refused = throttle.failed(source, clock())
            logs.event(log, "http_auth_failed", logging.WARNING, peer=source,
                       route=template or "<unmatched>", method=request.method,
                       token=token_hint(presented), throttled=refused)
            raise ApiError(401, "unauthorized", "Unknown token.", headers=_UNAUTHORIZED_HEADERS)
        who = Principal(token.name, token.role)
        if (
            not who.is_admin
            and request.method not in _SAFE_METHODS
            and (request.method, template) not in read_only_routes
        ):
            raise ApiError(403, "forbidden", f"Token {who.name!r} has the viewer role: read only.")
        request[PRINCIPAL_KEY] = who
        return await handler(request)

    return middleware
