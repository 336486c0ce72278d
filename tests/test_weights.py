"""Weights registry: resolution order, sha256-verified download, and the error a user sees."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from models import weights
from models.weights import WeightsNotFoundError, WeightSpec


@pytest.fixture
def fake_spec(monkeypatch):
    payload = b"checkpoint bytes" * 100
    spec = WeightSpec("unit_test_ckpt", "unit.pth", hashlib.sha256(payload).hexdigest(), "MIT", None, "test")
    monkeypatch.setitem(weights.WEIGHTS, spec.name, spec)
    return spec, payload


@pytest.fixture
def http_server():
    """Serves files from a dict on loopback; counts requests."""
    files: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files, hits
    server.shutdown()


def test_every_shared_weight_is_registered_with_its_sha(shared_weights):
    text = (shared_weights / "WEIGHTS.md").read_text()
    for spec in weights.WEIGHTS.values():
        if spec.production or spec.bundled or spec.pip_package:
            continue
        assert spec.filename in text and spec.sha256 in text, spec.name
        assert weights.sha256_of(shared_weights / spec.filename) == spec.sha256
        assert spec.url and spec.url.startswith("https://") and spec.license


def test_bundled_checkpoints_match_their_pinned_sha_and_have_a_model_card():
    bundled = [s for s in weights.WEIGHTS.values() if s.bundled]
    assert {s.name for s in bundled} >= {"aasist_ft", "mesoinception_ft", "lrasd_temporal", "sync_head"}
    for spec in bundled:
        path = weights.resolve(spec.name, weights_dir=None, allow_download=False)
        assert path.parent == weights.BUNDLED_DIR
        assert weights.sha256_of(path) == spec.sha256, f"{spec.name}: retrained? update its sha256 and model card"
        card = (weights.BUNDLED_DIR / f"{spec.name}.md").read_text()
        assert spec.sha256 in card, f"{spec.name}.md describes another file"


def test_production_checkpoints_have_release_urls():
    b7 = [s for s in weights.WEIGHTS.values() if s.name.startswith("dfdc_b7_")]
    assert len(b7) == 7 and all("releases/download/0.0.1/" in s.url for s in b7)
    assert weights.WEIGHTS["retinaface_resnet50"].production


def test_resolution_order(tmp_path, fake_spec):
    spec, payload = fake_spec
    explicit, wdir, cache = tmp_path / "explicit.pth", tmp_path / "wdir", tmp_path / "cache"
    wdir.mkdir()
    cache.mkdir()
    for p in (explicit, wdir / spec.filename, cache / spec.filename):
        p.write_bytes(payload)
    kw = dict(weights_dir=wdir, cache_dir=cache, allow_download=False)
    assert weights.resolve(spec.name, explicit, **kw) == explicit
    assert weights.resolve(spec.name, **kw) == wdir / spec.filename
    (wdir / spec.filename).unlink()
    assert weights.resolve(spec.name, **kw) == cache / spec.filename


def test_missing_explicit_path_is_an_error_not_a_fallback(tmp_path, fake_spec):
    spec, payload = fake_spec
    (tmp_path / spec.filename).write_bytes(payload)
    with pytest.raises(WeightsNotFoundError, match="explicit path"):
        weights.resolve(spec.name, tmp_path / "typo.pth", weights_dir=tmp_path, allow_download=False)


def test_not_found_message_says_where_it_looked_and_what_to_do(tmp_path, fake_spec):
    spec, _ = fake_spec
    with pytest.raises(WeightsNotFoundError) as err:
        weights.resolve(spec.name, weights_dir=tmp_path / "w", cache_dir=tmp_path / "c", allow_download=False)
    msg = str(err.value)
    assert "unit.pth" in msg and str(tmp_path / "w" / "unit.pth") in msg and str(tmp_path / "c" / "unit.pth") in msg
    assert "WEIGHTS_DIR" in msg and "make weights" in msg
    assert "unit.pth" in err.value.short_reason


def test_download_verifies_sha256_and_caches(tmp_path, fake_spec, http_server, monkeypatch):
    spec, payload = fake_spec
    base, files, hits = http_server
    files["/unit.pth"] = payload
    monkeypatch.setitem(weights.WEIGHTS, spec.name, replace(spec, url=f"{base}/unit.pth"))
    cache = tmp_path / "cache"
    path = weights.resolve(spec.name, weights_dir=tmp_path / "none", cache_dir=cache, allow_download=True)
    assert path == cache / "unit.pth" and path.read_bytes() == payload
    weights.resolve(spec.name, weights_dir=tmp_path / "none", cache_dir=cache, allow_download=True)
    assert hits == ["/unit.pth"]  # the second call used the cache


def test_download_with_wrong_sha_is_rejected_and_not_kept(tmp_path, fake_spec, http_server, monkeypatch):
    spec, _ = fake_spec
    base, files, _ = http_server
    files["/unit.pth"] = b"tampered"
    monkeypatch.setitem(weights.WEIGHTS, spec.name, replace(spec, url=f"{base}/unit.pth"))
    cache = tmp_path / "cache"
    with pytest.raises(WeightsNotFoundError, match="sha256 mismatch"):
        weights.resolve(spec.name, weights_dir=tmp_path / "none", cache_dir=cache, allow_download=True)
    assert list(Path(cache).iterdir()) == []  # no partial or bad file left behind


def test_unreachable_url_gives_the_clear_error(tmp_path, fake_spec, monkeypatch):
    spec, _ = fake_spec
    monkeypatch.setitem(weights.WEIGHTS, spec.name, replace(spec, url="http://127.0.0.1:9/unit.pth"))
    with pytest.raises(WeightsNotFoundError, match=re.escape("Download from http://127.0.0.1:9/unit.pth failed")):
        weights.resolve(spec.name, weights_dir=tmp_path, cache_dir=tmp_path / "c", allow_download=True)
