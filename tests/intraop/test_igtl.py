"""OpenIGTLink: the codec against pyigtl (the SlicerIGT team's implementation), and the
server/client against real pyigtl peers, with malformed, truncated, oversized, unknown,
cut and flooding input."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import numpy as np
import pyigtl
import pytest

from ir_planner.core.errors import InputError
from ir_planner.intraop import igtl
from ir_planner.intraop.igtl_net import IgtlClient, IgtlServer, parse_host_port
from tests.intraop.peers import free_port


class Sink:
    """Collects what a connection produces."""

    def __init__(self) -> None:
        self.raws: list[tuple[bytes, bool]] = []
        self.messages: list[Any] = []
        self.statuses: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def raw(self, peer: str, data: bytes, t_mono: float, complete: bool) -> None:
        with self.lock:
            self.raws.append((data, complete))

    def message(self, peer: str, msg: Any, t_mono: float) -> None:
        with self.lock:
            self.messages.append(msg)

    def status(self, kind: str, detail: str) -> None:
        with self.lock:
            self.statuses.append((kind, detail))

    def wait(self, pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if pred(self):
                    return True
            time.sleep(0.01)
        return False


def _decode(raw: bytes):  # type: ignore[no-untyped-def]
    h = igtl.decode_header(raw[:igtl.HEADER_SIZE])
    return igtl.decode_body(h, raw[igtl.HEADER_SIZE:])


def test_pyigtl_transform_decodes_and_converts_ras_to_lps() -> None:
    m = np.array([[0, -1, 0, 10], [1, 0, 0, 20], [0, 0, 1, 30], [0, 0, 0, 1]], dtype=float)
    raw = pyigtl.TransformMessage(m, device_name="NeedleToRas").pack()
    msg = _decode(raw)
    assert isinstance(msg, igtl.TransformMessage) and msg.device == "NeedleToRas"
    assert np.allclose(msg.matrix_ras, m)
    # the tip at (10, 20, 30) RAS is (-10, -20, 30) LPS
    assert np.allclose(msg.matrix_lps[:3, 3], [-10, -20, 30])
    assert np.allclose(msg.matrix_lps[:3, 0], [0, -1, 0])


def test_our_messages_decode_in_pyigtl() -> None:
    m = np.eye(4)
    m[:3, 3] = [1.5, -2.0, 3.25]
    raw = igtl.encode_transform(m, device="Tool")
    h = pyigtl.MessageBase.parse_header(raw[:58])
    out = pyigtl.MessageBase.create_message(h["message_type"])
    out.unpack(h, raw[58:])
    assert np.allclose(out.matrix, m) and h["device_name"] == "Tool"
    s = igtl.encode_string("needle in", device="Status")
    h = pyigtl.MessageBase.parse_header(s[:58])
    out = pyigtl.MessageBase.create_message("STRING")
    out.unpack(h, s[58:])
    assert out.string == "needle in"
    assert struct.unpack(">Q", raw[50:58])[0] == igtl.crc64(raw[58:])


def test_image_geometry_round_trip_with_pyigtl() -> None:
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    ijk_to_ras = np.array([[0.8, 0, 0, -50], [0, 0.8, 0, 20], [0, 0, 2.5, 100], [0, 0, 0, 1]])
    raw = pyigtl.ImageMessage(arr, ijk_to_world_matrix=ijk_to_ras, world_coordinate_system="ras",
                              device_name="US").pack()
    msg = _decode(raw)
    assert isinstance(msg, igtl.ImageMessage) and msg.frame == "RAS"
    assert np.array_equal(msg.array, arr)
    assert np.allclose(msg.ijk_to_world, ijk_to_ras, atol=1e-4)
    # voxel (i=5, j=4, k=3) in LPS
    p = msg.ijk_to_lps @ [5, 4, 3, 1]
    assert np.allclose(p[:3], [-(-50 + 4.0), -(20 + 3.2), 100 + 7.5], atol=1e-4)
    ours = igtl.encode_image(arr, msg.ijk_to_lps, frame="LPS", device="CT")
    back = _decode(ours)
    assert back.frame == "LPS" and np.allclose(back.ijk_to_lps, msg.ijk_to_lps, atol=1e-4)


def test_points_and_v2_header() -> None:
    raw = pyigtl.PointMessage(positions=[[1, 2, 3], [4, 5, 6]], names=["entry", "target"],
                              device_name="Fiducials").pack()
    msg = _decode(raw)
    assert msg.names == ("entry", "target")
    assert np.allclose(msg.positions_lps, [[-1, -2, 3], [-4, -5, 6]])
    t = pyigtl.TransformMessage(np.eye(4), device_name="V2")
    t.header_version = 2
    t.metadata = {"Status": "OK"}
    assert isinstance(_decode(t.pack()), igtl.TransformMessage)


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r[:-1], "bytes"),
    (lambda r: r[:60] + bytes([r[60] ^ 0xFF]) + r[61:], "CRC"),
])
def test_malformed_bodies_are_refused(mutate, match) -> None:  # type: ignore[no-untyped-def]
    raw = mutate(igtl.encode_transform(np.eye(4)))
    h = igtl.decode_header(raw[:58])
    with pytest.raises(igtl.IgtlError, match=match):
        igtl.decode_body(h, raw[58:])


def test_nonsense_values_are_refused() -> None:
    nan = igtl.encode_message("TRANSFORM", "X", struct.pack(">12f", *([float("nan")] * 12)))
    with pytest.raises(igtl.IgtlError, match="NaN"):
        _decode(nan)
    zero = igtl.encode_message("TRANSFORM", "X", struct.pack(">12f", *([0.0] * 12)))
    with pytest.raises(igtl.IgtlError, match="singular"):
        _decode(zero)
    short_img = igtl.encode_message("IMAGE", "X", b"\0" * 20)
    with pytest.raises(igtl.IgtlError, match="shorter"):
        _decode(short_img)
    bad = bytearray(igtl.encode_image(np.zeros((2, 2, 2), np.uint8), np.eye(4)))
    bad = bytes(bad[:58]) + bytes(bad[58:-1])  # one pixel missing; header size left as is
    with pytest.raises(igtl.IgtlError):
        _decode(bad)
    with pytest.raises(igtl.IgtlError, match="version"):
        igtl.decode_header(b"\x00\x09" + b"\0" * 56)
    with pytest.raises(igtl.IgtlError, match="type"):
        igtl.decode_header(struct.pack(">H12s20sIIQQ", 1, b"\x01\x02", b"", 0, 0, 0, 0))


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:18944") == ("127.0.0.1", 18944)
    for bad in ("nohost", ":12", "h:x", "h:70000"):
        with pytest.raises(InputError):
            parse_host_port(bad)


@pytest.fixture()
def server():  # type: ignore[no-untyped-def]
    sink = Sink()
    srv = IgtlServer(sink, port=0).start()
    yield srv, sink
    srv.stop()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_server_receives_a_pyigtl_client_stream(server) -> None:  # type: ignore[no-untyped-def]
    srv, sink = server
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=srv.port)
    try:
        for n in range(20):
            m = np.eye(4)
            m[:3, 3] = [n, 0, 0]
            client.send_message(pyigtl.TransformMessage(m, device_name="Needle"), wait=True)
        client.send_message(pyigtl.StringMessage("done", device_name="Status"), wait=True)
        assert sink.wait(lambda s: len(s.messages) >= 21)
    finally:
        client.stop()
    xs = [m.matrix_ras[0, 3] for m in sink.messages if isinstance(m, igtl.TransformMessage)]
    assert xs == list(range(20))
    assert any(k == "connected" for k, _ in sink.statuses)
    assert sink.wait(lambda s: any(k == "disconnected" for k, _ in s.statuses))


def test_bad_input_keeps_the_server_running(server) -> None:  # type: ignore[no-untyped-def]
    srv, sink = server
    good = igtl.encode_transform(np.eye(4), device="Needle")
    # 1) CRC-corrupted body then a good message on the same connection: skipped, in sync
    s = _connect(srv.port)
    corrupt = good[:60] + bytes([good[60] ^ 0x55]) + good[61:]
    unknown = igtl.encode_message("FOOBAR", "Dev", b"xyz" * 10)
    s.sendall(corrupt + unknown + good)
    assert sink.wait(lambda k: len(k.messages) == 2)
    assert isinstance(sink.messages[0], igtl.UnknownMessage) and sink.messages[0].type == "FOOBAR"
    assert isinstance(sink.messages[1], igtl.TransformMessage)
    assert any("CRC" in d for _, d in sink.statuses)
    s.close()
    # 2) oversized announcement: refused at the header, connection closed, server lives
    s = _connect(srv.port)
    s.sendall(struct.pack(">H12s20sIIQQ", 1, b"TRANSFORM", b"Big", 0, 0, 10 ** 9, 0))
    assert sink.wait(lambda k: any(kind == "oversized" for kind, _ in k.statuses))
    s.close()
    # 3) garbage header
    s = _connect(srv.port)
    s.sendall(b"\xff" * 58)
    assert sink.wait(lambda k: any(kind == "malformed" and "header" in d
                                   for kind, d in k.statuses))
    s.close()
    # 4) peer disconnects mid-message: the fragment is recorded, reported
    s = _connect(srv.port)
    s.sendall(good[:70])
    time.sleep(0.3)
    s.close()
    assert sink.wait(lambda k: any("mid-message" in d for _, d in k.statuses))
    assert any(not complete and len(raw) == 70 for raw, complete in sink.raws)
    # still serving
    s = _connect(srv.port)
    s.sendall(good)
    assert sink.wait(lambda k: len(k.messages) == 3)
    s.close()


def test_flood_is_read_completely(server) -> None:  # type: ignore[no-untyped-def]
    srv, sink = server
    s = _connect(srv.port)
    n = 3000
    blob = b"".join(igtl.encode_transform(np.eye(4), device=f"T{k % 3}") for k in range(n))
    s.sendall(blob)
    assert sink.wait(lambda k: len(k.messages) == n, timeout=30)
    s.close()


def test_client_connects_to_a_pyigtl_server_and_reconnects() -> None:
    port = free_port()
    sink = Sink()
    client = IgtlClient(sink, "127.0.0.1", port, retry_s=0.2).start()
    try:
        assert sink.wait(lambda k: any(kind == "unreachable" for kind, _ in k.statuses))
        srv = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
        try:
            assert sink.wait(lambda k: any(kind == "connected" for kind, _ in k.statuses))
            arr = np.zeros((1, 8, 8), np.uint8)
            srv.send_message(pyigtl.ImageMessage(arr, device_name="US"), wait=True)
            m = np.eye(4)
            m[:3, 3] = [5, 6, 7]
            srv.send_message(pyigtl.TransformMessage(m, device_name="Probe"), wait=True)
            assert sink.wait(lambda k: len(k.messages) >= 2)
        finally:
            srv.stop()
    finally:
        client.stop()
    kinds = {type(m).__name__ for m in sink.messages}
    assert {"ImageMessage", "TransformMessage"} <= kinds
