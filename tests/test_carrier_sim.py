"""The bundled carrier simulator, driven by a real SMPP client (smpplib) over loopback."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import smpplib.client
import smpplib.exceptions

from gateway.carrier_sim import CarrierSim, NoReceiverError, SimConfig, build_receipt
from gateway.smpp import (
    Command,
    CommandStatus,
    FrameReader,
    Pdu,
    SmeAddress,
    Tag,
    Tlv,
    decode,
    encode,
    make_pdu,
)
from gateway.smpp.framing import encode_simple
from tests.certs import self_signed

C = Command
S = CommandStatus
WAIT = 5.0


class SmpplibClient:
    """A blocking smpplib client whose reads run in a thread; events tell the test what came in."""

    def __init__(self, port: int) -> None:
        self.client = smpplib.client.Client(
            "127.0.0.1", port, timeout=0.5, allow_unknown_opt_params=True
        )
        self.received: list[Any] = []  # deliver_sm PDUs
        self.sent: list[Any] = []  # submit_sm_resp PDUs
        self.got_message = threading.Event()
        self.got_sent = threading.Event()
        self.closed = threading.Event()
        self.mo_status = 0  # what our deliver_sm_resp answers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client.set_message_received_handler(self._on_message)
        self.client.set_message_sent_handler(self._on_sent)

    def _on_message(self, pdu: Any) -> int:
        self.received.append(pdu)
        self.got_message.set()
        return self.mo_status

    def _on_sent(self, pdu: Any) -> None:
        self.sent.append(pdu)
        self.got_sent.set()

    def bind(self, system_id: str = "acme", password: str = "secret") -> None:
        self.client.connect()
        self.client.bind_transceiver(system_id=system_id, password=password)
        self._thread = threading.Thread(target=self._read_loop, daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                self.client.read_once(auto_send_enquire_link=False)
        except TimeoutError:  # socket.timeout: no PDU this round
            if not self._stop.is_set():
                self._read_loop()
        except (smpplib.exceptions.ConnectionError, OSError):
            pass
        finally:
            self.closed.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=WAIT)
        if self.client._socket is not None:
            self.client._socket.close()
            self.client._socket = None


async def wait_event(event: threading.Event, timeout: float = WAIT) -> None:
    """Await a threading.Event without blocking the loop the simulator runs on."""
    assert await asyncio.to_thread(event.wait, timeout), "timed out waiting for the client"


@pytest.fixture
async def sim() -> AsyncIterator[CarrierSim]:
    simulator = CarrierSim(
        SimConfig(
            port=0,
            control_port=0,
            credentials={"acme": "secret", "other": "pw"},
            response_timeout=1.0,
        )
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
def clients() -> Iterator[list[SmpplibClient]]:
    made: list[SmpplibClient] = []
    yield made
    for client in made:
        client.stop()


async def bound_client(
    sim: CarrierSim, clients: list[SmpplibClient], system_id: str = "acme"
) -> SmpplibClient:
    client = SmpplibClient(sim.port)
    clients.append(client)
    await asyncio.to_thread(client.bind, system_id, "secret" if system_id == "acme" else "pw")
    await sim.wait_for_sessions(len(clients))
    return client


class RawClient:
    """A byte-level SMPP client on our own codec, to send what smpplib would not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader()

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port, ssl=tls))

    def send(self, pdu: Pdu | bytes) -> None:
        self.writer.write(pdu if isinstance(pdu, bytes) else encode(pdu))

    async def recv(self) -> Pdu:
        async with asyncio.timeout(WAIT):
            while (frame := self.frames.next_frame()) is None:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the simulator")
                self.frames.feed(data)
        return decode(frame)

    async def closed_by_peer(self) -> bool:
        async with asyncio.timeout(WAIT):
            return await self.reader.read(65536) == b""

    async def bind(self, system_id: bytes = b"acme", password: bytes = b"secret") -> Pdu:
        self.send(make_pdu(C.BIND_TRANSCEIVER, sequence_number=1, system_id=system_id,
                           password=password, interface_version=0x34))
        return await self.recv()

    def close(self) -> None:
        self.writer.close()


# --- the stories -----------------------------------------------------------------


