"""The small JSON-over-HTTP handler and server lifecycle shared by the project's loopback receivers (the webhook
receiver and the ML backend): replies with a JSON body and routes the access log to `logging`
instead of stderr."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # route to logging, not stderr
        log.debug("%s - %s", self.client_address[0], fmt % args)

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LoopbackServer:
    """Lifecycle shared by the receivers: bind a threading HTTP server, serve it in a daemon
    thread (`start` / `stop`, or as a context manager) or in the caller's thread (`serve_forever`)."""

    thread_name = "dataengine-http"

    def _bind(self, host: str, port: int, handler: type[JsonHandler]) -> None:
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def serve_forever(self) -> None:
        """Serve in the calling thread (the CLI); stop with KeyboardInterrupt."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
