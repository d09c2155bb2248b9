"""A loopback HTTP file server for download tests (supports Range, counts requests)."""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["serve_folder", "free_port", "write_registry"]


class _Handler(SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        rng = self.headers.get("Range")
        self.server.requests.append(f"{self.path}|{rng or ''}")  # type: ignore[attr-defined]
        path = Path(self.translate_path(self.path))
        if rng and path.is_file() and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            data = path.read_bytes()[start:]
            self.send_response(206)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Range", f"bytes {start}-{start + len(data) - 1}/*")
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_GET()


class serve_folder:  # noqa: N801 (context manager used like a function)
    """``with serve_folder(dir) as (base_url, requests):`` serves ``dir`` on 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_Handler, directory=str(folder))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.requests = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> tuple[str, list[str]]:
        self.thread.start()
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}", self.server.requests  # type: ignore[attr-defined]

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def free_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_registry(path: Path, entries: list[dict[str, Any]]) -> Path:
    """A registry JSON with one dataset ``test`` made of ``entries`` (path, url, data)."""
    files = []
    for e in entries:
        data: bytes = e["data"]
        files.append({"path": e["path"], "url": e["url"],
                      "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)})
    path.write_text(json.dumps({"format": "ir-planner-dataset-registry", "format_version": 1,
                                "datasets": [{"name": "test", "description": "test files",
                                              "licence": "CC0", "homepage": "",
                                              "files": files}]}))
    return path
