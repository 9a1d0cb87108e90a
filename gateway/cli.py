"""The `optout-sidecar` command.

    optout-sidecar run [--config FILE]        the sidecar (embedded defaults without a file)
    optout-sidecar carrier-sim [--listen H:P] the bundled carrier SMSC simulator
    optout-sidecar import FILE.csv --config F  load an existing unsubscribed list
    optout-sidecar export --config F           write the unsubscribed list as CSV
    optout-sidecar check-config --config F     validate a configuration file
    optout-sidecar version                     version, compiled or pure hot path, event loop
    optout-sidecar hash-password               an [[accounts]] password_hash (password on stdin)

A configuration problem prints one line naming the file and the key and
exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import importlib.metadata
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable, Sequence

from gateway import logs, speed
from gateway.config import (
    Config,
    ConfigError,
    TokenConfig,
    load_config,
    parse_hostport,
    resolve_workers,
)
from rules.model import StoreUnavailable

EXIT_CONFIG = 2
log = logging.getLogger("optout.cli")
DEMO_INBOUND = "+18005550100"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, speed.EventLoopError) as exc:
        print(f"optout-sidecar: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output stopped (`optout-sidecar export | head`):
        # end quietly, as other command-line tools do. stdout now points at
        # /dev/null, so the interpreter's flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for such a tool


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optout-sidecar", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the sidecar")
    run.add_argument("--config", help="TOML configuration file (embedded defaults without it)")
    run.set_defaults(func=_run)

    sim = sub.add_parser("carrier-sim", help="run the bundled carrier SMSC simulator")
    sim.add_argument("--listen", default="127.0.0.1:2776", help="SMPP HOST:PORT")
    sim.add_argument("--control", default="127.0.0.1:2777",
                     help="HTTP control HOST:PORT (POST /mo injects an MO)")
    sim.add_argument("--no-receipts", action="store_true", help="never send delivery receipts")
    # Fault modes, to rehearse what docs/RELIABILITY.md measures by hand.
    sim.add_argument("--never-answer", action="store_true",
                     help="take submits but never answer them (a stuck carrier)")
    sim.add_argument("--submit-delay", type=float, default=0.0, metavar="SECONDS",
                     help="answer each submit this late (a slow carrier)")
    sim.add_argument("--submit-status", type=_status, default=0, metavar="STATUS",
                     help="answer every submit with this status, e.g. 0x58 (throttled)")
    sim.add_argument("--bind-status", type=_status, default=0, metavar="STATUS",
                     help="refuse every bind with this status, e.g. 0x0d")
    sim.set_defaults(func=_carrier_sim)

    imp = sub.add_parser("import", help="import unsubscribed numbers from CSV")
    imp.add_argument("file", help="CSV with header phone_number,inbound_address[,since]")
    imp.add_argument("--config", help="TOML configuration file (for [store] url)")
    imp.set_defaults(func=_import)

    exp = sub.add_parser("export", help="export unsubscribed numbers as CSV")
    exp.add_argument("--config", help="TOML configuration file (for [store] url)")
    exp.add_argument("--output", "-o", help="file to write (standard output without it)")
    exp.set_defaults(func=_export)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", required=True)
    check.set_defaults(func=_check)

    version = sub.add_parser(
        "version", help="print the version, which hot path (compiled or pure Python) and "
                        "which event loop `run` uses")
    version.add_argument("--config", help="TOML configuration file (for [smpp] event_loop)")
    version.set_defaults(func=_version)

    hashp = sub.add_parser(
        "hash-password",
        help="print a password_hash for [[accounts]] (reads the password from standard input)",
    )
    hashp.set_defaults(func=_hash_password)
    return parser


def _hash_password(args: argparse.Namespace) -> int:
    """Read one password (a line on stdin, or asked twice on a terminal) and
    print its salted scrypt hash. The password never appears in argv, where
    other users could read it in the process list."""
    from gateway.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("SMPP password: ")
        if getpass.getpass("again: ") != password:
            print("optout-sidecar: the passwords differ", file=sys.stderr)
            return EXIT_CONFIG
    else:
        line = sys.stdin.readline(64)
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    if not 1 <= len(password.encode()) <= 8:
        print("optout-sidecar: an SMPP password is 1 to 8 characters "
              f"(got {len(password.encode())} bytes)", file=sys.stderr)
        return EXIT_CONFIG
    print(hash_password(password))
    return 0


def _load(path: str | None) -> Config:
    return load_config(path) if path else Config()


def _check(args: argparse.Namespace) -> int:
    load_config(args.config)
    print(f"{args.config}: ok")
    return 0


def demo_config(config: Config) -> tuple[Config, str | None]:
    """Embedded defaults: with no carrier and no tokens configured, let any
    system_id bind (to the bundled simulator) and mint an admin token."""
    token = None
    if config.upstream.address is None:
        # The bundled simulator plays the carrier: the sidecar holds its own
        # bind to it, so a demo MO is handled even before any sender binds.
        if config.upstream.reply_system_id is None:
            config = dataclasses.replace(config, upstream=dataclasses.replace(
                config.upstream, reply_system_id="optout", reply_password="optout"))
        if not config.accounts:
            config = dataclasses.replace(
                config, smpp=dataclasses.replace(config.smpp, allow_unknown_accounts=True))
    if not config.http.tokens:
        token = secrets.token_urlsafe(18)
        config = dataclasses.replace(config, http=dataclasses.replace(
            config.http, tokens=(TokenConfig("demo-admin", token, "admin"),)))
    return config, token


def _version(args: argparse.Namespace) -> int:
    config = _load(args.config)
    try:
        dist_version = importlib.metadata.version("optout-sidecar")
    except importlib.metadata.PackageNotFoundError:
        dist_version = "(not installed)"
    print(f"optout-sidecar {dist_version}")
    print(f"hot path: {speed.hot_path_status().describe()}")
    print(f"event loop: {speed.choose_event_loop(config.smpp.event_loop).description}")
    print(f"python: {sys.version.split()[0]} ({sys.implementation.name})")
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    logs.configure(config.logging.level, unmask=config.logging.unmask)
    config, token = demo_config(config)
    speed.choose_event_loop(config.smpp.event_loop)  # a bad setting stops here, exit 2
    workers = resolve_workers(config.smpp.workers)
    if workers > 1:
        from gateway.workers import supervise

        return supervise(config, token, workers,
                         lambda resolved: _banner(resolved, token, workers=workers))
    return serve(config, token)


def serve(config: Config, token: str | None,
          worker: Callable[[], None] | None = None) -> int:
    """Run one sidecar until SIGTERM; its exit status. `worker`: this process
    is one of several (gateway.workers): it binds the shared ports, prints no
    banner and calls `worker()` once it listens."""
    loop = speed.choose_event_loop(config.smpp.event_loop)
    logs.event(log, "runtime",
               hot_path=speed.hot_path_status().kind, event_loop=loop.description)
    return speed.run(_serve(config, token, worker), loop)


async def _serve(config: Config, token: str | None,
                 worker: Callable[[], None] | None = None) -> int:
    from gateway.server import Sidecar

    sidecar = Sidecar(config, reuse_port=worker is not None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            sidecar.hurry()  # a second signal: do not wait for the drain
        stop.set()

    # A worker stops on its supervisor's SIGTERM only (SIGINT is the
    # terminal's, sent to the whole group: the supervisor passes it on).
    for sig in (signal.SIGTERM,) if worker else (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    # SIGUSR1 logs one `stats` line (tasks, sessions, outstanding requests):
    # how an operator, or the fault suite, checks for leaks in a live process.
    loop.add_signal_handler(signal.SIGUSR1,
                            lambda: logs.event(log, "stats", **sidecar.stats()))
    try:
        addrs = await sidecar.start()
    except (OSError, StoreUnavailable) as exc:
        # A store that cannot be opened (a database that is down, a path that
        # cannot be created) is one clear line and exit 1, not a traceback:
        # the orchestrator restarts the process until it can.
        print(f"optout-sidecar: cannot start: {exc}", file=sys.stderr)
        await sidecar.stop()
        return 1
    service = sidecar.service
    if sidecar.simulator is not None and service and not await service.list_addresses():
        await service.create_address(DEMO_INBOUND, "Demo toll-free number")
    if worker is not None:
        worker()
    else:
        smpp = f"{addrs.smpp[0]}:{addrs.smpp[1]}"
        http = f"{addrs.http[0]}:{addrs.http[1]}"
        print(_banner_lines(config, token, smpp, http, addrs.upstream,
                            simulated=sidecar.simulator is not None,
                            simulator_control=addrs.simulator_control), flush=True)
    await stop.wait()
    await sidecar.stop(config.smpp.drain_timeout)
    return 0


def _banner_lines(config: Config, token: str | None, smpp: str, http: str,
                  upstream: tuple[str, int], *, simulated: bool = False,
                  simulator_control: tuple[str, int] | None = None,
                  workers: int = 1) -> str:
    """What `run` prints once listening (scripts and tests read the ports)."""
    lines = [
        "optout-sidecar is running."
        + (f" {workers} worker processes share its ports." if workers > 1 else ""),
        f"  SMPP: point your binds at {smpp}"
        + (" (any system_id and password)" if config.smpp.allow_unknown_accounts else ""),
        f"  carrier: {upstream[0]}:{upstream[1]}" + (" (bundled simulator)" if simulated else ""),
        f"  console and API: http://{http}/   metrics: http://{http}/metrics",
    ]
    if token is not None:
        lines.append(f"  admin token (this run only): {token}")
    if simulator_control is not None:
        host, port = simulator_control
        lines.append(
            f"  send an MO from a phone: curl -X POST http://{host}:{port}/mo "
            f"""-d '{{"from": "+14155550123", "to": "{DEMO_INBOUND}", "text": "STOP"}}'"""
        )
    lines.append("Stop with Ctrl-C.")
    return "\n".join(lines)


def _banner(config: Config, token: str | None, *, workers: int) -> None:
    """The supervisor's banner: the same lines, with the ports it reserved."""
    assert config.upstream.address is not None  # workers > 1 needs a carrier
    print(_banner_lines(config, token, config.smpp.listen, config.http.listen,
                        parse_hostport(config.upstream.address, "upstream.address"),
                        workers=workers), flush=True)