async def test_a_submit_with_registered_delivery_gets_a_resp_then_a_delivered_receipt(
    sim: CarrierSim, clients: list[SmpplibClient]
) -> None:
    # Given a sender bound as a transceiver
    client = await bound_client(sim, clients)
    # When it submits asking for a receipt
    await asyncio.to_thread(
        client.client.send_message,
        source_addr_ton=1, source_addr_npi=1, source_addr="18005550100",
        dest_addr_ton=1, dest_addr_npi=1, destination_addr="14155550123",
        short_message=b"Your code is 1234", registered_delivery=1,
    )
    # Then it gets a submit_sm_resp with a message_id...
    await wait_event(client.got_sent)
    resp = client.sent[0]
    assert resp.status == 0
    message_id = resp.message_id.decode()
    assert message_id and all(c in "0123456789abcdef" for c in message_id)
    # ...and then a delivery receipt for that message_id
    await wait_event(client.got_message)
    receipt = client.received[0]
    assert receipt.esm_class & 0x3C == 0x04
    text = receipt.short_message.decode()
    assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 submit date:")
    assert "stat:DELIVRD err:000 text:Your code is 1234" in text
    assert receipt.receipted_message_id == message_id.encode()
    assert receipt.source_addr == b"14155550123" and receipt.destination_addr == b"18005550100"
    # And the simulator recorded the submit as it came
    [submit] = await sim.wait_for_submits(1)
    assert submit.get_bytes("short_message") == b"Your code is 1234"
    assert decode(sim.received_raw[0]) == submit


async def test_message_ids_are_unique_per_submit(
    sim: CarrierSim, clients: list[SmpplibClient]
) -> None:
    raw = await RawClient.connect(sim.port)
    assert (await raw.bind()).command_status == 0
    ids = set()
    for seq in range(2, 22):
        raw.send(make_pdu(C.SUBMIT_SM, sequence_number=seq, destination_addr=b"14155550123",
                          short_message=b"hi"))
        resp = await raw.recv()
        assert resp.command_id == C.SUBMIT_SM_RESP and resp.sequence_number == seq
        ids.add(resp.get_bytes("message_id"))
    assert len(ids) == 20
    raw.close()


async def test_decimal_message_ids_when_configured() -> None:
    async with CarrierSim(SimConfig(port=0, message_id_format="dec")) as sim:
        raw = await RawClient.connect(sim.port)
        await raw.bind()
        raw.send(make_pdu(C.SUBMIT_SM, sequence_number=2, short_message=b"hi"))
        assert (await raw.recv()).get_bytes("message_id").isdigit()
        raw.close()


async def test_a_wrong_password_is_refused_with_rinvpaswd(
    sim: CarrierSim, clients: list[SmpplibClient]
) -> None:
    client = SmpplibClient(sim.port)
    clients.append(client)
    with pytest.raises(smpplib.exceptions.PDUError) as info:
        await asyncio.to_thread(client.bind, "acme", "wrong")
    assert info.value.args[1] == S.ESME_RINVPASWD
    assert sim.sessions == 0


async def test_an_unknown_system_id_is_refused_with_rinvsysid(sim: CarrierSim) -> None:
    raw = await RawClient.connect(sim.port)
    resp = await raw.bind(b"stranger", b"secret")
    assert resp.command_id == C.BIND_TRANSCEIVER_RESP
    assert resp.command_status == S.ESME_RINVSYSID
    # A refused bind leaves the connection open for another try
    assert (await raw.bind()).command_status == 0
    raw.close()


async def test_inject_mo_reaches_the_client_and_returns_its_status(
    sim: CarrierSim, clients: list[SmpplibClient]
) -> None:
    client = await bound_client(sim, clients)
    status = await sim.inject_mo("14155550123", "18005550100", "STOP")
    assert status == S.ESME_ROK
    await wait_event(client.got_message)
    mo = client.received[0]
    assert mo.short_message == b"STOP"
    assert mo.source_addr == b"14155550123" and mo.destination_addr == b"18005550100"
    assert mo.esm_class == 0 and mo.data_coding == 0
    # A client that cannot take the MO answers a temporary error, and the sim says so
    client.mo_status = S.ESME_RX_T_APPN
    assert await sim.inject_mo("14155550123", "18005550100", "START") == S.ESME_RX_T_APPN


