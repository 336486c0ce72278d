"""The Modal image's file set, rebuilt offline from app.py's own definition and run with nothing else on the path.

The tests themselves run with the whole repository importable, so a package missing from the image (the
original failure: ``service.api`` imported ``web``, which the image did not ship) cannot show up there. Here
the shipped files are copied into an empty folder and a subprocess that sees only them imports ``app``,
builds the FastAPI app, answers ``/health`` and runs a short clip through ``Detector().analyze.local``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import DEV_DATA, REPO_ROOT, SHARED_WEIGHTS

CLIP = DEV_DATA / "A_real_av" / "grid_lipnet" / "evaluation__samples__GRID__bbaf2n.mpg"  # 3 s, one face, speech

SCRIPT = textwrap.dedent('''
    import json, os, sys, warnings
    root = os.getcwd()
    # only the image's files: the repository (and its tests) must not be importable from here
    assert not any(os.path.abspath(p or ".") == REPO for p in sys.path), sys.path
    warnings.filterwarnings("ignore")
    import app                                    # the Modal definition, as `modal deploy` imports it
    # what app.py imports under `with image.imports()`: Modal only raises those errors inside the container,
    # so they are imported plainly here, as the container does
    from web.server import create_app
    import db, pipeline.settings, service.jobs
    from fastapi.testclient import TestClient
    from pipeline.settings import get_settings
    with TestClient(create_app(get_settings(), pipeline=None)) as client:
        health = client.get("/health")
        assert health.status_code == 200, health.text
    out = app.Detector().analyze.local(video_bytes=open(CLIP, "rb").read(), source_name="clip.mpg")
    shipped_training = any(m.startswith("training") for m in sys.modules)
    print(json.dumps({"health": health.json()["status"], "status": out["status"],
                      "verdict": out["report"]["verdict"] if out["report"] else None,
                      "detectors": {k: v["status"] for k, v in out["report"]["detector_scores"]["detectors"].items()},
                      "training_imported": shipped_training}))
''')


def _app_module():
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("app")


def _materialise(tmp: Path, files: list[str]) -> Path:
    root = tmp / "image_root"
    for rel in [*files, "app.py", "requirements.txt", "requirements-nodeps.txt"]:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dst)
    shutil.copytree(REPO_ROOT / "supabase", root / "supabase")
    return root


def _run(root: Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_CURRENT_TEST")}
    env.update({"PYTHONPATH": str(root), "WEIGHTS_DIR": str(SHARED_WEIGHTS), "ALLOW_DOWNLOAD": "0", "DEVICE": "cpu",
                "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3", "UPLOADS_DIR": str(tmp / "uploads"),
                "API_KEYS": "k", "WEB_UI": "1"})
    script = SCRIPT.replace("REPO", repr(str(REPO_ROOT))).replace("CLIP", repr(str(CLIP)))
    # -P: the working directory is not prepended either; only PYTHONPATH (the image root) is
    return subprocess.run([sys.executable, "-P", "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)


def test_image_file_set_is_the_runtime_only():
    app = _app_module()
    files = app.image_files()
    tops = {f.split("/")[0] for f in files}
    assert tops == set(app.RUNTIME_PACKAGES)
    assert "pipeline/calibration.json" in files and "web/static/index.html" in files
    assert any(f.startswith("models/checkpoints/") and f.endswith(".pt") for f in files)
    assert not any(f.startswith(("training/", "tests/", "web/react/")) or "__pycache__" in f for f in files)


@pytest.mark.slow
def test_image_boots_and_analyses_a_clip_with_only_its_files(tmp_path):
    app = _app_module()
    root = _materialise(tmp_path, app.image_files())
    r = _run(root, tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["health"] in ("ok", "loading") and out["status"] == "completed"
    assert out["verdict"] in ("AUTHENTIC", "SUSPICIOUS", "FAKE")
    assert out["detectors"]["visual"] == "ok" and out["detectors"]["audio"] == "ok"
    assert not out["training_imported"]  # the runtime never needs the training package


def test_a_runtime_package_missing_from_the_image_is_caught(tmp_path):
    """The same check fails when the image definition drops a package the runtime imports (here ``web``)."""
    app = _app_module()
    without_web = tuple(p for p in app.RUNTIME_PACKAGES if p != "web")
    root = _materialise(tmp_path, app.image_files(packages=without_web))
    r = _run(root, tmp_path)
    assert r.returncode != 0
    assert "No module named 'web'" in r.stderr
