"""The small HTTP servers of the local stack: each on 127.0.0.1, on its own thread, stopped by stop()."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
log = logging.getLogger("pipeline.local")


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True  # a browser's idle keep-alive connection never holds up a stop
    block_on_close = False

    def __init__(self, name: str, handler: type[BaseHTTPRequestHandler], owner: Any, port: int = 0):
        super().__init__((HOST, port), handler)
        self.name, self.owner = name, owner
        self._thread = threading.Thread(target=self.serve_forever, name=f"local-{name}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle connection's thread ends after this many seconds

    @property
    def owner(self) -> Any:
        return self.server.owner

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *,
             head: bool = False) -> None:
        """A whole response; `head`: the headers of `body`, without it."""
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("content-length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def send_json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(value).encode(), {"content-type": "application/json", **(headers or {})})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s %s", self.server.name, format % args)
