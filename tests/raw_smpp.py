"""A byte-level SMPP peer for tests that need what no real client sends:
vendor TLVs, garbage, oversized lengths, exact body bytes."""

from __future__ import annotations

import asyncio
import itertools

from gateway.smpp import pdu as codec
from gateway.smpp.constants import Command
from gateway.smpp.framing import FrameReader


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = FrameReader()
        self.seq = itertools.count(1)

    @classmethod
    async def connect(cls, host: str, port: int, *, source: str | None = None) -> RawPeer:
        """Connect, from loopback address `source` (e.g. "127.0.0.2") if given:
        on Linux all of 127/8 is local, so one test can play several IPs."""
        reader, writer = await asyncio.open_connection(
            host, port, local_addr=(source, 0) if source is not None else None)
        return cls(reader, writer)

    async def send(self, pdu: codec.Pdu) -> int:
        if not pdu.sequence_number:
            pdu.sequence_number = next(self.seq)
        self.writer.write(codec.encode(pdu))
        await self.writer.drain()
        return pdu.sequence_number

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, timeout: float = 5.0) -> codec.Pdu:
        """The next PDU; EOFError if the peer closed."""
        async with asyncio.timeout(timeout):
            while True:
                raw = self.frames.next_frame()
                if raw is not None:
                    return codec.decode(raw)
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("connection closed")
                self.frames.feed(data)

    async def read_command(self, command_id: int, timeout: float = 5.0) -> codec.Pdu:
        """Skip (and answer) enquire_links until `command_id` arrives."""
        async with asyncio.timeout(timeout):
            while True:
                pdu = await self.read(timeout)
                if pdu.command_id == command_id:
                    return pdu
                if pdu.command_id == Command.ENQUIRE_LINK:
                    await self.send(codec.response_for(pdu))

    async def bind(self, kind: int = Command.BIND_TRANSCEIVER, system_id: str = "acme",
                   password: str = "secret") -> codec.Pdu:
        await self.send(codec.make_pdu(kind, system_id=system_id.encode(),
                                       password=password.encode(), interface_version=0x34))
        return await self.read_command(kind | 0x80000000)

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the peer has closed the connection (reading until EOF)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def close(self) -> None:
        self.writer.close()