async def test_inject_mo_encodes_ucs2_and_long_text(sim: CarrierSim) -> None:
    raw = await RawClient.connect(sim.port)
    await raw.bind()
    await sim.wait_for_sessions(1)
    mo = asyncio.ensure_future(sim.inject_mo("14155550123", "12345", "ＳＴＯＰ", data_coding=8))
    deliver = await raw.recv()
    assert deliver.get_bytes("short_message") == "ＳＴＯＰ".encode("utf-16-be")
    raw.send(encode_simple(C.DELIVER_SM_RESP, 0, deliver.sequence_number, b"\x00"))
    assert await mo == 0

    long_mo = asyncio.ensure_future(sim.inject_mo("14155550123", "12345", "x" * 300))
    deliver = await raw.recv()
    assert deliver.get_bytes("short_message") == b""
    assert deliver.get_tlv(Tag.MESSAGE_PAYLOAD) == b"x" * 300
    raw.send(encode_simple(C.DELIVER_SM_RESP, 0, deliver.sequence_number))  # bodiless resp
    assert await long_mo == 0
    raw.close()


async def test_inject_mo_without_a_receiver_fails_clearly() -> None:
    async with CarrierSim(SimConfig(port=0, response_timeout=0.2)) as sim:
        with pytest.raises(NoReceiverError):
            await sim.inject_mo("14155550123", "12345", "STOP")


async def test_the_control_endpoint_injects_an_mo_and_lists_submits(
    sim: CarrierSim, clients: list[SmpplibClient]
) -> None:
    client = await bound_client(sim, clients)
    base = f"http://127.0.0.1:{sim.control_port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/mo", json={"from": "+14155550123", "to": "+18005550100", "text": "Stop"}
        ) as resp:
            assert resp.status == 200
            assert await resp.json() == {"command_status": 0, "status": "ESME_ROK"}
        await wait_event(client.got_message)
        assert client.received[0].short_message == b"Stop"
        assert client.received[0].source_addr == b"14155550123"

        await asyncio.to_thread(
            client.client.send_message, source_addr="18005550100",
            destination_addr="14155550123", short_message=b"Hello",
        )
        await sim.wait_for_submits(1)
        async with http.get(f"{base}/submits") as resp:
            body = await resp.json()
        assert body["count"] == 1
        assert body["submits"][0]["destination_addr"] == "14155550123"
        assert body["submits"][0]["text"] == "Hello"
        assert body["submits"][0]["system_id"] == "acme"

        async with http.post(f"{base}/mo", data=b"not json") as resp:
            assert resp.status == 400
        async with http.post(f"{base}/mo", json={"from": 1}) as resp:
            assert resp.status == 422
            assert (await resp.json())["error"]["code"] == "invalid"


async def test_the_control_endpoint_picks_ucs2_for_text_outside_gsm(sim: CarrierSim) -> None:
    raw = await RawClient.connect(sim.port)
    await raw.bind()
    await sim.wait_for_sessions(1)
    async with aiohttp.ClientSession() as http:
        post = asyncio.ensure_future(http.post(
            f"http://127.0.0.1:{sim.control_port}/mo",
            json={"from": "+14155550123", "to": "12345", "text": "ARRÊT ✋"},
        ))
        deliver = await raw.recv()
        assert deliver.get_int("data_coding") == 8
        assert deliver.get_int("dest_addr_ton") == 3  # a short code
        raw.send(encode_simple(C.DELIVER_SM_RESP, 0, deliver.sequence_number, b"\x00"))
        async with await post as resp:
            assert resp.status == 200
    raw.close()


async def test_receipts_go_to_a_receiver_of_the_same_system_id(sim: CarrierSim) -> None:
    # A transmitter submits; the receipt goes to the receiver bound for the same account.
    tx = await RawClient.connect(sim.port)
    tx.send(make_pdu(C.BIND_TRANSMITTER, sequence_number=1, system_id=b"acme",
                     password=b"secret"))
    assert (await tx.recv()).command_status == 0
    tx.send(make_pdu(C.SUBMIT_SM, sequence_number=2, source_addr=b"12345",
                     destination_addr=b"14155550123", registered_delivery=1,
                     short_message=b"hi"))
    message_id = (await tx.recv()).get_bytes("message_id")
    # The receiver binds after the submit: the receipt waited for it
    rx = await RawClient.connect(sim.port)
    rx.send(make_pdu(C.BIND_RECEIVER, sequence_number=1, system_id=b"acme", password=b"secret"))
    assert (await rx.recv()).command_status == 0
    receipt = await rx.recv()
    assert receipt.command_id == C.DELIVER_SM and receipt.get_int("esm_class") == 0x04
    assert receipt.get_tlv(Tag.RECEIPTED_MESSAGE_ID) == message_id + b"\x00"
    assert receipt.get_tlv(Tag.MESSAGE_STATE) == b"\x02"
    tx.close()
    rx.close()


