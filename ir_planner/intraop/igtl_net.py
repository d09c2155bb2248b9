"""OpenIGTLink over TCP: a server (peers connect to us) and a client (we connect to a peer).

Both read with the strict decoder of :mod:`ir_planner.intraop.igtl` in a background
thread and hand three things to a :class:`IgtlSink`:

* ``raw(peer, data, t_mono)``: every byte sequence received as one message
  (also partial ones cut by a disconnect), for the recorder: nothing is lost;
* ``message(peer, msg, t_mono)``: each message that decoded (``t_mono`` is
  ``time.monotonic()`` when its last byte arrived: the start of the latency);
* ``status(kind, detail)``: connection state and every problem, one line each
  ("malformed", "oversized", "crc", "unknown type", "stalled", "disconnected
  mid-message", "refused").

A malformed *body* (bad CRC, nonsense values) is reported and skipped: the stream
stays in sync. A malformed or oversized *header* cannot be resynchronised, so the
connection is closed and reported; the server keeps listening and a client
reconnects.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Protocol

from ir_planner.core.errors import InputError
from ir_planner.intraop.igtl import (
    DEFAULT_UNKNOWN_LIMIT,
    HEADER_SIZE,
    IgtlError,
    Message,
    body_limit,
    decode_body,
    decode_header,
)

__all__ = ["IgtlSink", "IgtlServer", "IgtlClient", "parse_host_port"]

#: A peer that sends part of a message and then nothing for this long is dropped (s).
STALL_TIMEOUT_S = 5.0


class IgtlSink(Protocol):
    """Receiver of what an OpenIGTLink connection produces (called from its thread)."""

    def raw(self, peer: str, data: bytes, t_mono: float, complete: bool) -> None: ...

    def message(self, peer: str, msg: Message, t_mono: float) -> None: ...

    def status(self, kind: str, detail: str) -> None: ...


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port) with a clear error."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise InputError(f"--igtl-connect must be HOST:PORT; got {text!r}")
    try:
        p = int(port)
    except ValueError:
        raise InputError(f"--igtl-connect port must be a number; got {port!r}") from None
    if not 0 < p < 65536:
        raise InputError(f"--igtl-connect port must be 1-65535; got {p}")
    return host, p


class _Stalled(Exception):
    pass


class _Closed(Exception):
    def __init__(self, got: bytes) -> None:
        super().__init__()
        self.got = got


def _recv_exact(sock: socket.socket, n: int, stop: threading.Event, *, idle_ok: bool
                ) -> bytes | None:
    """Read exactly ``n`` bytes. None: stopped (or nothing arrived while idle_ok and stopping).

    Raises _Closed (peer closed; with what arrived) or _Stalled (partial, then silence).
    """
    chunks: list[bytes] = []
    got = 0
    last = time.monotonic()
    while got < n:
        if stop.is_set():
            return None
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except TimeoutError:
            if got == 0 and idle_ok:
                continue
            if time.monotonic() - last > STALL_TIMEOUT_S:
                raise _Stalled() from None
            continue
        except OSError:
            raise _Closed(b"".join(chunks)) from None
        if not chunk:
            raise _Closed(b"".join(chunks))
        chunks.append(chunk)
        got += len(chunk)
        last = time.monotonic()
    return b"".join(chunks)


def _read_loop(sock: socket.socket, peer: str, sink: IgtlSink, stop: threading.Event,
               unknown_limit: int) -> str:
    """Read messages until the peer leaves or ``stop``; returns why it ended."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            head = _recv_exact(sock, HEADER_SIZE, stop, idle_ok=True)
        except _Closed as c:
            if c.got:
                sink.raw(peer, c.got, time.monotonic(), False)
                return f"disconnected mid-message (header {len(c.got)} of {HEADER_SIZE} bytes)"
            return "disconnected"
        except _Stalled:
            return f"stalled mid-header for more than {STALL_TIMEOUT_S:.0f} s"
        if head is None:
            return "stopped"
        try:
            header = decode_header(head)
        except IgtlError as exc:
            sink.raw(peer, head, time.monotonic(), False)
            sink.status("malformed", f"{peer}: malformed header ({exc}); closing the connection "
                        "(the stream cannot be resynchronised)")
            return "malformed header"
        limit = body_limit(header.type, unknown_limit)
        if header.body_size > limit:
            sink.raw(peer, head, time.monotonic(), False)
            sink.status("oversized", f"{peer}: {header.type} from {header.device!r} announces "
                        f"{header.body_size} bytes (limit {limit}); closing the connection")
            return "oversized message"
        try:
            body = _recv_exact(sock, header.body_size, stop, idle_ok=False)
        except _Closed as c:
            sink.raw(peer, head + c.got, time.monotonic(), False)
            return (f"disconnected mid-message ({header.type} body {len(c.got)} of "
                    f"{header.body_size} bytes)")
        except _Stalled:
            return (f"stalled mid-message ({header.type} from {header.device!r}) for more than "
                    f"{STALL_TIMEOUT_S:.0f} s")
        if body is None:
            return "stopped"
        t = time.monotonic()
        sink.raw(peer, head + body, t, True)
        try:
            msg = decode_body(header, body)
        except IgtlError as exc:
            sink.status("malformed", f"{peer}: {exc}; message skipped")
            continue
        sink.message(peer, msg, t)
    return "stopped"


