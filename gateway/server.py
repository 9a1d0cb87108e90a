"""The sidecar process: store, SMPP listener, carrier legs, HTTP server.

`Sidecar` owns every long-lived resource and opens and closes them in
order, so tests can run a whole sidecar in their event loop on port 0 and
the CLI can run it until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass

from aiohttp import web

from gateway import logs
from gateway.carrier_sim import CarrierSim, SimConfig
from gateway.config import Config, parse_hostport
from gateway.enforcement import SmppEnforcer
from gateway.http.app import make_app
from gateway.http.auth import ApiToken
from gateway.http.context import AppInfo
from gateway.http.guard import ConnectionGuard
from gateway.http.guard import serve as serve_http
from gateway.proxy import DrainDeadline, RelayContext, Sessions, start_listener
from gateway.reply_sender import ReplySender
from metrics import Metrics
from rules.model import StoreUnavailable
from rules.service import OptOutService, ProgramInfo

log = logging.getLogger("optout.server")


@dataclass(frozen=True)
class Addresses:
    smpp: tuple[str, int]
    http: tuple[str, int]
    upstream: tuple[str, int]
    simulator_control: tuple[str, int] | None = None


class Sidecar:
    """One running sidecar. `await start()`, then `await stop()`."""

    def __init__(self, config: Config, *, metrics: Metrics | None = None,
                 reuse_port: bool = False) -> None:
        """`reuse_port`: bind the SMPP and HTTP ports with SO_REUSEPORT, as
        each of several worker processes does (gateway.workers)."""
        self.config = config
        self.reuse_port = reuse_port
        self._refresher: asyncio.Task[None] | None = None
        self.metrics = metrics if metrics is not None else Metrics()
        self.service: OptOutService | None = None
        self.sessions = Sessions()
        self.simulator: CarrierSim | None = None
        self.replies: ReplySender | None = None
        self._smpp_server: asyncio.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._http_server: asyncio.Server | None = None
        self.http_guard: ConnectionGuard | None = None
        self._ctx: RelayContext | None = None
        self._drain: DrainDeadline | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self.addresses: Addresses | None = None

    async def start(self) -> Addresses:
        config = self.config
        self.service = await OptOutService.open(
            config.store.url,
            program=ProgramInfo(name=config.program.name, contact=config.program.contact),
        )
        service = self.service
        watch_service(self.metrics, service)

        sim_control: tuple[str, int] | None = None
        if config.upstream.address is None:
            # Embedded defaults: play the carrier ourselves so the demo works alone.
            smpp_host, smpp_port = parse_hostport(config.smpp.listen, "smpp.listen")
            self.simulator = CarrierSim(SimConfig(
                host=smpp_host, port=smpp_port + 1 if smpp_port else 0,
                control_host=smpp_host, control_port=smpp_port + 2 if smpp_port else 0,
            ))
            await self.simulator.start()
            upstream = (smpp_host, self.simulator.port)
            if self.simulator.control_port is not None:
                sim_control = (smpp_host, self.simulator.control_port)
        else:
            upstream = parse_hostport(config.upstream.address, "upstream.address")
        if config.upstream.tls and not config.upstream.tls_verify:
            # Allowed (carriers' test SMSCs often have self-signed certificates),
            # but anyone on the path can then read and change the traffic.
            logs.event(log, "upstream_tls_unverified", logging.WARNING,
                       upstream=f"{upstream[0]}:{upstream[1]}",
                       hint="[upstream] tls_verify = false: the carrier's certificate is "
                            "not checked")

        ctx = RelayContext(
            config=config,
            metrics=self.metrics,
            enforcer=SmppEnforcer(config, service, self.metrics, self.sessions),
            sessions=self.sessions,
            upstream_address=upstream,
            upstream_ssl=upstream_tls(config),
        )
        self._ctx = ctx
        self.replies = ReplySender(ctx, service)
        replies = self.replies
        self.metrics.track(self.metrics.upstream_up, lambda: float(replies.upstream_bound))
        await self.replies.start()

        host, port = parse_hostport(config.smpp.listen, "smpp.listen")
        self._smpp_server = await start_listener(ctx, host, port, listener_tls(config),
                                                 reuse_port=self.reuse_port)
        smpp_addr = self._smpp_server.sockets[0].getsockname()[:2]

        app = make_app(
            service,
            self.metrics,
            [ApiToken(t.name, t.token, t.role) for t in config.http.tokens],  # type: ignore[arg-type]
            upstream_ready=self.upstream_ready,
            open_endpoints=config.http.open_endpoints,
            max_body_bytes=config.http.max_body_bytes,
            body_timeout=config.http.body_timeout,
            apps=[AppInfo(a.app_id, a.system_id) for a in config.accounts],
        )
        # aiohttp's keep-alive timeout doubles as the head deadline between
        # requests on one connection (see gateway.http.guard).
        self._http_runner = web.AppRunner(app, access_log=None,
                                          keepalive_timeout=config.http.header_timeout)
        await self._http_runner.setup()
        http_host, http_port = parse_hostport(config.http.listen, "http.listen")
        assert self._http_runner.server is not None
        self._http_server, self.http_guard = await serve_http(
            self._http_runner.server, http_host, http_port,
            max_connections=config.http.max_connections,
            header_timeout=config.http.header_timeout,
            closed=self.metrics.http_connections_closed, reuse_address=True,
            reuse_port=self.reuse_port or None)
        http_addr = self._http_server.sockets[0].getsockname()[:2]

        if self.metrics.multiprocess_dir is not None:
            self._refresher = asyncio.create_task(self._refresh_metrics())
        self._housekeeping = asyncio.create_task(
            housekeeping(service, config.store.inbound_retention_days)
        )
        self.addresses = Addresses(smpp_addr, http_addr, upstream, sim_control)
        logs.event(log, "started", smpp=f"{smpp_addr[0]}:{smpp_addr[1]}",
                   http=f"{http_addr[0]}:{http_addr[1]}", upstream=f"{upstream[0]}:{upstream[1]}",
                   simulator=self.simulator is not None)
        return self.addresses

    async def _refresh_metrics(self) -> None:
        """Workers: write the computed gauges every second, so a scrape of any
        worker sees this one's (multiprocess files hold only what was set)."""
        while True:
            try:
                self.metrics.refresh()
            except Exception:  # a store read failing must not end the refreshes
                log.exception("could not refresh the computed metrics")
            await asyncio.sleep(1.0)

    def upstream_ready(self) -> bool:
        """Ready when a carrier leg is bound, or (before any sender bound) when
        the carrier's port accepts connections as last seen by the reply sender."""
        if self._drain is not None:
            return False  # stopping: a load balancer should send binds elsewhere
        return self.replies is not None and self.replies.upstream_reachable

    def hurry(self) -> None:
        """Cut a drain in progress short (a second SIGTERM)."""
        if self._drain is not None:
            self._drain.hurry()

    def stats(self) -> dict[str, int]:
        """What an operator (or the fault suite) checks for leaks: tasks, sessions,
        connections and requests outstanding on every leg."""
        ctx = self._ctx
        live = list(ctx.live) if ctx is not None else []
        outstanding = sum(s.sender.outstanding + (s.upstream.outstanding if s.upstream else 0)
                          for s in live)
        return {
            "tasks": len(asyncio.all_tasks()),
            "connections": ctx.connections if ctx is not None else 0,
            "sessions": len(self.sessions.all()),
            "outstanding": outstanding,
        }

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Stop: no new connections, then every session drains (see
        `ProxySession.drain`) and confirmations flush until `drain_timeout`
        seconds from now (less a reserve for closing the store), then close."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        if self._smpp_server is not None:
            self._smpp_server.close()
        if self._refresher is not None:
            self._refresher.cancel()
        # Closing the store and the interpreter take the rest; under load that
        # can be a few hundred ms, and exiting late breaks the promise.
        reserve = min(1.0, drain_timeout / 4)
        self._drain = drain = DrainDeadline(drain_timeout - reserve)
        sessions = list(self._ctx.live) if self._ctx is not None else []
        if drain_timeout:
            logs.event(log, "stopping", sessions=len(sessions), drain_timeout=drain_timeout)
        work = [s.drain(drain) for s in sessions]
        if self.replies is not None:
            work.append(self.replies.drain(drain))
        await asyncio.gather(*work)
        if self._http_server is not None:
            self._http_server.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self.simulator is not None:
            await self.simulator.stop()
        if self.service is not None:
            await self.service.close()
        logs.event(log, "stopped")


