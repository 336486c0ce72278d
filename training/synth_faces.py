"""Face recipes of the synthetic-data factory: label-certain face manipulations made from real footage.

    python -m training.synth --recipe face_blend --n 20 --split train

  face_swap    another real identity's face (one donor frame) warped onto every frame's landmarks by Delaunay
               triangles and Poisson-blended (``seamlessClone``): the same swapped identity all through the clip
  face_blend   self-blended faces (the SBI recipe, Shiohara & Yamasaki, CVPR 2022): the face is blended with a
               colour-, sharpness- and scale-jittered copy of itself through its landmark hull, with the same
               parameters over the whole clip. The blend boundary and the colour/frequency mismatch are the
               traces every face-swap pipeline leaves, without any generator's own fingerprint
  mouth_swap   the mouth region is re-rendered from other frames of the clip (a time shift), blurred by a down/up
               sampling and blended back, paired half of the time with another real clip's speech: a proxy for the
               blurry mouth and seam of Wav2Lip-family lip-sync
  gen_upsample every frame of the face goes through a small decoder with learned up-sampling (transposed
               convolution or nearest/bilinear + convolution) trained for a few seconds as an autoencoder on real
               face crops (the AutoGAN recipe, Zhang, Karaman & Chang, WIFS 2019): the up-sampling fingerprint that
               talking-head generators' decoders leave, on a real face

Landmarks are MediaPipe Face Mesh's 468 points (``mediapipe_face_landmark.tflite`` in ``WEIGHTS_DIR``, run with
LiteRT), seeded by RetinaFace on the first frame and then tracked from the previous frame's landmarks. Outputs are
H.264 (CRF 18) at 25 fps with the clip's soundtrack (or the donor speech), mask frames kept in the card.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline import media

logger = logging.getLogger(__name__)

MESH_FILE = "mediapipe_face_landmark.tflite"
MESH_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
FPS = 25.0
# MediaPipe Face Mesh topology: the outer lip contour
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)


class FaceMesh:
    """468 face landmarks (image pixels) for one face, given a box around it."""

    def __init__(self, path: str | os.PathLike | None = None):
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path) if path else Path(os.environ.get("WEIGHTS_DIR", "../shared/weights")) / MESH_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the face recipes need MediaPipe Face Mesh "
                                    f"(see ../shared/weights/WEIGHTS.md; set WEIGHTS_DIR)")
        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]["index"]
        outs = self.interpreter.get_output_details()
        self._pts = next(o["index"] for o in outs if o["shape"][-1] == 1404)
        self._flag = next(o["index"] for o in outs if o["shape"][-1] == 1)

    def __call__(self, frame: np.ndarray, box: np.ndarray, margin: float = 0.25) -> tuple[np.ndarray, float]:
        """(468, 2) landmarks in frame pixels and the face-presence probability, from the square crop around box."""
        x1, y1, x2, y2 = map(float, box[:4])
        side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        x0, y0 = cx - side / 2, cy - side / 2
        src = np.float32([[x0, y0], [x0 + side, y0], [x0, y0 + side]])
        dst = np.float32([[0, 0], [192, 0], [0, 192]])
        m = cv2.getAffineTransform(src, dst)
        crop = cv2.warpAffine(frame, m, (192, 192), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self.interpreter.set_tensor(self._in, (crop.astype(np.float32) / 255.0)[None])
        self.interpreter.invoke()
        pts = self.interpreter.get_tensor(self._pts).reshape(468, 3)[:, :2]
        flag = float(1 / (1 + np.exp(-self.interpreter.get_tensor(self._flag).ravel()[0])))
        scale = side / 192.0
        return np.c_[pts[:, 0] * scale + cx - side / 2, pts[:, 1] * scale + cy - side / 2].astype(np.float32), flag


def _box_of(points: np.ndarray) -> np.ndarray:
    return np.r_[points.min(0), points.max(0)]


def track_landmarks(frames: np.ndarray, first_box: np.ndarray, mesh: FaceMesh, min_presence: float = 0.5
                    ) -> np.ndarray | None:
    """(T, 468, 2) landmarks over the clip, each frame's crop placed by the previous frame's landmarks; ``None``
    when the face is lost (the clip is then not used: a label must never rest on a wrong mask)."""
    out, box = [], np.asarray(first_box, np.float32)
    for f in frames:
        pts, flag = mesh(f, box)
        if flag < min_presence:
            return None
        out.append(pts)
        box = _box_of(pts)
    # light temporal smoothing: jitter in the mask would itself be a (non-generator) artefact
    arr = np.stack(out)
    if len(arr) >= 3:
        arr[1:-1] = 0.25 * arr[:-2] + 0.5 * arr[1:-1] + 0.25 * arr[2:]
    return arr


def hull_mask(points: np.ndarray, shape: tuple[int, int], blur: int = 15, erode: int = 0) -> np.ndarray:
    """Soft (H, W) float32 mask of the convex hull of ``points``: 1 inside, fading over ``blur`` pixels."""
    m = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(points.astype(np.int32)), 255)
    if erode > 0:
        m = cv2.erode(m, np.ones((erode, erode), np.uint8))
    k = max(1, blur) | 1
    return cv2.GaussianBlur(m.astype(np.float32) / 255.0, (k, k), 0)


@dataclass(frozen=True)
class BlendParams:
    """SBI jitter, drawn once per clip."""

    hue: float  # degrees
    saturation: float  # multiplier
    brightness: float  # additive, 0-255
    contrast: float  # multiplier
    sharpen: float  # > 0 sharpen, < 0 blur
    scale: float  # source copy scaled about the face centre
    dx: float  # shift, fraction of face size
    dy: float
    blur: float  # mask softness, fraction of face size
    erode: float  # mask shrink, fraction of face size

    @classmethod
    def draw(cls, rng: np.random.Generator) -> BlendParams:
        return cls(float(rng.uniform(-8, 8)), float(rng.uniform(0.85, 1.15)), float(rng.uniform(-15, 15)),
                   float(rng.uniform(0.85, 1.15)), float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)),
                   float(rng.uniform(0.96, 1.04)), float(rng.uniform(-0.02, 0.02)), float(rng.uniform(-0.02, 0.02)),
                   float(rng.uniform(0.03, 0.12)), float(rng.uniform(0.0, 0.08)))


def _jitter(frame: np.ndarray, p: BlendParams) -> np.ndarray:
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + p.hue / 2) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * p.saturation, 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    out = (out - 128) * p.contrast + 128 + p.brightness
    # sharpen > 0: unsharp mask; < 0: a step towards the blurred copy
    out = out + p.sharpen * (out - cv2.GaussianBlur(out, (0, 0), 1.5))
    return np.clip(out, 0, 255).astype(np.uint8)


def self_blend(frame: np.ndarray, points: np.ndarray, p: BlendParams) -> tuple[np.ndarray, np.ndarray]:
    """One SBI frame: (blended frame, mask)."""
    x1, y1, x2, y2 = _box_of(points)
    size = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), 0.0, p.scale)
    m[:, 2] += (p.dx * size, p.dy * size)
    src = cv2.warpAffine(_jitter(frame, p), m, frame.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    mask = hull_mask(points, frame.shape[:2], blur=int(p.blur * size), erode=int(p.erode * size))
    out = mask[..., None] * src.astype(np.float32) + (1 - mask[..., None]) * frame.astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8), mask


def mouth_region(points: np.ndarray, shape: tuple[int, int], blur: int) -> np.ndarray:
    """Soft mask of the lower face around the lips (the region lip-sync generators re-render)."""
    lips = points[list(LIPS)]
    c = lips.mean(0)
    w = (lips[:, 0].max() - lips[:, 0].min()) * 0.85
    h = (lips[:, 1].max() - lips[:, 1].min()) * 1.6 + 0.12 * w
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (int(c[0]), int(c[1] + 0.15 * h)), (int(max(w, 4)), int(max(h, 4))), 0, 0, 360, 255, -1)
    k = max(1, blur) | 1
    return cv2.GaussianBlur(m.astype(np.float32) / 255.0, (k, k), 0)


def mouth_swap_frames(frames: np.ndarray, landmarks: np.ndarray, shift: int, down: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's mouth region taken from the frame ``shift`` later (aligned on the lips' centre), blurred by a
    ``down``× down/up-sampling, and blended back: (frames, masks)."""
    n = len(frames)
    out, masks = np.empty_like(frames), np.zeros(frames.shape[:3], np.float32)
    for t in range(n):
        s = (t + shift) % n
        d = landmarks[t][list(LIPS)].mean(0) - landmarks[s][list(LIPS)].mean(0)
        m = np.float32([[1, 0, d[0]], [0, 1, d[1]]])
        src = cv2.warpAffine(frames[s], m, frames.shape[2:0:-1], borderMode=cv2.BORDER_REFLECT)
        h, w = src.shape[:2]
        small = cv2.resize(src, (max(8, int(w / down)), max(8, int(h / down))), interpolation=cv2.INTER_AREA)
        src = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        size = float(np.ptp(landmarks[t][:, 0]))
        mask = mouth_region(landmarks[t], frames.shape[1:3], blur=int(0.08 * size))
        masks[t] = mask
        out[t] = np.clip(mask[..., None] * src + (1 - mask[..., None]) * frames[t], 0, 255).astype(np.uint8)
    return out, masks


