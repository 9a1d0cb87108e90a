"""Prometheus metrics of optout-sidecar, defined once.

Every component receives a `Metrics` object instead of importing globals, so
a test builds its own with a fresh `CollectorRegistry` and asserts with
`registry.get_sample_value(...)`. Label values are never phone numbers or
message text (SPEC section 4).

With `[smpp] workers` above 1 each worker process writes its values to
prometheus-client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, set by the
supervisor before any worker starts) and `/metrics` on any worker reads all
of them (`Metrics.exposition`): counters and histograms add up across
workers, each gauge says how its workers' values combine (`multiprocess_mode`).
Gauges computed on demand (`track`) are written by `refresh`, since another
worker's scrape cannot call this process's functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from metrics.batch import HistogramBatch

__all__ = ["BIND_FAILURE_REASONS", "CONNECTION_REFUSAL_REASONS", "HistogramBatch", "Metrics"]

#: `reason` values of optout_bind_failures_total (a fixed set: never a
#: system_id or anything else a client chooses).
BIND_FAILURE_REASONS = (
    "bad_password",         # the sidecar checked the account's password: wrong
    "unknown_system_id",    # not configured, and allow_unknown_accounts is off
    "carrier_refused",      # the carrier answered the bind with an error
    "carrier_unavailable",  # no carrier connection or no bind_resp in time
    "locked_out",           # too many failures from this IP for this system_id
    "max_binds",            # the account already has max_binds sessions
    "malformed",            # the bind PDU could not be decoded
)
#: `reason` values of optout_connections_refused_total.
CONNECTION_REFUSAL_REASONS = (
    "max_connections",
    "max_connections_per_ip",
    "max_unbound_connections_per_ip",
    "max_unbound_connections",  # the oldest idle unbound connection closed for a new one
)

# Decisions are in-memory look-ups: microseconds, not milliseconds.
_DECISION_BUCKETS = (
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
)


# FCC 24-24: a confirmation within 5 minutes; 300 s is a bucket edge.
_REPLY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """All metrics of one sidecar process, registered in `registry`."""

    #: The exposition format's content type, for `/metrics`.
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Set by the supervisor for its workers only; a test's own Metrics
        # (no such variable) reads its own registry.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self._tracked: list[tuple[Gauge, Callable[[], float]]] = []
        r = self.registry
        # SPEC section 4 (names and labels are a stable contract).
        self.submit = Counter(
            "optout_submit_total",
            "SMPP submits decided, by application (configured app IDs only, else "
            "'other'), SMS type and decision.",
            ["app_id", "sms_type", "decision"],
            registry=r,
        )
        self.mo = Counter(
            "optout_mo_total",
            "MO messages handled, by inbound address and action.",
            ["inbound_address", "action"],
            registry=r,
        )
        self.unsubscribed = Gauge(
            "optout_unsubscribed_numbers",
            "(number, inbound address) pairs currently unsubscribed.",
            registry=r,
            # Every worker follows the same store: the latest value any live
            # worker wrote (they differ only while a change is < 1 s old).
            multiprocess_mode="livemostrecent",
        )
        self.sessions = Gauge(
            "optout_sessions",
            "Bound SMPP sessions, by side (sender/upstream/reply) and bind type.",
            ["side", "bind_type"],
            registry=r,
            multiprocess_mode="livesum",  # sessions of all live workers
        )
        self.pdus = Counter(
            "optout_pdus_total",
            "SMPP PDUs, by side (sender/upstream), direction (in/out) and command.",
            ["side", "direction", "command"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "optout_decision_seconds",
            "Time to decide one submit.",
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        # SPEC section 7.
        self.check = Counter(
            "optout_check_total",
            "HTTP POST /check decisions, by decision (allowed/blocked).",
            ["decision"],
            registry=r,
        )
        self.http_connections_closed = Counter(
            "optout_http_connections_closed_total",
            "HTTP connections the listener closed itself: over [http] max_connections (503) "
            "or without a complete request head within header_timeout (408).",
            ["reason"],
            registry=r,
        )
        self.http_auth_failures = Counter(
            "optout_http_auth_failures_total",
            "HTTP API requests with a wrong bearer token.",
            registry=r,
        )
        # What an SRE alerts on beyond the contract.
        self.submit_out_of_scope = Counter(
            "optout_submit_out_of_scope_total",
            "Submits to numbers outside US/Canada opt-out handling (passed through).",
            ["app_id"],
            registry=r,
        )
        self.submit_invalid_destination = Counter(
            "optout_submit_invalid_destination_total",
            "Submit destinations refused with ESME_RINVDSTADR: not a number a carrier could "
            "route to a subscriber (never forwarded).",
            ["app_id"],
            registry=r,
        )
        self.upstream_up = Gauge(
            "optout_upstream_up",
            "1 while at least one upstream session to the carrier is bound.",
            registry=r,
            multiprocess_mode="livemax",  # any live worker bound
        )
        self.store_errors = Counter(
            "optout_store_errors_total",
            "Store operations that failed (an MO answered with a temporary error, a failed read).",
            ["operation"],
            registry=r,
        )
        self.window_full = Counter(
            "optout_window_full_total",
            "Times a leg's window of outstanding requests filled and reading paused.",
            ["side"],
            registry=r,
        )
        self.response_timeouts = Counter(
            "optout_response_timeouts_total",
            "Requests whose response did not arrive in time.",
            ["side"],
            registry=r,
        )
        self.framing_errors = Counter(
            "optout_framing_errors_total",
            "PDUs that could not be framed or decoded.",
            ["side"],
            registry=r,
        )
        self.replies = Counter(
            "optout_replies_total",
            "Auto-replies (confirmations, help) sent to end users, by action and result.",
            ["action", "result"],
            registry=r,
        )
        # Issue 10 (SPEC section 7): near-miss opt-outs and confirmation latency.
        self.near_miss = Counter(
            "optout_near_miss_total",
            "MOs without a keyword that read like an opt-out (flagged for review), by "
            "inbound address (configured addresses only).",
            ["inbound_address"],
            registry=r,
        )
        self.near_miss_open = Gauge(
            "optout_near_miss_open",
            "Near-miss MOs waiting for an admin's review.",
            # Every worker reads the same store; the freshest view wins.
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self.near_miss_oldest_open = Gauge(
            "optout_near_miss_oldest_open_timestamp_seconds",
            "Unix time of the oldest near-miss MO waiting for review; 0 when none waits.",
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self.reply_seconds = Histogram(
            "optout_reply_seconds",
            "Seconds from an MO's commit to the carrier accepting its reply "
            "(confirmation or help text).",
            buckets=_REPLY_BUCKETS,
            registry=r,
        )
        self.replies_pending = Gauge(
            "optout_replies_pending",
            "Auto-replies waiting in the store for an upstream session.",
            registry=r,
            # One shared outbox, seen by every worker's reply sender.
            multiprocess_mode="livemax",
        )
        self.bind_failures = Counter(
            "optout_bind_failures_total",
            "Sender binds refused, by reason (the connection is closed after the bind_resp).",
            ["reason"],
            registry=r,
        )
        self.connections_refused = Counter(
            "optout_connections_refused_total",
            "Sender connections closed by the listener's limits, by limit.",
            ["reason"],
            registry=r,
        )
        self.protocol_violations = Counter(
            "optout_protocol_violations_total",
            "PDUs that broke the protocol (unsolicited responses, requests in the wrong "
            "state, unknown commands); a connection is closed after 100 of them.",
            ["side"],
            registry=r,
        )
        # Every reason shows from the start (at 0), so alerts need no absent().
        for reason in BIND_FAILURE_REASONS:
            self.bind_failures.labels(reason)
        for reason in CONNECTION_REFUSAL_REASONS:
            self.connections_refused.labels(reason)
        for side in ("sender", "upstream"):
            self.protocol_violations.labels(side)

    def track(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Make `gauge` show `read()`: computed at scrape time in one process;
        written by `refresh` when workers share multiprocess files."""
        if self.multiprocess_dir is None:
            gauge.set_function(read)
        else:
            self._tracked.append((gauge, read))

    def refresh(self) -> None:
        """Write the tracked gauges' current values (workers call it every
        second and before each scrape)."""
        for gauge, read in self._tracked:
            gauge.set(read())

    def exposition(self) -> bytes:
        """The text `/metrics` serves: this registry, or with workers every
        worker's values from the multiprocess directory."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.refresh()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