def _status(text: str) -> int:
    """An SMPP command_status from the command line: 88, 0x58 or 0o130."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a status: {text!r}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"status out of range: {text!r}")
    return value


def _carrier_sim(args: argparse.Namespace) -> int:
    from gateway.carrier_sim import SimConfig, run_carrier_sim

    host, port = parse_hostport(args.listen, "--listen")
    chost, cport = parse_hostport(args.control, "--control")
    logs.configure("INFO")
    config = SimConfig(host=host, port=port, control_host=chost, control_port=cport,
                       receipts=not args.no_receipts, answer_submits=not args.never_answer,
                       submit_delay=args.submit_delay, submit_status=args.submit_status,
                       bind_status=args.bind_status)
    print(f"carrier simulator: SMPP on {host}:{port}, control on http://{chost}:{cport}/",
          flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_carrier_sim(config))
    return 0


def _import(args: argparse.Namespace) -> int:
    config = _load(args.config)
    return asyncio.run(_do_import(config, args.file))


async def _do_import(config: Config, path: str) -> int:
    from rules.csvio import import_file
    from rules.service import OptOutService

    service = await OptOutService.open(config.store.url, follow=False)
    try:
        try:
            report = await import_file(service, path)
        except OSError as exc:
            print(f"optout-sidecar: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    finally:
        await service.close()
    for line, message in report.errors[:100]:
        print(f"{path}:{line}: {message}", file=sys.stderr)
    if report.error_count > 100:
        print(f"... and {report.error_count - 100} more bad rows", file=sys.stderr)
    print(f"imported {report.imported}, already unsubscribed {report.skipped}, "
          f"rejected {report.error_count}")
    return 0 if not report.error_count else 1


def _export(args: argparse.Namespace) -> int:
    config = _load(args.config)
    return asyncio.run(_do_export(config, args.output))


async def _do_export(config: Config, output: str | None) -> int:
    from rules.csvio import export_to
    from rules.service import OptOutService

    service = await OptOutService.open(config.store.url, follow=False)
    try:
        if output is None:
            await export_to(service, sys.stdout)
        else:
            with open(output, "w", newline="") as out:
                await export_to(service, out)
    finally:
        await service.close()
    return 0


__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
