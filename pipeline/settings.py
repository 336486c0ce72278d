"""All environment-driven configuration in one place (pydantic-settings).

Every field can be set from an environment variable of the same name in upper case
(``WEIGHTS_DIR=../shared/weights``, ``SAMPLE_FPS=4``) or from a ``.env`` file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # torch missing or broken CUDA: CPU still works
        return "cpu"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    # --- compute ---
    device: str = Field(default_factory=_default_device, description="torch device: cuda, cuda:1 or cpu")
    torch_threads: int = Field(0, description="CPU threads for torch; 0 keeps torch's default")

    # --- weights ---
    weights_dir: Path | None = Field(None, description="folder holding checkpoint files (tests/CI: ../shared/weights)")
    weights_cache: Path = Field(Path("~/.cache/deepfake-detector/weights").expanduser(), description="download cache")
    allow_download: bool = Field(True, description="download missing weights from their upstream URL")

    # --- media intake ---
    sample_fps: float = Field(2.0, gt=0, description="sparse frame sampling rate for face/spatial analysis")
    max_sampled_frames: int = Field(240, gt=0, description="cap on sparse frames; long videos are sampled more thinly")
    dense_fps: float = Field(25.0, gt=0, description="frame rate of dense windows (temporal and lip-sync stages)")
    max_duration_s: float = Field(600.0, gt=0, description="refuse media longer than this")
    max_dimension: int = Field(8192, gt=0, description="refuse frames wider or taller than this")
    max_decode_side: int = Field(1280, gt=0, description="longer side of decoded frames")
    max_file_bytes: int = Field(500 * 1024 * 1024, gt=0, description="refuse files larger than this")
    audio_sample_rate: int = 16000

    # --- faces ---
    face_detector: str = Field("retinaface_mnet025", description="retinaface_mnet025 or retinaface_resnet50")
    face_threshold: float = Field(0.8, ge=0, le=1, description="minimum RetinaFace score for a face")
    face_detect_side: int = Field(640, gt=0, description="frames are resized so the longer side is this for detection")
    face_min_size: int = Field(24, ge=0, description="ignore faces smaller than this many pixels (box side)")
    detect_batch_size: int = Field(4, gt=0, description="frames per RetinaFace forward (4 is fastest on CPU)")

    # --- detectors ---
    visual_detector: str = Field("auto", description="auto (B7 if its weights exist, else mesonet_detail), "
                                 "mesonet_detail, mesonet, efficientnet_b7")
    mesonet_variant: str = Field("mesoinception_df", description="MesoNet weights: registry name or a checkpoint path")
    visual_crop_margin: float = Field(0.05, ge=0, description="context around the aligned face for MesoNet crops")
    visual_aggregation: str | None = Field(
        None, description="per-track aggregation of frame scores: mean or confident (default: the detector's own)")
    audio_detector: str = Field("auto", description="auto (aasist_ft, else aasist), aasist, aasist_l, aasist_ft, "
                                "whisper_head (with CALIBRATION_FILE=pipeline/calibration_whisper.json), wav2vec2")
    wav2vec2_checkpoint: str | None = Field(None, description="local dir or hub id of a wav2vec2 deepfake classifier")
    videomae_checkpoint: str | None = Field(None, description="fine-tuned VideoMAE deepfake checkpoint (dir or hub id)")
    temporal_detector: str = Field("auto", description="auto (VideoMAE if configured, else lrasd_temporal), videomae, "
                                   "lrasd_temporal")
    dense_window_s: float = Field(8.0, gt=0, description="seconds of 25 fps frames analysed for temporal/lip-sync")
    max_dense_windows: int = Field(2, ge=1, description="dense windows per video (spread over the main track)")
    dense_detect_side: int = Field(320, gt=0, description="detection size for faces in dense windows")
    min_speech_s: float = Field(1.0, ge=0, description="less speech than this: audio detectors are not applicable")
    max_audio_windows: int = Field(40, gt=0, description="4 s audio windows scored per file (spread evenly)")
    audio_window_overlap: float = Field(
        0.5, ge=0, lt=1, description="overlap of the audio detector's windows; 0 scores ~half the windows (a 30 s "
        "clip: 7 instead of 13): fused LOSO means within 0.002, but more processed reals called FAKE (README, speed)")
    content_credentials: bool = Field(True, description="read the file's C2PA Content Credentials (c2pa-python)")
    explain: bool = Field(True, description="draw the evidence figures (face heatmap, sync curve, spectrogram, "
                          "timeline); evaluation turns them off")
    figures_dir: Path | None = Field(None, description="where the service stores each result's evidence figures "
                                     "(PNG files, not database rows); default: 'figures' beside UPLOADS_DIR")
    figures_bucket: str = Field("detection-figures", description="Supabase Storage bucket of the evidence figures "
                                "when the service writes to Supabase")
    calibration_file: Path | None = Field(None, description="fusion calibration JSON (default: the committed one)")
    fusion_checkpoint: Path | None = Field(None, description="learned attention-fusion checkpoint (optional)")

    # --- service --- (API, job queue, database, callbacks; used by service/, db/ and app.py)
    database_url: str = Field(
        "sqlite:///data/service/detections.sqlite3",
        description="sqlite:///path (embedded default) or postgresql://...; ignored when Supabase is configured",
    )
    supabase_url: str | None = Field(None, description="https://<project>.supabase.co: use the Supabase backend")
    supabase_service_key: str | None = Field(None, description="Supabase service-role key (server side only)")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="bearer API keys, comma separated; 'key:user-uuid' ties a key to a Supabase user (RLS reads)",
    )
    daily_limit_per_key: int = Field(50, ge=0, description="videos per API key per UTC day; 0 = unlimited")
    uploads_dir: Path = Field(Path("data/service/uploads"), description="media is persisted here before the 202")
    keep_uploads: bool = Field(False, description="keep media files after their job finished")
    workers: int = Field(1, ge=1, description="pipeline runs at the same time in the local worker pool")
    job_stale_after_s: float = Field(
        30.0, gt=0, description="processing jobs whose heartbeat is this old are requeued (their worker died)")
    job_heartbeat_s: float = Field(5.0, gt=0, description="how often a running job refreshes its heartbeat")
    job_max_attempts: int = Field(3, ge=1, description="a job requeued this many times fails with a reason")
    queue_poll_s: float = Field(2.0, gt=0, description="idle workers look for pending jobs this often")
    download_timeout_s: float = Field(30.0, gt=0, description="connect/read timeout of one video_url download step")
    download_total_timeout_s: float = Field(120.0, gt=0, description="wall-clock cap on a whole video_url download")
    download_max_redirects: int = Field(5, ge=0, description="redirect hops followed (each re-checked)")
    allow_private_urls: bool = Field(False, description="let video_url reach private/loopback hosts (NEVER in prod)")
    allow_private_callbacks: bool = Field(False, description="let callback_url reach private/loopback (tests, on-prem)")
    callback_secret: str | None = Field(None, description="HMAC-SHA256 secret that signs callbacks (X-Signature)")
    callback_max_attempts: int = Field(5, ge=1, description="callback deliveries tried before giving up")
    callback_backoff_s: float = Field(2.0, ge=0, description="first retry delay; doubles each attempt")
    callback_timeout_s: float = Field(10.0, gt=0, description="timeout of one callback POST")

    # --- whatsapp / web --- (whatsapp/: Cloud API webhook + Graph client; web/: the result pages at /)
    whatsapp_verify_token: str | None = Field(None, description="token Meta sends in the webhook GET verification")
    whatsapp_app_secret: str | None = Field(None, description="Meta app secret: checks X-Hub-Signature-256 of events")
    whatsapp_access_token: str | None = Field(None, description="Graph API token that fetches media and sends replies")
    whatsapp_phone_number_id: str | None = Field(None, description="Graph id of the business number replies come from")
    whatsapp_graph_url: str = Field(
        "https://graph.facebook.com/v20.0", description="Graph API base URL (tests point it at a loopback fake)"
    )
    whatsapp_callback_url: str | None = Field(
        None, description="public URL of POST /whatsapp/job-callback (default: derived from the webhook request)"
    )
    whatsapp_max_media_bytes: int = Field(100 * 1024 * 1024, gt=0, description="refuse WhatsApp media above this")
    whatsapp_daily_limit_per_user: int = Field(10, ge=0, description="analyses per WhatsApp number a UTC day; 0 = off")
    whatsapp_timeout_s: float = Field(30.0, gt=0, description="timeout of one Graph API request or media download step")
    web_ui: bool = Field(True, description="serve the result pages (history, detail) at /")
    web_admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="API keys (comma separated) whose web history lists all rows, not only theirs"
    )

    # Selectors are checked against the detector registry at start-up: a typo is an error, never a silent fallback.
    @field_validator("face_detector")
    @classmethod
    def _check_face(cls, v: str) -> str:
        from models.registry import FACES, parse_selector

        parse_selector(FACES, v.replace("retinaface_", "retinaface:", 1), allow_auto=False)
        return v

    @field_validator("visual_detector", "audio_detector", "temporal_detector")
    @classmethod
    def _check_selector(cls, v: str, info) -> str:
        from models.registry import parse_selector

        parse_selector(info.field_name.removesuffix("_detector"), v)
        return v

    @field_validator("mesonet_variant")
    @classmethod
    def _check_mesonet(cls, v: str) -> str:
        from models.registry import spec

        if v not in spec("mesonet").variants and not Path(v).suffix:
            raise ValueError(f"unknown MesoNet variant {v!r}; choose one of {', '.join(spec('mesonet').variants)} "
                             "or give a checkpoint path")
        return v

    @field_validator("visual_aggregation")
    @classmethod
    def _check_aggregation(cls, v: str | None) -> str | None:
        if v not in (None, "mean", "confident"):
            raise ValueError(f"unknown aggregation {v!r}; choose mean or confident")
        return v

    @model_validator(mode="after")
    def _stale_needs_missed_heartbeats(self):
        # a live job must miss several heartbeats in a row before it is taken for dead
        if self.job_stale_after_s < 3 * self.job_heartbeat_s:
            raise ValueError(f"JOB_STALE_AFTER_S ({self.job_stale_after_s}) must be at least 3 × JOB_HEARTBEAT_S "
                             f"({self.job_heartbeat_s})")
        return self

    @field_validator("api_keys", "web_admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, v):
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                import json

                return json.loads(v)
            return [k.strip() for k in v.split(",") if k.strip()]
        return v


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
