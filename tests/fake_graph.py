"""A loopback stand-in for the WhatsApp Cloud (Graph) API, for tests.

    GET  /v20.0/<media-id>                 media metadata {url, mime_type, file_size, sha256, id}
    GET  /media/<media-id>                 the bytes (the short-lived URL of the real API)
    POST /v20.0/<phone-number-id>/messages records the message, answers {"messages": [{"id": ...}]}

Every request must carry ``Authorization: Bearer <token>`` (401 otherwise, like Meta). Tests register
media with ``add_media`` and read what the bot sent from ``sent`` / ``wait_for``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

VERSION = "v20.0"


@dataclass
class Media:
    data: bytes
    mime_type: str
    declared_size: int | None  # what the metadata says (None: omitted)
    chunked: bool = False  # bytes sent without Content-Length


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that stops reading (a refused oversized download) is expected here


class FakeGraph:
    def __init__(self, token: str = "graph-test-token", phone_number_id: str = "1555000111"):
        self.token = token
        self.phone_number_id = phone_number_id
        self.media: dict[str, Media] = {}
        self.sent: list[dict] = []  # JSON bodies POSTed to /messages, in arrival order
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.downloads: list[str] = []  # media ids whose bytes were fetched
        self.fail_sends = 0  # answer this many /messages calls with HTTP 500
        self.uploads: dict[str, bytes] = {}  # media uploaded to /media (what an image message shows), by id
        self._cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json", length: int | None = None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, payload) -> None:
                self._send(status, json.dumps(payload).encode())

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {outer.token}":
                    return True
                self._json(401, {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException",
                                           "code": 190}})
                return False

            def do_GET(self):
                path = urlsplit(self.path).path
                outer.requests.append(("GET", path))
                if not self._authorised():
                    return
                parts = path.strip("/").split("/")
                if len(parts) == 2 and parts[0] == VERSION and parts[1] in outer.media:
                    m = outer.media[parts[1]]
                    meta = {"messaging_product": "whatsapp", "id": parts[1], "mime_type": m.mime_type,
                            "sha256": hashlib.sha256(m.data).hexdigest(),
                            "url": f"{outer.base}/media/{parts[1]}"}
                    if m.declared_size is not None:
                        meta["file_size"] = m.declared_size
                    return self._json(200, meta)
                if len(parts) == 2 and parts[0] == "media" and parts[1] in outer.media:
                    outer.downloads.append(parts[1])
                    m = outer.media[parts[1]]
                    if not m.chunked:
                        return self._send(200, m.data, m.mime_type)
                    self.send_response(200)
                    self.send_header("Content-Type", m.mime_type)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(m.data), 16384):
                        part = m.data[i:i + 16384]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return None
                self._json(404, {"error": {"message": f"Unsupported get request. Object with ID '{parts[-1]}' "
                                                      "does not exist", "type": "GraphMethodException", "code": 100}})

            def do_POST(self):
                path = urlsplit(self.path).path
                outer.requests.append(("POST", path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self._authorised():
                    return
                if path == f"/{VERSION}/{outer.phone_number_id}/media":
                    ctype = self.headers.get("Content-Type", "")
                    if "multipart/form-data" not in ctype or b"messaging_product" not in body:
                        return self._json(400, {"error": {"message": "expected a multipart media upload"}})
                    start = body.index(b"\r\n\r\n", body.index(b'name="file"')) + 4
                    boundary = ctype.split("boundary=")[1].encode()
                    media_id = f"upl{len(outer.uploads) + 1}"
                    outer.uploads[media_id] = body[start : body.index(b"\r\n--" + boundary, start)]
                    return self._json(200, {"id": media_id})
                if path != f"/{VERSION}/{outer.phone_number_id}/messages":
                    return self._json(404, {"error": {"message": "unknown path", "code": 100}})
                if outer.fail_sends > 0:
                    outer.fail_sends -= 1
                    return self._json(500, {"error": {"message": "temporarily unavailable", "code": 2}})
                payload = json.loads(body)
                with outer._cond:
                    outer.sent.append(payload)
                    n = len(outer.sent)
                    outer._cond.notify_all()
                self._json(200, {"messaging_product": "whatsapp",
                                 "contacts": [{"input": payload.get("to"), "wa_id": payload.get("to")}],
                                 "messages": [{"id": f"wamid.out{n}"}]})

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.graph_url = f"{self.base}/{VERSION}"
        threading.Thread(target=self.server.serve_forever, name="fake-graph", daemon=True).start()

    def add_media(self, media_id: str, data: bytes, mime_type: str, declared_size: int | None = None,
                  omit_size: bool = False, chunked: bool = False) -> None:
        """Serve ``data`` as ``media_id``; the metadata's file_size is the true size unless ``declared_size``
        says otherwise (a lie) or ``omit_size`` leaves it out; ``chunked`` sends no Content-Length either."""
        size = None if omit_size else len(data) if declared_size is None else declared_size
        self.media[media_id] = Media(data, mime_type, size, chunked)

    def texts(self, to: str | None = None) -> list[str]:
        return [m["text"]["body"] for m in self.sent if (to is None or m.get("to") == to) and m.get("type") != "image"]

    def images(self, to: str | None = None) -> list[bytes]:
        """The pictures sent as image messages (to ``to``), in order."""
        return [self.uploads[m["image"]["id"]] for m in self.sent
                if m.get("type") == "image" and (to is None or m.get("to") == to)]

    def wait_for(self, n: int, timeout: float = 30.0, to: str | None = None) -> list[dict]:
        """Block until at least ``n`` messages (to ``to``) were sent; returns them."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for m in self.sent if to is None or m.get("to") == to]
                if len(got) >= n:
                    return got
                left = end - time.monotonic()
                if left <= 0:
                    bodies = [(m.get("text") or {}).get("body", m.get("type")) for m in got]
                    raise AssertionError(f"expected {n} messages, got {len(got)}: {bodies}")
                self._cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AppServer:
    """The app under test served by uvicorn in a thread on a free loopback port (real HTTP, so the service's
    callbacks can reach the app itself, as they do in production)."""

    def __init__(self, app, port: int = 0):
        import socket

        import uvicorn

        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{port}", daemon=True)

    def start(self, timeout: float = 30.0) -> AppServer:
        self.thread.start()
        end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise AssertionError("the app server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
