"""Bearer-token authentication at the HTTP edge (gateway/http/auth.py):
what an operator or an attacker sends in `Authorization`, and what happens.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

import pytest

from gateway.http.auth import ApiToken, TokenBook, token_hint
from gateway.http.throttle import FailureThrottle

pytest.register_assert_rewrite("tests.http_fixtures")
from tests.http_fixtures import ADMIN, Api, AppFactory, assert_error  # noqa: E402

pytest_plugins = ["tests.http_fixtures"]


async def whoami(api: Api, authorization: str) -> tuple[int, object]:
    reply = await api.get("/whoami", token=None, headers={"Authorization": authorization})
    return reply.status, reply.body


@pytest.mark.parametrize("header", [
    f"Bearer {ADMIN.token}",
    f"bearer {ADMIN.token}",  # the scheme is case-insensitive (RFC 7235 section 2.1)
    f"Bearer   {ADMIN.token}  ",  # 1*SP between scheme and token (RFC 6750 section 2.1)
])
async def test_the_admin_token_is_accepted_in_the_bearer_scheme(api: Api, header: str) -> None:
    status, body = await whoami(api, header)
    assert status == 200 and body == {"name": ADMIN.name, "role": "admin"}


@pytest.mark.parametrize(("header", "message"), [
    (f"Basic {ADMIN.token}", "Missing bearer token"),  # right secret, wrong scheme
    (f"Token {ADMIN.token}", "Missing bearer token"),
    ("Bearer ", "Missing bearer token"),
    ("Bearer", "Missing bearer token"),
    (f"Bearer {ADMIN.token} extra", "Unknown token"),
    (f"Bearer {ADMIN.token[:-1]}", "Unknown token"),
])
async def test_anything_else_is_401_and_says_why(api: Api, header: str, message: str) -> None:
    reply = await api.get("/whoami", token=None, headers={"Authorization": header})
    assert_error(reply, 401, "unauthorized")
    assert reply.body["error"]["message"].startswith(message), reply.body
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_token_that_is_not_utf8_is_refused_not_a_crash(api: Api) -> None:
    # given a raw request whose token bytes are not UTF-8 (aiohttp hands them
    # to the app as lone surrogates)
    host, port = api.client.host, api.client.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Authorization: Bearer \xff\xfeadmin-secret-token\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        response = await reader.read()
    writer.close()
    # then it is an unknown token (401), and the handler did not crash
    assert response.startswith(b"HTTP/1.1 401"), response[:200]


def test_a_lone_surrogate_token_matches_nothing() -> None:
    book = TokenBook([ADMIN])
    assert book.lookup("\udcff\udcfe") is None
    assert book.lookup(ADMIN.token + "\ud800") is None


@pytest.mark.parametrize(("token", "words"), [
    (ApiToken("ops-carol", "", "admin"), ("ops-carol", "empty")),
    (ApiToken("ops-carol", "s3cret", "root"), ("ops-carol", "root")),  # type: ignore[arg-type]
])
def test_a_misconfigured_token_is_named_in_the_error(token: ApiToken,
                                                     words: tuple[str, ...]) -> None:
    with pytest.raises(ValueError) as info:
        TokenBook([ADMIN, token])
    for word in words:
        assert word in str(info.value)


async def test_the_configured_throttle_is_the_one_applied(make_api: AppFactory) -> None:
    # given an API whose auth throttle allows 2 wrong tokens a minute
    api = await make_api(auth_throttle=FailureThrottle(limit=2, window=60.0))
    for _ in range(2):
        assert (await whoami(api, "Bearer wrong-token-guess"))[0] == 401
    # then the third request from that address waits, even with a right token
    reply = await api.get("/whoami", token=ADMIN)
    assert_error(reply, 429, "too_many_auth_failures")
    assert int(reply.headers["Retry-After"]) >= 1


def test_a_failed_token_is_logged_as_a_short_hash_only() -> None:
    hint = token_hint("guess-" + ADMIN.token)
    assert hint == "sha256:" + hashlib.sha256(("guess-" + ADMIN.token).encode()).hexdigest()[:8]
    assert ADMIN.token[:4] not in hint.removeprefix("sha256:")
    # bytes that were not UTF-8 (lone surrogates) are hashed, not a crash
    assert re.fullmatch(r"sha256:[0-9a-f]{8}", token_hint("\udcff\ud800"))