# ----------------------------------------------------------------------------------------------
# clips in and out
# ----------------------------------------------------------------------------------------------
@dataclass
class FaceClip:
    frames: np.ndarray  # (T, H, W, 3) RGB at 25 fps, from the first video frame
    landmarks: np.ndarray  # (T, 468, 2)


_FACE_DETECTOR = None
_MESH = None


def _detector():
    global _FACE_DETECTOR
    if _FACE_DETECTOR is None:
        from models.retinaface import RetinaFaceDetector

        _FACE_DETECTOR = RetinaFaceDetector.load()
    return _FACE_DETECTOR


def _mesh() -> FaceMesh:
    global _MESH
    if _MESH is None:
        _MESH = FaceMesh()
    return _MESH


def load_face_clip(path: str | Path, max_seconds: float = 8.0, max_side: int = 640) -> FaceClip | None:
    """The clip's frames (at most ``max_seconds``) and its largest face's landmarks; ``None`` without a face."""
    info = media.probe(path)
    n = int(min(info.video_duration_s, max_seconds) * FPS)
    windows = media.decode_dense(path, [0.0], n, fps=FPS, info=info, max_side=max_side)
    if not windows or len(windows[0].frames) < 10:
        return None
    frames = windows[0].frames
    dets = _detector().detect(frames[:1])[0]
    if not len(dets):
        return None
    box = dets[np.argmax((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]))]
    landmarks = track_landmarks(frames, box[:4], _mesh())
    return None if landmarks is None else FaceClip(frames, landmarks)


