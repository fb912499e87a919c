"""The small JSON-over-HTTP handler shared by the project's loopback receivers (the webhook
receiver and the ML backend): replies with a JSON body and routes the access log to `logging`
instead of stderr."""
from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler
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
