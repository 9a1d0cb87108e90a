"""The HTTP test fixtures themselves: `no_server_errors` must fail a test in
which a handler crashed (a 500), whichever phase of the test caused it.

A guard that cannot fail guards nothing; before this check it read
`caplog.records` at teardown, which holds only teardown's records.
"""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

_INNER = textwrap.dedent(
    """
    import pytest
    from rules.service import OptOutService

    pytest_plugins = ["tests.http_fixtures"]


    async def boom() -> object:
        raise RuntimeError("disk on fire")


    async def test_a_route_made_to_raise(make_api, service: OptOutService,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(service, "list_addresses", boom)
        api = await make_api()
        # The raw client, not Api.call (which asserts on 500 by itself).
        async with api.client.get(
            "/api/v1/inbound-addresses",
            headers={"Authorization": "Bearer admin-secret-token"},
        ) as resp:
            assert resp.status == 500  # the error middleware's JSON 500


    async def test_a_healthy_route(api) -> None:
        assert (await api.get("/inbound-addresses")).status == 200
    """
)


def test_no_server_errors_fails_a_test_whose_route_raised(pytester: pytest.Pytester) -> None:
    # given a test that makes a route raise during its call phase
    pytester.makeini("[pytest]\nasyncio_mode = auto\n"
                     "asyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=_INNER)
    # when it runs
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    # then the crash is reported against it (at teardown), and only it
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_a_route_made_to_raise*",
                                 "*HTTP handler crashed*disk on fire*"])