async def test_submit_multi_data_sm_and_query_sm_are_answered(sim: CarrierSim) -> None:
    raw = await RawClient.connect(sim.port)
    await raw.bind()
    raw.send(make_pdu(
        C.SUBMIT_MULTI, sequence_number=2,
        dest_address=[SmeAddress(1, 1, b"14155550123"), SmeAddress(1, 1, b"14155550124")],
        short_message=b"hi all",
    ))
    resp = await raw.recv()
    assert resp.command_id == C.SUBMIT_MULTI_RESP and resp.command_status == 0
    assert resp.get_int("no_unsuccess") == 0 and resp.unsuccess_smes() == []

    raw.send(make_pdu(C.DATA_SM, sequence_number=3, destination_addr=b"14155550123",
                      tlvs=[Tlv(Tag.MESSAGE_PAYLOAD, b"data")]))
    resp = await raw.recv()
    assert resp.command_id == C.DATA_SM_RESP and resp.get_bytes("message_id")

    raw.send(make_pdu(C.QUERY_SM, sequence_number=4, message_id=resp.get_bytes("message_id")))
    query = await raw.recv()
    assert query.command_id == C.QUERY_SM_RESP and query.get_int("message_state") == 2
    assert [p.command_id for p in await sim.wait_for_submits(2)] == [C.SUBMIT_MULTI, C.DATA_SM]
    raw.close()


async def test_a_submit_before_bind_gets_rinvbndsts(sim: CarrierSim) -> None:
    raw = await RawClient.connect(sim.port)
    raw.send(make_pdu(C.SUBMIT_SM, sequence_number=9, short_message=b"hi"))
    resp = await raw.recv()
    assert (resp.command_id, resp.command_status, resp.sequence_number) == (
        C.SUBMIT_SM_RESP, S.ESME_RINVBNDSTS, 9
    )
    assert sim.submit_count == 0
    raw.close()


async def test_unknown_commands_and_bad_bodies_get_a_nack_and_the_session_goes_on(
    sim: CarrierSim,
) -> None:
    raw = await RawClient.connect(sim.port)
    await raw.bind()
    raw.send(encode_simple(0x00010200, 0, 5, b"\x01\x02"))
    nack = await raw.recv()
    assert (nack.command_id, nack.command_status, nack.sequence_number) == (
        C.GENERIC_NACK, S.ESME_RINVCMDID, 5
    )
    raw.send(encode_simple(C.SUBMIT_SM, 0, 6, b"\x00\x01\x01" + b"1" * 30))  # no NUL
    resp = await raw.recv()
    assert resp.command_id == C.SUBMIT_SM_RESP and resp.command_status == S.ESME_RINVSRCADR
    raw.send(encode_simple(C.SUBMIT_SM, 0, 7, b"\x00\x01\x01" + b"1" * 5))  # cut short
    resp = await raw.recv()
    assert resp.command_id == C.SUBMIT_SM_RESP and resp.command_status == S.ESME_RINVMSGLEN
    raw.send(encode_simple(C.ENQUIRE_LINK, 0, 8))
    assert (await raw.recv()).command_id == C.ENQUIRE_LINK_RESP
    raw.close()


async def test_an_unframeable_stream_gets_a_nack_and_is_closed(sim: CarrierSim) -> None:
    raw = await RawClient.connect(sim.port)
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    nack = await raw.recv()
    assert nack.command_id == C.GENERIC_NACK and nack.command_status == S.ESME_RINVCMDLEN
    assert await raw.closed_by_peer()
    # And the simulator is still serving others
    other = await RawClient.connect(sim.port)
    assert (await other.bind()).command_status == 0
    other.close()


