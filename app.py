"""Modal deployment: ONE GPU class loads every detector once and runs the whole pipeline in-process.

    modal deploy app.py                  # the HTTP app (web.server, as `make serve`) on a GPU class
    modal run app.py --video clip.mp4    # ad-hoc analysis of a local file or an http(s) URL: prints the report
    modal run app.py::fetch_weights      # fill the weights Volume ahead of the first start (optional)

Secrets: a Modal secret named ``deepfake-detector`` with API_KEYS, SUPABASE_URL, SUPABASE_SERVICE_KEY and
CALLBACK_SECRET (see pipeline/settings.py, section "service"). Results go to Supabase's
``detection_history`` (or DATABASE_URL=postgresql://...). Containers do not share a SQLite file, so
without one of those only ad-hoc ``modal run`` calls work (each writes its own throwaway SQLite row).

README.md "Deploy" has the steps. The image ships the runtime packages listed in RUNTIME_PACKAGES (``ships`` and
``image_files`` below are the one definition; tests/test_image_files.py boots that file set offline).

The weights live in a Volume mounted at /weights (WEIGHTS_CACHE / HF_HOME point there). They are fetched
by ``python -m pipeline weights`` logic once, at the first container start (or by ``fetch_weights``),
never inside a request. Uploaded and downloaded media are persisted on the uploads Volume before the API
answers 202, and ``Detector.analyze`` is spawned per job.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path

import modal

APP_NAME = "deepfake-detector"
ROOT = Path(__file__).resolve().parent
WEIGHTS_PATH = "/weights"
UPLOADS_PATH = "/uploads"
WEIGHTS_MARKER = f"{WEIGHTS_PATH}/.complete"

# What the image ships, derived here and nowhere else (tests/test_image_files.py rebuilds it offline and runs
# it): every runtime package, each with its data (calibration.json, bundled checkpoints, web/static), minus
# caches and the React component's sources and node_modules. training/ and tests/ never ship.
RUNTIME_PACKAGES = ("models", "pipeline", "db", "service", "whatsapp", "web")
NOT_SHIPPED_DIRS = ("__pycache__", "node_modules", ".pytest_cache")
NOT_SHIPPED_PREFIXES = ("web/react/",)


def ships(rel: str) -> bool:
    """Whether the repository file at ``rel`` (posix, relative to the root) is part of the image."""
    parts = rel.split("/")
    return (parts[0] in RUNTIME_PACKAGES and not any(p in NOT_SHIPPED_DIRS for p in parts)
            and not rel.endswith((".pyc", ".pyo")) and not rel.startswith(NOT_SHIPPED_PREFIXES))


def image_files(root: Path = ROOT, packages: tuple[str, ...] = RUNTIME_PACKAGES) -> list[str]:
    """The shipped files (relative posix paths) of ``packages`` under ``root``, sorted."""
    out = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and ships(rel):
                out.append(rel)
    return out


def _add_runtime_packages(img: modal.Image) -> modal.Image:
    for pkg in RUNTIME_PACKAGES:
        img = img.add_local_dir(str(ROOT / pkg), f"/root/{pkg}", ignore=lambda p, pkg=pkg: not ships(f"{pkg}/{p}"))
    return img


app = modal.App(APP_NAME)
weights_volume = modal.Volume.from_name(f"{APP_NAME}-weights", create_if_missing=True)
uploads_volume = modal.Volume.from_name(f"{APP_NAME}-uploads", create_if_missing=True)
secrets = [modal.Secret.from_name(APP_NAME)]

image = _add_runtime_packages(
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("ffmpeg", "libgl1", "libglib2.0-0")
    .pip_install_from_requirements(str(ROOT / "requirements.txt"))
    .pip_install_from_requirements(str(ROOT / "requirements-nodeps.txt"), extra_options="--no-deps")
    .env({
        "WEIGHTS_CACHE": f"{WEIGHTS_PATH}/cache",
        "HF_HOME": f"{WEIGHTS_PATH}/hf",
        "UPLOADS_DIR": UPLOADS_PATH,
        "DEVICE": "cuda",
    })
    .add_local_dir(str(ROOT / "supabase"), "/root/supabase")
)

with image.imports():
    import db
    from pipeline.settings import get_settings
    from service.jobs import JobService, PipelineHolder, SpawnDispatcher, status_payload
    from web.server import create_app

logger = logging.getLogger("app")


def _ensure_weights() -> None:
    """Download every checkpoint into the weights Volume once (the `python -m pipeline weights` logic)."""
    if Path(WEIGHTS_MARKER).exists():
        return
    from pipeline.cli import main as cli_main

    code = cli_main(["weights"])
    if code == 0:
        Path(WEIGHTS_MARKER).write_text("ok\n")
    else:
        logger.error("some weights could not be fetched; the detectors that need them are unavailable")
    weights_volume.commit()


def _spawn(task_id: str | None) -> None:
    """Run one job in a GPU container. The uploads Volume is committed first so it sees the bytes."""
    if not modal.is_local():
        try:
            uploads_volume.commit()
        except Exception as exc:  # spawn anyway: the job may still find its file (same container)
            logger.warning("uploads volume commit failed: %s", exc)
    Detector().analyze.spawn(task_id=task_id)


@app.function(image=image, volumes={WEIGHTS_PATH: weights_volume}, secrets=secrets, timeout=3600)
def fetch_weights() -> None:
    _ensure_weights()


@app.cls(
    gpu="A10G",
    image=image,
    volumes={WEIGHTS_PATH: weights_volume, UPLOADS_PATH: uploads_volume},
    secrets=secrets,
    timeout=900,
    scaledown_window=300,
)
@modal.concurrent(max_inputs=8)  # web requests stay responsive; pipeline runs are serialised by a lock
class Detector:
    @modal.enter()
    def load(self) -> None:
        self.settings = get_settings()
        if not modal.is_local():
            _ensure_weights()
        import pipeline

        self.pipeline = pipeline.build(self.settings)
        self.repo = db.connect(self.settings)
        if self.repo.backend == "sqlite" and not modal.is_local():
            logger.warning("no SUPABASE_URL/SUPABASE_SERVICE_KEY or postgresql DATABASE_URL: the API's queue "
                           "needs a shared database; SQLite here is private to this container")
        self.service = JobService(self.settings, self.repo, PipelineHolder(self.pipeline), inline_callbacks=True)
        self.run_lock = threading.Lock()
        self.enter_count = getattr(self, "enter_count", 0) + 1
        logger.info("detector ready (%s, database %s)", self.settings.device, self.repo.backend)

    @modal.method()
    def analyze(
        self,
        task_id: str | None = None,
        video_url: str | None = None,
        video_bytes: bytes | None = None,
        source_name: str | None = None,
    ) -> dict:
        """Run the whole pipeline for one job in this container and write its row.

        * ``task_id``: a job the API queued (its bytes are on the uploads Volume); None: the oldest pending job;
        * ``video_url`` / ``video_bytes``: an ad-hoc video (``modal run``): a row is created and analysed now.
        Returns the status JSON (``report`` is ``Report.to_dict()``)."""
        if video_bytes is not None or video_url is not None:
            if video_bytes is not None:
                media = self.service.store_stream(io.BytesIO(video_bytes), source_name)
            else:
                media = self.service.store_url(video_url)
            # like `make scan`: no probe refusal (the pipeline reports bad media itself), no cache
            row, _ = self.service.submit(media, None, probe=False, use_cache=False)
            task_id = row.task_id
        elif task_id is not None and not modal.is_local():
            try:
                uploads_volume.reload()  # see the bytes the web container committed
            except Exception as exc:  # e.g. files open in this container: its own view is current anyway
                logger.warning("uploads volume reload failed: %s", exc)
        with self.run_lock:
            row = self.service.process_next(task_id)
        if not modal.is_local():
            try:
                uploads_volume.commit()  # the removed upload
            except Exception as exc:
                logger.warning("uploads volume commit failed: %s", exc)
        if row is None:
            row = self.repo.get(task_id) if task_id else None
            if row is None:
                return {"task_id": task_id, "status": "idle", "report": None}
        return status_payload(row)

    @modal.asgi_app()
    def web(self):
        """The HTTP app (``web.server.create_app``: API, WhatsApp webhook, result pages) with this container's
        pipeline; jobs are spawned."""
        return create_app(self.settings, pipeline=self.pipeline, repo=self.repo, spawn=_spawn)


@app.function(image=image, volumes={UPLOADS_PATH: uploads_volume}, secrets=secrets, schedule=modal.Period(minutes=5))
def sweep() -> int:
    """Requeue jobs whose container died and spawn a drain call per pending job. Returns how many."""
    settings = get_settings()
    service = JobService(settings, db.connect(settings), PipelineHolder(None))
    return SpawnDispatcher(service, _spawn).drain()


@app.local_entrypoint()
def main(video: str) -> None:
    """`modal run app.py --video path-or-url`: analyse one video on Modal and print the report JSON."""
    if video.startswith(("http://", "https://")):
        result = Detector().analyze.remote(video_url=video)
    else:
        path = Path(video)
        result = Detector().analyze.remote(video_bytes=path.read_bytes(), source_name=path.name)
    print(json.dumps(result.get("report") or result, indent=2))
