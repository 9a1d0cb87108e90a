"""A real SMPP client (smpplib) for interop tests, driven from a worker thread.

smpplib is blocking, so tests call these methods with `asyncio.to_thread`
while the sidecar and the carrier simulator run in the test's event loop.
Every wait has a deadline; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import queue
import time
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.smpp


class Esme:
    """One sender session."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.client = smpplib.client.Client(
            host, port, timeout=timeout, allow_unknown_opt_params=True
        )
        self.timeout = timeout
        self.delivered: queue.Queue[Any] = queue.Queue()
        self.client.set_message_received_handler(lambda pdu, **_: self.delivered.put(pdu))

    def bind(self, kind: str = "trx", system_id: str = "acme", password: str = "secret") -> Any:
        self.client.connect()
        name = {"tx": "bind_transmitter", "rx": "bind_receiver", "trx": "bind_transceiver"}[kind]
        return getattr(self.client, name)(system_id=system_id, password=password)

    def submit(self, destination: str, text: bytes = b"hello", **params: Any) -> Any:
        """Send one submit_sm and return its submit_sm_resp (deliver_sm seen
        meanwhile are acknowledged and queued)."""
        fields: dict[str, Any] = {
            "source_addr_ton": 1,
            "source_addr_npi": 1,
            "source_addr": "18005550100",
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": destination,
            "short_message": text,
        }
        fields.update(params)
        sent = self.client.send_message(**fields)
        return self.read_until("submit_sm_resp", sequence=sent.sequence)

    def read_until(self, command: str, *, sequence: int | None = None) -> Any:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            pdu = self.client.read_pdu()
            if pdu.command == command and (sequence is None or pdu.sequence == sequence):
                return pdu
            if pdu.command == "deliver_sm":
                self.client._message_received(pdu)  # acknowledges it
            elif pdu.command == "enquire_link":
                self.client._enquire_link_received(pdu)
        raise TimeoutError(f"no {command} within {self.timeout} s")

    def wait_deliver(self) -> Any:
        """The next deliver_sm (reading the socket until one arrives)."""
        deadline = time.monotonic() + self.timeout
        while self.delivered.empty():
            if time.monotonic() > deadline:
                raise TimeoutError("no deliver_sm")
            try:
                self.client.read_once(auto_send_enquire_link=False)
            except TimeoutError:
                continue
        return self.delivered.get_nowait()

    def unbind(self) -> Any:
        return self.client.unbind()

    def read_closed(self) -> bool:
        """True once the peer closed the connection (reads until EOF)."""
        sock = self.client._socket
        assert sock is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return True
            if not data:
                return True
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