PRUNE_SECONDS = 3600.0
"""How often the inbound message log is pruned."""
REFRESH_SECONDS = 60.0
"""How often the near-miss queue's figures are re-read: another process of a
fleet may have logged or reviewed near-misses meanwhile."""
HOUSEKEEPING_FIRST_SECONDS = 60.0
"""The first round waits this long after start-up, so it never competes
with a restart's catch-up traffic (carriers redeliver on reconnect)."""


async def housekeeping(
    service: OptOutService,
    retention_days: float,
    *,
    prune_every: float = PRUNE_SECONDS,
    refresh_every: float = REFRESH_SECONDS,
    first: float = HOUSEKEEPING_FIRST_SECONDS,
) -> None:
    """Until cancelled: `first` seconds after start and then every
    `prune_every` seconds, prunes the inbound message log; every
    `refresh_every` seconds re-reads the near-miss figures. A failing store
    is logged and retried at the next round; it never stops the sidecar."""
    await asyncio.sleep(first)
    next_prune = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            if loop.time() >= next_prune:
                next_prune = loop.time() + prune_every
                await service.prune_inbound_messages(retention_days)
            await service.refresh_near_misses()
        except StoreUnavailable as exc:
            logs.event(log, "housekeeping_failed", logging.WARNING, error=str(exc))
        except Exception as exc:
            # A bug here must not end the task: a dead task would make
            # `Sidecar.stop` re-raise it and skip the drain.
            logs.event(log, "housekeeping_failed", logging.ERROR, error=type(exc).__name__)
        await asyncio.sleep(refresh_every)


def watch_service(metrics: Metrics, service: OptOutService) -> None:
    """Gauges read from the service's in-memory figures (at each scrape, or
    by `Metrics.refresh` when workers share multiprocess files)."""
    metrics.track(metrics.unsubscribed, lambda: float(service.unsubscribed_count()))
    metrics.track(metrics.near_miss_open, lambda: float(service.open_near_misses))
    metrics.track(
        metrics.near_miss_oldest_open, lambda: float(service.oldest_open_near_miss or 0.0)
    )


def listener_tls(config: Config) -> ssl.SSLContext | None:
    smpp = config.smpp
    if not smpp.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(smpp.tls_cert, smpp.tls_key)
    return ctx


def upstream_tls(config: Config) -> ssl.SSLContext | None:
    up = config.upstream
    if not up.tls:
        return None
    ctx = ssl.create_default_context(cafile=up.tls_ca)
    if not up.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