class IgtlServer:
    """An OpenIGTLink server on ``host:port`` (loopback by default) in background threads.

    Parameters
    ----------
    sink : IgtlSink
    port : int
        0 picks a free port (see :attr:`port` after :meth:`start`).
    host : str
        Interface to bind; 127.0.0.1 unless the site configures otherwise.
    max_clients : int
        Further connections are refused and reported.
    """

    def __init__(self, sink: IgtlSink, *, port: int = 18944, host: str = "127.0.0.1",
                 max_clients: int = 4, unknown_limit: int = DEFAULT_UNKNOWN_LIMIT) -> None:
        self.sink = sink
        self.host = host
        self.port = int(port)
        self.max_clients = max_clients
        self.unknown_limit = unknown_limit
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._clients: dict[str, socket.socket] = {}
        self._lock = threading.Lock()

    @property
    def connected(self) -> list[str]:
        """Peers currently connected."""
        with self._lock:
            return list(self._clients)

    def start(self) -> "IgtlServer":
        """Bind, listen and accept in the background."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, self.port))
        except OSError as exc:
            s.close()
            raise InputError(f"OpenIGTLink server: cannot listen on {self.host}:{self.port} "
                             f"({exc.strerror or exc})") from exc
        s.listen(8)
        s.settimeout(0.2)
        self._sock = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept, name="igtl-accept", daemon=True)
        t.start()
        self._threads.append(t)
        self.sink.status("listening", f"OpenIGTLink server on {self.host}:{self.port}")
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            peer = f"{addr[0]}:{addr[1]}"
            with self._lock:
                full = len(self._clients) >= self.max_clients
                if not full:
                    self._clients[peer] = conn
            if full:
                self.sink.status("refused", f"OpenIGTLink peer {peer} refused: already "
                                 f"{self.max_clients} connected")
                conn.close()
                continue
            t = threading.Thread(target=self._serve, args=(conn, peer), name=f"igtl-{peer}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, peer: str) -> None:
        self.sink.status("connected", f"OpenIGTLink peer {peer} connected")
        try:
            why = _read_loop(conn, peer, self.sink, self._stop, self.unknown_limit)
        except Exception as exc:  # noqa: BLE001 - a connection must never take the server down
            why = f"error {type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._clients.pop(peer, None)
            conn.close()
        self.sink.status("disconnected", f"OpenIGTLink peer {peer}: {why}")

    def send(self, data: bytes) -> int:
        """Send an encoded message to every connected peer; returns how many got it."""
        n = 0
        with self._lock:
            clients = list(self._clients.values())
        for c in clients:
            try:
                c.sendall(data)
                n += 1
            except OSError:
                pass
        return n

    def stop(self) -> None:
        """Close the listening socket and every connection; join the threads."""
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            for c in self._clients.values():
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self._threads:
            t.join(timeout=3.0)


class IgtlClient:
    """An OpenIGTLink client that connects to ``host:port`` and reconnects when dropped."""

    def __init__(self, sink: IgtlSink, host: str, port: int, *, retry_s: float = 1.0,
                 unknown_limit: int = DEFAULT_UNKNOWN_LIMIT) -> None:
        self.sink = sink
        self.host = host
        self.port = int(port)
        self.retry_s = retry_s
        self.unknown_limit = unknown_limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.connected = False

    def start(self) -> "IgtlClient":
        """Connect (and keep reconnecting) in the background."""
        self._thread = threading.Thread(target=self._run, name="igtl-client", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        peer = f"{self.host}:{self.port}"
        reported = False
        while not self._stop.is_set():
            try:
                s = socket.create_connection((self.host, self.port), timeout=2.0)
            except OSError as exc:
                if not reported:
                    self.sink.status("unreachable", f"OpenIGTLink peer {peer} not reachable "
                                     f"({exc.strerror or exc}); retrying every {self.retry_s} s")
                    reported = True
                self._stop.wait(self.retry_s)
                continue
            reported = False
            self._sock = s
            self.connected = True
            self.sink.status("connected", f"connected to OpenIGTLink peer {peer}")
            try:
                why = _read_loop(s, peer, self.sink, self._stop, self.unknown_limit)
            except Exception as exc:  # noqa: BLE001
                why = f"error {type(exc).__name__}: {exc}"
            finally:
                self.connected = False
                s.close()
                self._sock = None
            self.sink.status("disconnected", f"OpenIGTLink peer {peer}: {why}")
            self._stop.wait(self.retry_s)

    def send(self, data: bytes) -> bool:
        """Send an encoded message if connected."""
        s = self._sock
        if s is None:
            return False
        try:
            s.sendall(data)
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """Disconnect and join the thread."""
        self._stop.set()
        s = self._sock
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=3.0)
