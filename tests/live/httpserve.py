"""A loopback HTTP server for ``stc stream`` tests: serves files from memory with ``Range`` support (as
ffmpeg's http reader asks), and can cut a file's body short to stand in for a network drop."""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class FileServer:
    """``files[url_path] = bytes``; ``cut[url_path] = n`` sends at most the first ``n`` bytes of the file
    (whatever range is asked), then hangs up. ``live[url_path] = (bytes, seconds)`` sends a stream with
    no length in ten pieces over ``seconds``, then closes, as a live HTTP stream that stops.
    ``down_after[url_path] = n`` answers the first ``n`` requests of it, then 503, as a server that is
    down. ``requests`` logs ``"METHOD path"``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.live: dict[str, tuple[bytes, float]] = {}
        self.cut: dict[str, int] = {}
        self.down_after: dict[str, int] = {}
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        assert self._server is not None, "FileServer is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> FileServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FileServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        owner = self.owner
        owner.requests.append(f"{self.command} {self.path}")
        if self.path in owner.down_after:
            if owner.down_after[self.path] <= 0:
                return self._refuse(503, b"down", head)
            owner.down_after[self.path] -= 1
        if self.path in owner.live:
            return self._stream(*owner.live[self.path], head)
        data = owner.files.get(self.path)
        if data is None:
            return self._refuse(404, b"not found", head)
        code, start, end = 200, 0, len(data) - 1
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        if match and int(match[1]) < len(data):
            code, start, end = 206, int(match[1]), int(match[2] or len(data) - 1)
        self.send_response(code)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return
        limit = owner.cut.get(self.path)
        if limit is None:
            self.wfile.write(data[start : end + 1])
            return
        self.wfile.write(data[start : min(end + 1, limit)])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _refuse(self, code: int, body: bytes, head: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _stream(self, data: bytes, seconds: float, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if head:
            return
        piece = -(-len(data) // 10)
        for start in range(0, len(data), piece):
            self.wfile.write(data[start : start + piece])
            self.wfile.flush()
            time.sleep(seconds / 10)