def write_video(frames: np.ndarray, audio: np.ndarray | None, out: Path, sr: int = 16000) -> Path:
    """H.264 CRF 18 at 25 fps, with a 16 kHz mono AAC soundtrack when ``audio`` is given."""
    from training.synth import fit_length, write_wav

    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(FPS), "-i", "-"]
        if audio is not None:
            wav = write_wav(Path(tmp) / "a.wav", fit_length(audio, int(len(frames) / FPS * sr)), sr)
            cmd += ["-i", str(wav), "-c:a", "aac", "-b:a", "96k", "-ar", str(sr), "-ac", "1"]
        cmd += ["-c:v", "libx264", "-crf", "18", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-shortest", str(out)]
        subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    return out


# ----------------------------------------------------------------------------------------------
# gen_upsample: a briefly trained decoder's up-sampling fingerprint
# ----------------------------------------------------------------------------------------------
UPSAMPLERS = ("transposed", "nearest", "bilinear")


def _autoencoder(kind: str, width: int = 32):
    import torch.nn as nn

    def up(cin, cout):
        if kind == "transposed":
            return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
        return nn.Sequential(nn.Upsample(scale_factor=2, mode=kind), nn.Conv2d(cin, cout, 3, padding=1))

    enc = nn.Sequential(nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 2 * width, 4, 2, 1),
                        nn.LeakyReLU(0.2), nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.LeakyReLU(0.2))
    dec = nn.Sequential(up(4 * width, 2 * width), nn.LeakyReLU(0.2), up(2 * width, width), nn.LeakyReLU(0.2),
                        up(width, 3), nn.Sigmoid())
    return nn.Sequential(enc, dec)


