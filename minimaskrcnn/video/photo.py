"""A harder synthetic VOS split that looks like the real task: "photo" clips.

The "shapes" clips (``video.synthetic``) are 128 × 128 with flat textures — the methods were tuned
on them. These clips are built like DAVIS sequences instead:

    frames      854 × 480 (every third clip: DAVIS's 480p) or 432 × 240, RGB, JPEG-compressed
                (quality 75–92, decoded again: the block artefacts are in the frames)
    background  a slowly panning crop of a real photograph — the sample images that scikit-image and
                matplotlib ship (astronaut, coffee, chelsea, rocket, motorcycle, Hubble deep field,
                retina, IHC, Grace Hopper, ...; nothing is downloaded)
    objects     1–3 targets and 0–2 other objects, outlines as in ``synthetic`` (circle, square,
                triangle, star, blob, elastically deforming) textured with crops of other photos,
                moving, rotating and growing or shrinking; targets may pass behind or in front of
                each other and of the other objects
    events      another object enters from outside the frame and leaves again ("enter_leave"); a
                target leaves the frame and comes back ("out_of_view"); lighting changes slowly over
                the clip — a global gain and a gradient across the frame ("lighting")

Attributes of a clip (``PhotoClip.attributes``) are read off what happened: "occlusion" when a
target's visible area drops below half of its full outline in some frame, "scale_variation" when
its visible-or-not outline area changes by more than 1.8×, "multi_object" with two or more targets,
plus the events above that were drawn, and "pan" / "lighting" (every clip has both, so they carry
no information about difficulty; they are listed for completeness).

Seeds. ``TUNE_SEED`` is the only seed any method's settings were chosen on; ``REPORT_SEED`` gives the
clips the benchmark reports; ``UNSEEN_SEEDS`` were never run before the numbers of the final report.
Everything is a deterministic function of (seed, index); ground truth is the visible mask of every
target as an ID map (0 = background, 1..K). Target k is fully inside the frame and unoccluded in frame 0.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np

from minimaskrcnn.video.synthetic import SHAPES, _bilinear, _new_layer, _paint, _smooth_path, _smoothstep

__all__ = ["PHOTO_ATTRIBUTES", "TUNE_SEED", "REPORT_SEED", "UNSEEN_SEEDS", "PhotoClip", "photo_names",
           "load_photo", "make_photo_clip"]

PHOTO_ATTRIBUTES = ("occlusion", "out_of_view", "enter_leave", "scale_variation", "multi_object")
TUNE_SEED = 1000
REPORT_SEED = 2000
UNSEEN_SEEDS = (3000, 3001)

# (package, file) of the photographs: RGB sample images shipped inside the installed packages.
_PHOTOS = (("skimage", "astronaut.png"), ("skimage", "coffee.png"), ("skimage", "chelsea.png"),
           ("skimage", "rocket.jpg"), ("skimage", "motorcycle_left.png"),
           ("skimage", "hubble_deep_field.jpg"),
           ("skimage", "retina.jpg"), ("skimage", "ihc.png"),
           ("matplotlib", "grace_hopper.jpg"))


@dataclass
class PhotoClip:
    """One photo clip: as ``synthetic.Clip`` (frames (T, H, W, 3) uint8 after JPEG, ids (T, H, W) uint8,
    attributes, num_objects, visible_area / amodal_area (K, T)) plus the background photo's name."""

    name: str
    frames: np.ndarray
    ids: np.ndarray
    attributes: tuple
    num_objects: int
    visible_area: np.ndarray = field(repr=False)
    amodal_area: np.ndarray = field(repr=False)
    background: str = ""


def _photo_path(package: str, name: str) -> str | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = spec.submodule_search_locations[0]
    path = os.path.join(base, "data", name) if package == "skimage" else \
        os.path.join(base, "mpl-data", "sample_data", name)
    return path if os.path.isfile(path) else None


def photo_names() -> list[str]:
    """The photographs available in this installation (scikit-image's need the [test] extra)."""
    names = [n for p, n in _PHOTOS if _photo_path(p, n)]
    if len(names) < 3:
        raise ValueError("the photo clips need the sample photographs of scikit-image (pip install "
                           "scikit-image, part of the [test] extra); found only " + ", ".join(names))
    return names


