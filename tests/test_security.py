"""SSRF-safe downloads and API keys: unit level, and the API's 4xx answers.

No DNS here: hostnames are resolved by an injected resolver, and loopback test servers are made
reachable through ``UrlPolicy.allowed_endpoints`` (exact ip:port pairs) so that the address checks
stay ON for every other address, in particular for redirect targets.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import DEV_DATA
from fake_pipeline import FakePipeline
from fastapi.testclient import TestClient

from pipeline.settings import Settings
from service.security import (
    ApiKeys,
    FetchError,
    TooLarge,
    UrlPolicy,
    UrlRefused,
    address_problem,
    download,
)
from web.server import create_app

CLIP = DEV_DATA / "A_real_av" / "pcavs_voxceleb" / "misc__Audio_Source__00086.mp4"


class Server:
    """A loopback HTTP server; ``routes[path] = fn(handler)`` answers; ``hits`` records (path, Host)."""

    def __init__(self):
        self.routes: dict = {}
        self.hits: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits.append((self.path, self.headers.get("Host")))
                fn = outer.routes.get(self.path.split("?")[0])
                if fn is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                fn(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def redirect_to(location: str):
    def fn(h):
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return fn


def body(data: bytes, content_length: bool = True):
    def fn(h):
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        if content_length:
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        else:  # chunked: no size announced, the cap must hold on the bytes themselves
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for i in range(0, len(data), 4096):
                part = data[i:i + 4096]
                h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            h.wfile.write(b"0\r\n\r\n")
    return fn


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture()
def other_server():
    s = Server()
    yield s
    s.close()


def policy_for(*servers: Server, resolver=None) -> UrlPolicy:
    kw = {"resolver": resolver} if resolver else {}
    return UrlPolicy(allow_private=False, allowed_endpoints=frozenset(("127.0.0.1", s.port) for s in servers), **kw)


# ----------------------------------------------------------------------------------------------
# Addresses and URL checks
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("addr", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "169.254.1.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "100.64.0.1", "100.100.100.200", "198.18.0.1",
    "168.63.129.16", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1",
    "::ffff:169.254.169.254", "::ffff:10.0.0.1", "2002:7f00:0001::1", "2002:a9fe:a9fe::1", "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
])
def test_non_public_addresses_are_refused(addr):
    assert address_problem(addr) is not None


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888",
                                  "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(addr):
    assert address_problem(ipaddress.ip_address(addr)) is None


@pytest.mark.parametrize("url,code", [
    ("file:///etc/passwd", "unsupported_scheme"),
    ("ftp://example.org/a.mp4", "unsupported_scheme"),
    ("gopher://127.0.0.1:6379/_INFO", "unsupported_scheme"),
    ("//example.org/a.mp4", "unsupported_scheme"),
    ("http:///nohost", "invalid_url"),
    ("http://user:pw@example.org/a.mp4", "invalid_url"),
    ("http://127.0.0.1/", "forbidden_address"),
    ("http://169.254.169.254/latest/meta-data/", "forbidden_address"),
    ("http://[::1]:8080/", "forbidden_address"),
    ("http://[::ffff:127.0.0.1]/", "forbidden_address"),
    ("http://[fd00:ec2::254]/", "forbidden_address"),
    ("http://0.0.0.0:8000/", "forbidden_address"),
    ("http://localhost/", "forbidden_address"),
    ("http://2130706433/", "forbidden_address"),  # 127.0.0.1 written as one decimal number
    ("http://example.org:99999/", "invalid_url"),
])
def test_url_checks(url, code):
    resolver = {"example.org": ["93.184.216.34"], "localhost": ["127.0.0.1", "::1"],
                "2130706433": ["127.0.0.1"]}
    with pytest.raises(UrlRefused) as e:
        UrlPolicy(resolver=lambda h, p: resolver[h]).check(url)
    assert e.value.code == code and e.value.status == 400 and e.value.message


def test_every_resolved_address_must_be_public_and_the_checked_one_is_used():
    mixed = UrlPolicy(resolver=lambda h, p: ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(UrlRefused, match=r"10\.0\.0\.7 is a private address"):
        mixed.check("https://cdn.example/v.mp4")
    calls = []

    def rebinding(host, port):  # first answer public, later answers internal (DNS rebinding)
        calls.append(host)
        return ["93.184.216.34"] if len(calls) == 1 else ["127.0.0.1"]

    t = UrlPolicy(resolver=rebinding).check("https://cdn.example:8443/v.mp4?sig=1")
    assert len(calls) == 1  # resolved once; the connection goes to this address, not a new lookup
    assert t.pinned_url == "https://93.184.216.34:8443/v.mp4?sig=1"
    assert t.host_header == "cdn.example:8443" and t.extensions == {"sni_hostname": "cdn.example"}
    assert UrlPolicy(resolver=lambda h, p: ["2001:4860:4860::8888"]).check("http://v6.example/x").pinned_url == \
        "http://[2001:4860:4860::8888]:80/x"


def test_allow_private_switch():
    assert UrlPolicy(allow_private=True).check("http://127.0.0.1:9/x").ip == "127.0.0.1"


# ----------------------------------------------------------------------------------------------
# Downloads (loopback servers; only the named endpoints are allowlisted)
# ----------------------------------------------------------------------------------------------
def test_download_streams_hashes_and_sends_the_original_host(server, tmp_path):
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    server.routes["/clip.mp4"] = body(data)
    policy = policy_for(server, resolver=lambda h, p: ["127.0.0.1"])
    d = download(f"http://media.example:{server.port}/clip.mp4", tmp_path, policy, max_bytes=1 << 20)
    assert d.path.read_bytes() == data and d.size == len(data) and d.filename == "clip.mp4"
    import hashlib

    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert server.hits == [("/clip.mp4", f"media.example:{server.port}")]


def test_redirect_to_a_private_address_is_refused_before_connecting(server, other_server, tmp_path):
    other_server.routes["/secret"] = body(b"internal data")
    server.routes["/to-loopback"] = redirect_to(f"http://127.0.0.1:{other_server.port}/secret")
    server.routes["/to-metadata"] = redirect_to("http://169.254.169.254/latest/meta-data/iam/")
    server.routes["/to-mapped"] = redirect_to(f"http://[::ffff:127.0.0.1]:{other_server.port}/secret")
    for path in ("/to-loopback", "/to-metadata", "/to-mapped"):
        with pytest.raises(UrlRefused) as e:
            download(server.base + path, tmp_path, policy_for(server), max_bytes=1 << 20)
        assert e.value.code == "forbidden_address"
    assert other_server.hits == []  # the internal server was never contacted
    assert list(tmp_path.iterdir()) == []


def test_redirects_are_followed_and_capped(server, tmp_path):
    server.routes["/final"] = body(b"ftyp-data")
    server.routes["/r1"] = redirect_to("/final")  # relative, same (allowed) endpoint
    for i in range(7):
        server.routes[f"/loop{i}"] = redirect_to(f"/loop{i + 1}")
    assert download(server.base + "/r1", tmp_path, policy_for(server), 1 << 20).path.read_bytes() == b"ftyp-data"
    with pytest.raises(FetchError) as e:
        download(server.base + "/loop0", tmp_path, policy_for(server), 1 << 20, max_redirects=5)
    assert e.value.code == "too_many_redirects" and len([h for h in server.hits if "loop" in h[0]]) == 6


@pytest.mark.parametrize("announce", [True, False])
def test_size_cap_on_content_length_and_on_actual_bytes(server, tmp_path, announce):
    server.routes["/big"] = body(b"x" * 300_000, content_length=announce)
    with pytest.raises(TooLarge) as e:
        download(server.base + "/big", tmp_path, policy_for(server), max_bytes=100_000)
    assert e.value.status == 413 and e.value.code == "file_too_large"
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_http_errors_and_timeouts(server, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404") as e:
        download(server.base + "/missing", tmp_path, policy_for(server), 1 << 20)
    assert e.value.status == 422

    def slow(h):
        time.sleep(3)

    server.routes["/slow"] = slow
    t0 = time.monotonic()
    with pytest.raises(FetchError) as e:
        download(server.base + "/slow", tmp_path, policy_for(server), 1 << 20, timeout_s=0.5)
    assert e.value.code == "download_timeout" and time.monotonic() - t0 < 2.5


# ----------------------------------------------------------------------------------------------
# API keys
# ----------------------------------------------------------------------------------------------
def test_api_keys():
    user = "0b9d7c55-0f3e-4c8e-8f0e-5a1d2b3c4d5e"
    keys = ApiKeys(["alpha", f"beta:{user}", " "])
    assert len(keys) == 2
    a, b = keys.authenticate("Bearer alpha"), keys.authenticate("bearer  beta ")
    assert a.user_id is None and b.user_id == user and a.key_id != b.key_id and "alpha" not in a.key_id
    for bad in (None, "", "alpha", "Basic alpha", "Bearer", "Bearer alph", "Bearer alphaX", "Token alpha"):
        assert keys.authenticate(bad) is None
    with pytest.raises(ValueError):
        ApiKeys(["k:not-a-uuid"])


# ----------------------------------------------------------------------------------------------
# The API answers every refused URL with a clear 4xx JSON error
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def api(tmp_path, server):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/db.sqlite3", uploads_dir=tmp_path / "uploads", api_keys=["k1"],
        allow_private_urls=False, allow_private_callbacks=False, max_file_bytes=250_000, queue_poll_s=0.1,
        callback_secret="s3cret",
    )
    app = create_app(settings, pipeline=FakePipeline(settings), url_policy=policy_for(server))
    with TestClient(app) as client:
        client.headers["Authorization"] = "Bearer k1"
        yield client


@pytest.mark.parametrize("url,status,code", [
    ("http://127.0.0.1/", 400, "forbidden_address"),
    ("http://169.254.169.254/latest/meta-data/", 400, "forbidden_address"),
    ("http://[::1]/", 400, "forbidden_address"),
    ("file:///etc/passwd", 400, "unsupported_scheme"),
])
def test_api_refuses_internal_urls(api, url, status, code):
    r = api.post("/detect_video", json={"video_url": url})
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_api_refuses_redirect_to_private_and_oversized_bodies(api, server, other_server, tmp_path):
    other_server.routes["/secret"] = body(CLIP.read_bytes())
    server.routes["/redirect"] = redirect_to(f"http://127.0.0.1:{other_server.port}/secret")
    r = api.post("/detect_video", json={"video_url": server.base + "/redirect"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "forbidden_address"
    assert "127.0.0.1" in r.json()["error"]["message"] and other_server.hits == []

    server.routes["/big"] = body(b"\x00" * 400_000, content_length=False)  # cap is 250 kB
    r = api.post("/detect_video", json={"video_url": server.base + "/big"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"

    server.routes["/clip.mp4"] = body(CLIP.read_bytes())  # an allowed endpoint with a real clip is accepted
    r = api.post("/detect_video", json={"video_url": server.base + "/clip.mp4"})
    assert r.status_code == 202, r.text
    assert not list(Path(tmp_path / "uploads").glob("*.part"))  # refused downloads left nothing behind


def test_api_refuses_private_callback_urls(api, server):
    server.routes["/clip.mp4"] = body(CLIP.read_bytes())
    r = api.post("/detect_video", json={"video_url": server.base + "/clip.mp4",
                                        "callback_url": "http://169.254.169.254/hook"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "callback_refused"
    assert "metadata" in r.json()["error"]["message"]
    r = api.post("/detect_video", json={"video_url": server.base + "/clip.mp4", "callback_url": "file:///tmp/x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "callback_refused"
    assert [h for h in server.hits if h[0] == "/clip.mp4"] == []  # refused before downloading anything