async def test_client_unbind_is_answered_and_the_session_ends(sim: CarrierSim) -> None:
    raw = await RawClient.connect(sim.port)
    await raw.bind()
    await sim.wait_for_sessions(1)
    raw.send(encode_simple(C.UNBIND, 0, 2))
    resp = await raw.recv()
    assert resp.command_id == C.UNBIND_RESP and resp.sequence_number == 2
    assert await raw.closed_by_peer()
    await sim.wait_for_no_sessions()


async def test_drop_connections_cuts_every_client(
    sim: CarrierSim, clients: list[SmpplibClient]
) -> None:
    client = await bound_client(sim, clients)
    raw = await RawClient.connect(sim.port)
    await raw.bind()
    await sim.wait_for_sessions(2)
    await sim.drop_connections()
    assert sim.sessions == 0
    await wait_event(client.closed)
    with pytest.raises(ConnectionError):
        await raw.recv()


async def test_unbind_all_unbinds_and_closes_even_a_client_that_never_answers(
    sim: CarrierSim, clients: list[SmpplibClient]
) -> None:
    answering = await RawClient.connect(sim.port)
    await answering.bind()
    silent = await RawClient.connect(sim.port)  # like smpplib: never answers an SMSC's unbind
    await silent.bind()
    await sim.wait_for_sessions(2)
    done = asyncio.ensure_future(sim.unbind_all())
    unbind = await answering.recv()
    assert unbind.command_id == C.UNBIND
    answering.send(encode_simple(C.UNBIND_RESP, 0, unbind.sequence_number))
    assert (await silent.recv()).command_id == C.UNBIND
    await done
    assert sim.sessions == 0
    assert await answering.closed_by_peer()
    assert await silent.closed_by_peer()


def test_build_receipt_shape() -> None:
    pdu = build_receipt("0a1b", "14155550123", "12345", stat="UNDELIV", err="001",
                        text="a" * 40, submitted_at=0, done_at=60)
    assert pdu.get_bytes("short_message") == (
        b"id:0a1b sub:001 dlvrd:000 submit date:7001010000 done date:7001010001 "
        b"stat:UNDELIV err:001 text:" + b"a" * 20
    )
    assert pdu.get_tlv(Tag.MESSAGE_STATE) == b"\x05"


async def test_a_stuck_or_throttling_carrier_can_be_played() -> None:
    async with CarrierSim(SimConfig(port=0, answer_submits=False)) as sim:
        raw = await RawClient.connect(sim.port)
        await raw.bind()
        raw.send(make_pdu(C.SUBMIT_SM, sequence_number=2, short_message=b"hi"))
        raw.send(encode_simple(C.ENQUIRE_LINK, 0, 3))
        # The submit is taken but never answered; the link still is
        assert (await raw.recv()).command_id == C.ENQUIRE_LINK_RESP
        assert len(await sim.wait_for_submits(1)) == 1
        sim.config.answer_submits, sim.config.submit_status = True, S.ESME_RTHROTTLED
        raw.send(make_pdu(C.SUBMIT_SM, sequence_number=4, short_message=b"hi"))
        resp = await raw.recv()
        assert (resp.command_status, resp.sequence_number) == (S.ESME_RTHROTTLED, 4)
        assert sim.bind_attempts == 1
        raw.send(encode_simple(C.UNBIND, 0, 5))
        assert (await raw.recv()).command_id == C.UNBIND_RESP
        assert sim.unbinds_received == 1
        raw.close()


def tls_contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts around a throwaway certificate."""
    cert, key = self_signed(tmp)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=cert)
    return server, client


async def test_tls_listener(tmp_path: Path) -> None:
    server_tls, client_tls = tls_contexts(tmp_path)
    async with CarrierSim(SimConfig(port=0, tls=server_tls)) as sim:
        raw = await RawClient.connect(sim.port, client_tls)
        assert (await raw.bind()).command_status == 0
        raw.send(make_pdu(C.SUBMIT_SM, sequence_number=2, short_message=b"over tls"))
        assert (await raw.recv()).command_id == C.SUBMIT_SM_RESP
        [submit] = await sim.wait_for_submits(1)
        assert submit.get_bytes("short_message") == b"over tls"
        raw.close()
        # A plain-text client on the TLS port is dropped, and the simulator carries on
        plain = await RawClient.connect(sim.port)
        plain.send(encode(make_pdu(C.ENQUIRE_LINK, sequence_number=1)))
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await plain.recv()
        plain.close()