def _square_box(points: np.ndarray, margin: float = 0.15) -> tuple[int, int, int]:
    x1, y1, x2, y2 = _box_of(points)
    side = int(max(x2 - x1, y2 - y1) * (1 + 2 * margin))
    return int((x1 + x2) / 2 - side / 2), int((y1 + y2) / 2 - side / 2), max(side, 16)


def _crop(frame: np.ndarray, x: int, y: int, side: int, size: int) -> np.ndarray:
    m = np.float32([[size / side, 0, -x * size / side], [0, size / side, -y * size / side]])
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


_DECODERS: dict[str, object] = {}  # kind -> autoencoder, trained on the first clip and adapted on each next one


def regenerate_faces(clip: FaceClip, kind: str, rng: np.random.Generator, first_steps: int = 500,
                     steps: int = 60, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's face replaced by its reconstruction through a decoder of ``kind``, trained as an autoencoder
    on real face crops (``first_steps`` the first time in a process, then ``steps`` more on this clip's own):
    (frames, masks). A decoder that reconstructs well keeps the face and leaves mainly its up-sampling traces."""
    import torch

    torch.manual_seed(int(rng.integers(1 << 31)))
    boxes = [_square_box(p) for p in clip.landmarks]
    crops = np.stack([_crop(f, *b, size) for f, b in zip(clip.frames, boxes, strict=True)])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    model = _DECODERS.get(kind)
    n_steps = steps
    if model is None:
        model = _DECODERS[kind] = _autoencoder(kind)
        n_steps = first_steps
    opt = torch.optim.Adam(model.parameters(), lr=2e-3 if n_steps == first_steps else 5e-4)
    for _ in range(n_steps):
        idx = torch.from_numpy(rng.integers(0, len(x), min(16, len(x))))
        loss = torch.nn.functional.l1_loss(model(x[idx]), x[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.inference_mode():
        rec = torch.cat([model(x[i:i + 32]) for i in range(0, len(x), 32)])
    rec = (rec.permute(0, 2, 3, 1).numpy() * 255).clip(0, 255).astype(np.uint8)
    out, masks = np.empty_like(clip.frames), np.zeros(clip.frames.shape[:3], np.float32)
    h, w = clip.frames.shape[1:3]
    for t, ((bx, by, side), r) in enumerate(zip(boxes, rec, strict=True)):
        m = np.float32([[side / size, 0, bx], [0, side / size, by]])
        back = cv2.warpAffine(r, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        size_px = float(np.ptp(clip.landmarks[t][:, 0]))
        mask = hull_mask(clip.landmarks[t], (h, w), blur=int(0.06 * size_px), erode=int(0.04 * size_px))
        masks[t] = mask
        out[t] = np.clip(mask[..., None] * back + (1 - mask[..., None]) * clip.frames[t], 0, 255).astype(np.uint8)
    return out, masks


# ----------------------------------------------------------------------------------------------
# face_swap: another identity's face warped onto the landmarks, Poisson-blended
# ----------------------------------------------------------------------------------------------
# every 6th mesh point plus the face oval: enough triangles to follow the face, few enough for a CPU
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
SWAP_POINTS = tuple(sorted(set(range(0, 468, 6)) | set(FACE_OVAL) | set(LIPS)))


def _triangles(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (index triples) of ``points``, computed once on the donor face."""
    x1, y1 = points.min(0) - 2
    x2, y2 = points.max(0) + 2
    sub = cv2.Subdiv2D((int(x1), int(y1), int(x2 - x1) + 2, int(y2 - y1) + 2))
    for x, y in points:
        sub.insert((float(x), float(y)))
    out = []
    for t in sub.getTriangleList().reshape(-1, 3, 2):
        idx = [int(np.argmin(((points - v) ** 2).sum(1))) for v in t]
        if len(set(idx)) == 3:
            out.append(idx)
    return np.array(out, np.int32)


def warp_face(donor: np.ndarray, donor_pts: np.ndarray, target_shape: tuple[int, int], target_pts: np.ndarray,
              triangles: np.ndarray) -> np.ndarray:
    """The donor face piecewise-affinely warped onto the target landmarks (zeros outside the triangles)."""
    out = np.zeros((*target_shape, 3), np.float32)
    for tri in triangles:
        src, dst = donor_pts[tri].astype(np.float32), target_pts[tri].astype(np.float32)
        x, y, w, h = cv2.boundingRect(dst)
        if w <= 0 or h <= 0:
            continue
        m = cv2.getAffineTransform(src, dst - np.float32([x, y]))
        patch = cv2.warpAffine(donor, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        mask = np.zeros((h, w), np.float32)
        cv2.fillConvexPoly(mask, np.int32(dst - [x, y]), 1.0, lineType=cv2.LINE_AA)
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + h, target_shape[0]), min(x + w, target_shape[1])
        if y1 <= y0 or x1 <= x0:
            continue
        ps, ms = patch[y0 - y:y1 - y, x0 - x:x1 - x], mask[y0 - y:y1 - y, x0 - x:x1 - x, None]
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - ms) + ps * ms
    return out


def swap_faces(target: FaceClip, donor_frame: np.ndarray, donor_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every target frame's face replaced by one donor face (the same identity all through), warped to the frame's
    landmarks and Poisson-blended (OpenCV ``seamlessClone``): (frames, masks)."""
    idx = list(SWAP_POINTS)
    tris = _triangles(donor_pts[idx])
    out, masks = np.empty_like(target.frames), np.zeros(target.frames.shape[:3], np.float32)
    for t, (frame, pts) in enumerate(zip(target.frames, target.landmarks, strict=True)):
        warped = warp_face(donor_frame.astype(np.float32), donor_pts[idx], frame.shape[:2], pts[idx], tris)
        hull = np.zeros(frame.shape[:2], np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(pts[list(FACE_OVAL)].astype(np.int32)), 255)
        hull = cv2.erode(hull, np.ones((5, 5), np.uint8))
        x, y, w, h = cv2.boundingRect(cv2.findNonZero(hull))
        centre = (int(x + w / 2), int(y + h / 2))
        masks[t] = hull.astype(np.float32) / 255.0  # before cloning: seamlessClone may write into its mask
        cloned = cv2.seamlessClone(np.clip(warped, 0, 255).astype(np.uint8), frame, hull.copy(), centre,
                                   cv2.NORMAL_CLONE)
        # the solver also touches pixels of the mask's bounding box: only the face oval may change
        out[t] = np.where(hull[..., None] > 0, cloned, frame)
    return out, masks


# ----------------------------------------------------------------------------------------------
# recipes (the synth.RECIPES signature: clip, rng, out path, ... -> SynthItem)
# ----------------------------------------------------------------------------------------------
class NoFaceError(ValueError):
    """The clip has no face the landmarks can follow: it cannot carry a face recipe's label."""


def _face_clip(clip) -> FaceClip:
    fc = load_face_clip(clip.path)
    if fc is None:
        raise NoFaceError(f"{clip.item.path}: no face to follow over the clip")
    return fc


def mask_coverage(masks: np.ndarray, landmarks: np.ndarray, subset: tuple[int, ...] | None = None) -> float:
    """Mean share of the landmark hull's pixels (of ``subset`` of them) the mask covers at >= 0.5 (the
    label-defining property)."""
    cov = []
    for m, pts in zip(masks, landmarks, strict=True):
        hull = hull_mask(pts if subset is None else pts[list(subset)], m.shape, blur=1) > 0.5
        cov.append(float((m[hull] >= 0.5).mean()) if hull.any() else 0.0)
    return float(np.mean(cov))


def face_blend(clip, rng: np.random.Generator, out: Path):
    from training.synth import SynthItem

    fc = _face_clip(clip)
    p = BlendParams.draw(rng)
    pairs = [self_blend(f, pts, p) for f, pts in zip(fc.frames, fc.landmarks, strict=True)]
    frames = np.stack([a for a, _ in pairs])
    masks = np.stack([m for _, m in pairs])
    write_video(frames, clip.audio, out)
    cover = mask_coverage(masks, fc.landmarks)
    changed = float(np.abs(frames.astype(np.int16) - fc.frames).mean())
    return SynthItem(str(out), "face_blend", "fake", clip.item.path,
                     {k: round(v, 4) for k, v in p.__dict__.items()} | {"frames": len(frames)},
                     f"face self-blended through its landmark hull (mask covers {cover:.0%} of it; "
                     f"mean pixel change {changed:.1f})")


def mouth_swap(clip, rng: np.random.Generator, out: Path, other=None):
    from training.synth import SynthItem, fit_length

    fc = _face_clip(clip)
    shift = int(rng.integers(int(0.4 * FPS), max(int(0.4 * FPS) + 1, len(fc.frames) - int(0.4 * FPS))))
    down = float(rng.uniform(1.5, 3.5))
    frames, masks = mouth_swap_frames(fc.frames, fc.landmarks, shift, down)
    cover = mask_coverage(masks, fc.landmarks, LIPS)
    dub = other is not None and bool(rng.random() < 0.5)
    audio = fit_length(other.audio, len(clip.audio)) if dub else clip.audio
    write_video(frames, audio, out)
    return SynthItem(str(out), "mouth_swap", "fake", clip.item.path,
                     {"shift_frames": shift, "downsample": round(down, 3), "dubbed_from": other.item.path if dub
                      else None},
                     f"mouth region (covering {cover:.0%} of the lips) taken from {shift / FPS:.2f} s later and "
                     f"blurred {down:.1f}x"
                     + (" with another clip's speech" if dub else ""))


def gen_upsample(clip, rng: np.random.Generator, out: Path, kind: str | None = None):
    from training.synth import SynthItem

    fc = _face_clip(clip)
    kind = kind or str(rng.choice(UPSAMPLERS))
    frames, masks = regenerate_faces(fc, kind, rng)
    write_video(frames, clip.audio, out)
    cover = mask_coverage(masks, fc.landmarks)
    return SynthItem(str(out), "gen_upsample", "fake", clip.item.path, {"upsampler": kind},
                     f"face (mask covers {cover:.0%} of it) re-rendered by a {kind} up-sampling decoder")


def contact_sheet(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path, cell: int = 200) -> Path:
    """One PNG: per row a label, the real frame's face, the same frame after the recipe, and |difference| × 4."""
    from PIL import Image, ImageDraw

    label_h = 18
    sheet = Image.new("RGB", (3 * cell, len(rows) * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, real, fake, landmarks) in enumerate(rows):
        x, y, side = _square_box(landmarks, margin=0.3)
        a, b = _crop(real, x, y, side, cell), _crop(fake, x, y, side, cell)
        diff = np.clip(np.abs(a.astype(np.int16) - b.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
        top = i * (cell + label_h)
        draw.text((4, top + 3), label, fill="black")
        for j, img in enumerate((a, b, diff)):
            sheet.paste(Image.fromarray(img), (j * cell, top + label_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def face_swap(clip, rng: np.random.Generator, out: Path, other=None):
    from training.synth import SynthItem

    if other is None:
        raise ValueError("face_swap needs another real clip (another identity) to take the face from")
    fc = _face_clip(clip)
    donor = load_face_clip(other.path, max_seconds=2.0)
    if donor is None:
        raise NoFaceError(f"{other.item.path}: no donor face to follow")
    k = int(rng.integers(len(donor.frames)))
    frames, masks = swap_faces(fc, donor.frames[k], donor.landmarks[k])
    write_video(frames, clip.audio, out)
    cover = mask_coverage(masks, fc.landmarks, FACE_OVAL)
    return SynthItem(str(out), "face_swap", "fake", clip.item.path, {"donor": other.item.path, "donor_frame": k},
                     f"face of {other.item.path} (frame {k}) warped onto every frame and Poisson-blended (mask "
                     f"covers {cover:.0%} of the face oval)")