def load_photo(name: str) -> np.ndarray:
    """(H, W, 3) float32 RGB of one sample photograph."""
    from PIL import Image

    package = next(p for p, n in _PHOTOS if n == name)
    with Image.open(_photo_path(package, name)) as img:
        return np.asarray(img.convert("RGB"), np.float32)


def _resized(photo: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((w, h), Image.BICUBIC), np.float32)


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"))


def _texture_crop(rng, photo: np.ndarray, size: int = 96) -> np.ndarray:
    """A (size, size, 3) float32 crop of a photograph, contrast stretched a little, as an object texture."""
    ph, pw = photo.shape[:2]
    c = int(min(ph, pw) * rng.uniform(0.25, 0.5))
    y, x = int(rng.integers(0, ph - c + 1)), int(rng.integers(0, pw - c + 1))
    crop = _resized(photo[y:y + c, x:x + c], size, size)
    mean = crop.mean((0, 1))
    return np.clip(mean + 1.3 * (crop - mean) + rng.uniform(-30, 30, 3), 0, 255).astype(np.float32)


def make_photo_clip(index: int, seed: int = REPORT_SEED, num_frames: int | None = None,
                    size: tuple[int, int] | None = None) -> PhotoClip:
    """Photo clip ``index`` of ``seed`` (module docstring). num_frames: None draws 24–40, else ≥ 8;
    size (H, W): None is 480 × 854 for every third clip (index % 3 == 0), else 240 × 432."""
    if int(index) < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = np.random.default_rng([int(seed), int(index), 7])
    t_len = int(rng.integers(24, 41)) if num_frames is None else int(num_frames)
    if t_len < 8:
        raise ValueError(f"num_frames must be >= 8, got {t_len}")
    h, w = size if size is not None else ((480, 854) if int(index) % 3 == 0 else (240, 432))
    if h < 64 or w < 64:
        raise ValueError(f"size must be at least 64 × 64, got {size}")
    px = h / 240.0  # distances below are given for 240-pixel-high frames
    names = photo_names()
    order = rng.permutation(len(names))
    bg_name = names[order[0]]

    # 1. Background: the photo scaled to cover the frame with a 25 % margin; the crop pans across it.
    photo = load_photo(bg_name)
    scale = 1.25 * max(h / photo.shape[0], w / photo.shape[1])
    big = _resized(photo, int(np.ceil(photo.shape[0] * scale)), int(np.ceil(photo.shape[1] * scale)))
    margin = np.array([big.shape[1] - w, big.shape[0] - h], float) - 1
    start = rng.uniform(0.1, 0.9, 2) * margin
    pan_dir = rng.normal(size=2)
    pan_dir /= np.linalg.norm(pan_dir)
    pan_speed = rng.uniform(0.3, 1.2) * px  # pixels per frame
    ts = np.arange(t_len)
    offset = start[None] + pan_dir[None] * pan_speed * ts[:, None] + 3 * px * np.sin(0.15 * ts)[:, None]
    offset = np.clip(offset, 0, margin)

    # 2. Objects: K targets, each starting fully inside the frame in its own horizontal band.
    k = int(rng.integers(1, 4))
    events = set()
    layers = []
    textures = [load_photo(names[i]) for i in order[1:4]]
    for j in range(k):
        radius = rng.uniform(22, 38) * px / (1 + 0.25 * (k - 1))
        cx0 = w * (j + 0.5) / k
        cy0 = rng.uniform(0.35, 0.65) * h
        speed = rng.uniform(0.8, 3.0) * px
        centre = _smooth_path(rng, t_len, (cx0, cy0), (0.35 * w / k, 0.2 * h), speed)
        centre = centre + (np.array([cx0, cy0]) - centre[0])  # frame 0 at the band's centre
        layer = _new_layer(rng, j + 1, t_len, radius, centre, shape=SHAPES[int(rng.integers(len(SHAPES)))],
                           texture=_texture_crop(rng, textures[j % len(textures)]))
        if rng.random() < 0.5:  # grow or shrink over the clip
            layer.scale = layer.scale * (1 + (rng.choice([0.6, 1.8]) - 1) * _smoothstep(t_len, 0.2 * t_len,
                                                                                         0.8 * t_len))
        layers.append(layer)
    if rng.random() < 0.35:  # a target leaves the frame and comes back
        events.add("out_of_view")
        lay = layers[int(rng.integers(k))]
        side = 1 if lay.centre[0, 0] > w / 2 else -1
        out = (w / 2 + side * (w / 2 + 2.5 * lay.radius)) - lay.centre[:, 0]
        lay.centre[:, 0] += out * np.sin(np.pi * np.clip((ts - 0.3 * t_len) / (0.45 * t_len), 0, 1)) ** 2
    others = []
    for _ in range(int(rng.integers(0, 3))):  # other objects: each enters from one side and leaves
        events.add("enter_leave")
        radius = rng.uniform(26, 48) * px
        side = rng.choice([-1, 1])
        x = w / 2 - side * (w / 2 + 2.5 * radius) + side * (w + 5 * radius) * \
            _smoothstep(t_len, rng.uniform(0.05, 0.3) * t_len, rng.uniform(0.7, 1.0) * t_len)
        y = np.full(t_len, rng.uniform(0.25, 0.75) * h) + 10 * px * np.sin(0.1 * ts)
        others.append(_new_layer(rng, 0, t_len, radius, np.stack([x, y], 1),
                                 texture=_texture_crop(rng, textures[int(rng.integers(len(textures)))])))
    # Depth: the targets keep one order; each other object goes behind or in front of all of them.
    behind = [o for o in others if rng.random() < 0.4]
    front = [o for o in others if not any(o is b for b in behind)]
    target_order = list(rng.permutation(k))

    # 3. Lighting: a global gain and a left-to-right gradient that drift over the clip.
    gain = 1 + rng.uniform(-0.25, 0.25) * _smoothstep(t_len, 0, t_len - 1)
    tilt = rng.uniform(-0.2, 0.2) * _smoothstep(t_len, 0, t_len - 1)
    ramp = (np.arange(w) / max(w - 1, 1) - 0.5)[None, :, None]
    quality = int(rng.integers(75, 93))

    frames = np.zeros((t_len, h, w, 3), np.uint8)
    ids = np.zeros((t_len, h, w), np.uint8)
    amodal_area = np.zeros((k, t_len), np.int64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for t in range(t_len):
        frame = _bilinear(big, xx + offset[t, 0], yy + offset[t, 1], wrap=False).astype(np.float32)
        lab = np.zeros((h, w), np.uint8)
        # Objects move with the camera too: their positions are in background coordinates, minus the pan.
        for layer in behind + [layers[i] for i in target_order] + front:
            amodal = np.zeros((h, w), bool) if layer.obj_id > 0 else None
            _paint(frame, lab, amodal, _shifted(layer, t, offset[t] - offset[0]), t, h, w)
            if amodal is not None:
                amodal_area[layer.obj_id - 1, t] = int(amodal.sum())
        frame = frame * (gain[t] + tilt[t] * ramp)
        frames[t] = _jpeg(np.clip(np.rint(frame), 0, 255).astype(np.uint8), quality)
        ids[t] = lab
    visible = np.stack([(ids == j).sum((1, 2)) for j in range(1, k + 1)])
    if (visible[:, 0] == 0).any():  # cannot happen by construction; a clip without a target is no clip
        raise AssertionError(f"photo clip ({seed}, {index}) has a target absent from frame 0")
    attrs = set(events)
    with np.errstate(invalid="ignore", divide="ignore"):
        if ((visible < 0.5 * amodal_area) & (amodal_area > 0)).any():
            attrs.add("occlusion")
        areas = np.where(amodal_area > 0, amodal_area, np.nan)
        if (np.nanmax(areas, 1) > 1.8 * np.nanmin(areas, 1)).any():
            attrs.add("scale_variation")
    if k >= 2:
        attrs.add("multi_object")
    attributes = tuple(a for a in PHOTO_ATTRIBUTES if a in attrs)
    name = f"photo{int(seed)}_{int(index):03d}_{w}x{h}"
    return PhotoClip(name, frames, ids, attributes, k, visible, amodal_area, bg_name)


def _shifted(layer, t: int, shift):
    """The layer with its frame-t centre moved by −shift (the camera pan), other fields shared."""
    import copy

    out = copy.copy(layer)
    out.centre = layer.centre.copy()
    out.centre[t] = layer.centre[t] - shift
    return out
