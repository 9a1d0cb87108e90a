"""Several worker processes on one host: `[smpp] workers = N`.

Theory of operation
-------------------

One sidecar process is one event loop on one core. With `workers` above 1,
`optout-sidecar run` becomes a small supervisor (no event loop, no store,
no sockets it reads) and starts N workers, each a whole sidecar
(`gateway.server.Sidecar`) in its own process:

* **Listeners: SO_REUSEPORT, each worker binds its own socket.** The kernel
  spreads new connections over the workers' sockets by a hash of the
  connection, so no worker's busy loop decides who accepts (with one shared
  socket, whichever loop wakes first takes the connection and the idle one
  takes them all). The supervisor binds the two ports first, with
  SO_REUSEPORT and without listening: that resolves port 0 to a real port
  every worker then binds, reports a port already taken by another program
  as a start-up error, and keeps the ports the supervisor's own while a
  worker restarts. A bound socket that does not listen receives no
  connections. The cost: connections queued in a worker's accept backlog
  when it is killed are reset (their senders reconnect, as after any kill).
* **State: each worker has its own index and rule book**, following the
  store's change feed (rules/service/feed.py), so an opt-out taken by one
  worker blocks on every other within the feed's bound (100 ms poll on
  SQLite, LISTEN/NOTIFY on PostgreSQL). The workers of one host are a fleet
  of sidecars sharing one store, with the same guarantees.
* **Metrics: prometheus-client's multiprocess mode.** The supervisor makes a
  fresh private directory (0700) and sets PROMETHEUS_MULTIPROC_DIR before
  any worker starts; `/metrics` on any worker reads every worker's files
  (metrics.Metrics.exposition). When a worker dies, `mark_process_dead`
  removes its live gauges (sessions); its counters stay, so totals never go
  backwards. The directory is removed when the supervisor exits.
* **Faults:** a worker that exits or is killed is started again after a
  backoff (0.5 s, doubling while it keeps dying within a minute of its
  start, at most 30 s); its senders reconnect and land on the live workers
  meanwhile. Workers get SIGTERM if the supervisor dies (PR_SET_PDEATHSIG).
* **Stopping:** SIGTERM or SIGINT to the supervisor sends SIGTERM to every
  worker, each drains as a single sidecar does (`[smpp] drain_timeout`), and
  the supervisor exits 0 once all have; a second signal is passed on (the
  workers then cut their drain short). Workers ignore SIGINT, so Ctrl-C in a
  terminal (sent to the whole process group) counts once. SIGUSR1 is passed
  on (each worker logs its `stats` line).

Per-process limits: bind lockouts (gateway.bind_guard), connection pools
(gateway.admission) and `max_binds` are counted per worker. A guesser whose
connections spread over N workers gets up to 5 x N failed binds per minute
per (IP, system_id), and an account up to N x max_binds sessions: size
`max_binds` as the carrier's limit divided by N (README, "Workers").
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from gateway import logs
from gateway.config import Config, parse_hostport

log = logging.getLogger("optout.workers")

#: Seconds a worker may take to start listening before the start fails.
START_TIMEOUT = 60.0
#: Backoff before starting a dead worker again: first delay, cap, and how long
#: a worker must have lived for its next death to count as a fresh one.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
BACKOFF_RESET_AFTER = 60.0
#: After the drain timeout, seconds the workers get to close before SIGKILL.
STOP_GRACE = 10.0

_PR_SET_PDEATHSIG = 1


@dataclass
class _Worker:
    """One worker slot: its process now, and when to start it again."""

    index: int
    process: BaseProcess | None = None
    ready: Connection | None = None
    pid: int = 0
    started_at: float = 0.0
    deaths: int = 0  # consecutive early deaths, for the backoff
    restart_at: float | None = None


@dataclass
class _Supervisor:
    config: Config
    token: str | None
    count: int
    metrics_dir: str
    banner: Callable[[Config], None]
    workers: list[_Worker] = field(default_factory=list)
    stop_signals: int = 0
    usr1: bool = False

    def __post_init__(self) -> None:
        self._mp = multiprocessing.get_context("spawn")
        self.workers = [_Worker(i) for i in range(self.count)]

    # --- processes ----------------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        parent_end, child_end = self._mp.Pipe(duplex=False)
        process = self._mp.Process(
            target=worker_main,
            args=(self.config, self.token, worker.index, child_end, os.getpid()),
            name=f"optout-worker-{worker.index}",
        )
        process.start()
        child_end.close()
        worker.process, worker.ready = process, parent_end
        worker.pid = process.pid or 0
        worker.started_at = time.monotonic()
        worker.restart_at = None
        logs.event(log, "worker_starting", worker=worker.index, worker_pid=worker.pid)

    def _reap(self, worker: _Worker) -> int | None:
        """If `worker`'s process ended: forget it (and its live gauges), return
        its exit code (negative: the signal that killed it)."""
        process = worker.process
        if process is None or process.is_alive():
            return None
        process.join()
        code = process.exitcode if process.exitcode is not None else -1
        with contextlib.suppress(OSError):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        if worker.ready is not None:
            worker.ready.close()
        worker.process = worker.ready = None
        return code

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, sig)

    def _live(self) -> list[_Worker]:
        return [w for w in self.workers if w.process is not None]

    # --- the loop --------------------------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())

        def on_stop(signum: int, frame: Any) -> None:
            self.stop_signals += 1

        def on_usr1(signum: int, frame: Any) -> None:
            self.usr1 = True

        old = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_usr1)
        try:
            return self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()

    def _loop(self, wake: socket.socket) -> int:
        for worker in self.workers:
            self._start(worker)
        if not self._wait_started(wake):
            self._signal_all(signal.SIGTERM)
            self._wait_all_exit(time.monotonic() + STOP_GRACE)
            return 1
        # Logged before the banner: whoever waits for the banner (an operator's
        # script, the tests) then finds the workers' pids in the log already.
        logs.event(log, "workers_started", workers=self.count,
                   pids=[w.pid for w in self.workers])
        self.banner(self.config)

        forwarded = 0
        deadline: float | None = None
        failed = False
        while True:
            now = time.monotonic()
            if self.stop_signals > forwarded:
                if forwarded == 0:
                    logs.event(log, "workers_stopping", workers=len(self._live()))
                    deadline = now + self.config.smpp.drain_timeout + STOP_GRACE
                forwarded = self.stop_signals
                self._signal_all(signal.SIGTERM)
            if self.usr1:
                self.usr1 = False
                self._signal_all(signal.SIGUSR1)
            for worker in self.workers:
                code = self._reap(worker)
                if code is None:
                    continue
                if deadline is not None:
                    failed = failed or code != 0
                    continue
                self._schedule_restart(worker, code, now)
            for worker in self.workers:
                self._read_ready(worker)
            if deadline is not None:
                if not self._live():
                    logs.event(log, "workers_stopped")
                    return 1 if failed else 0
                if now >= deadline:
                    logs.event(log, "workers_killed", logging.WARNING,
                               pids=[w.pid for w in self._live()])
                    self._signal_all(signal.SIGKILL)
                    deadline = now + STOP_GRACE
                    failed = True
            else:
                for worker in self.workers:
                    if worker.restart_at is not None and now >= worker.restart_at:
                        self._start(worker)
            self._wait(wake, deadline)

    def _schedule_restart(self, worker: _Worker, code: int, now: float) -> None:
        lived = now - worker.started_at
        worker.deaths = 1 if lived >= BACKOFF_RESET_AFTER else worker.deaths + 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (worker.deaths - 1))
        worker.restart_at = now + delay
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        logs.event(log, "worker_died", logging.ERROR, worker=worker.index,
                   worker_pid=worker.pid, how=how, lived_seconds=round(lived, 1),
                   restart_in_seconds=delay)

    def _read_ready(self, worker: _Worker) -> None:
        conn = worker.ready
        if conn is None:
            return
        with contextlib.suppress(EOFError, OSError):
            while conn.poll():
                message = conn.recv()
                if message == "ready":
                    logs.event(log, "worker_started", worker=worker.index,
                               worker_pid=worker.pid)

    def _wait(self, wake: socket.socket, deadline: float | None) -> None:
        """Sleep until a worker exits or reports, a signal arrives, or the next
        restart or deadline is due."""
        now = time.monotonic()
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        if deadline is not None:
            due.append(deadline)
        timeout = max(0.0, min(due) - now) if due else None
        waitables: list[Any] = [wake]
        for w in self._live():
            assert w.process is not None
            waitables.append(w.process.sentinel)
            if w.ready is not None:
                waitables.append(w.ready)
        multiprocessing.connection.wait(waitables, timeout)
        with contextlib.suppress(BlockingIOError):
            while wake.recv(512):
                pass

    def _wait_started(self, wake: socket.socket) -> bool:
        """Wait for every worker's first "ready"; False if one exits first, a
        stop signal comes, or START_TIMEOUT passes."""
        pending = {w.index for w in self.workers}
        deadline = time.monotonic() + START_TIMEOUT
        while pending:
            if self.stop_signals or time.monotonic() >= deadline:
                return False
            for worker in self.workers:
                if worker.index not in pending:
                    continue
                conn = worker.ready
                assert conn is not None
                with contextlib.suppress(EOFError, OSError):
                    if conn.poll() and conn.recv() == "ready":
                        pending.discard(worker.index)
                        continue
                if self._reap(worker) is not None:
                    return False
            if pending:
                self._wait(wake, deadline)
        return True

    def _wait_all_exit(self, deadline: float) -> None:
        for worker in self.workers:
            if worker.process is not None:
                worker.process.join(max(0.0, deadline - time.monotonic()))
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()
                self._reap(worker)


def reserve_port(listen: str, where: str) -> tuple[socket.socket, str]:
    """Bind `listen` with SO_REUSEPORT without listening: the port (port 0
    resolved) stays this process's while workers bind it too. Returns the
    socket (keep it open) and the address with its real port."""
    host, port = parse_hostport(listen, where)
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return sock, f"{shown}:{real_port}"


def supervise(config: Config, token: str | None, count: int,
              banner: Callable[[Config], None]) -> int:
    """Run `count` workers until SIGTERM (see the module's docstring); the
    exit status of `optout-sidecar run`. `banner(config)` prints what a
    single sidecar prints once listening, with the ports resolved."""
    metrics_dir = tempfile.mkdtemp(prefix="optout-metrics-")  # 0700, empty
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    holds: list[socket.socket] = []
    try:
        try:
            smpp_hold, smpp_listen = reserve_port(config.smpp.listen, "smpp.listen")
            holds.append(smpp_hold)
            http_hold, http_listen = reserve_port(config.http.listen, "http.listen")
            holds.append(http_hold)
        except OSError as exc:
            print(f"optout-sidecar: cannot start: {exc}", file=sys.stderr)
            return 1
        config = replace(config,
                         smpp=replace(config.smpp, listen=smpp_listen),
                         http=replace(config.http, listen=http_listen))
        logs.event(log, "workers", workers=count, smpp=smpp_listen, http=http_listen)
        return _Supervisor(config, token, count, metrics_dir, banner).run()
    finally:
        for sock in holds:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies (so a SIGKILLed
    supervisor leaves no workers behind); elsewhere, a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_main(config: Config, token: str | None, index: int, ready: Connection,
                parent_pid: int) -> None:
    """A worker process: one whole sidecar on the shared ports; sends
    "ready" on `ready` once it listens. Its exit status is the sidecar's."""
    # Ctrl-C reaches the whole process group; the supervisor passes it on once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    logs.configure(config.logging.level, unmask=config.logging.unmask)
    logs.set_context(worker=index, pid=os.getpid())
    from gateway.cli import serve

    def on_ready() -> None:
        with contextlib.suppress(OSError):
            ready.send("ready")

    sys.exit(serve(config, token, worker=on_ready))
