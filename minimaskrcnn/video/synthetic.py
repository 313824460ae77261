"""A seeded synthetic benchmark for semi-supervised video object segmentation.

No package ships a real video with masks, so the clips are generated — and made hard in the ways real
video is. Each clip shows textured objects (circle, square, triangle, star, blob outlines) moving with
translation, rotation, scale change and a smooth elastic deformation of their outline, over a textured
background that pans. The first target object ("primary") carries the clip's challenge:

    occlusion          a larger object passes in front and hides the target completely for a few
                       frames; the target re-appears afterwards
    fast_motion        the target moves up to 6–9 pixels per frame (at 128×128) instead of 0.5–1.5
    distractors        non-target copies of the target (same outline, size and texture) move nearby
    appearance_change  the target's texture fades into a differently coloured one
    scale_variation    the target grows or shrinks by a factor of 1.8–2.5 over the clip
    out_of_view        the target leaves the frame completely and comes back

Clip ``index`` gets the scenario ``SCENARIOS[index % 7]``; "control" clips have none of the attributes
(slow motion, nothing in front, nothing alike, constant appearance and nearly constant size, always in
view) but still rotate, deform and pan. A challenge clip may carry a second attribute among
distractors / appearance_change / scale_variation. One or two target objects per clip (DAVIS 2017
style), each confined to its own half of the frame when there are two, so that targets never overlap.

Ground truth is the *visible* mask of every target as an ID map (0 = background, 1..K targets), the
layers being painted back to front. Everything is a deterministic function of (seed, index).

Image coordinates: x to the right, y down, pixel (y, x) covers [x, x + 1) × [y, y + 1); centres and
radii are in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from minimaskrcnn.video.davis_io import write_davis_sequence

__all__ = ["ATTRIBUTES", "SCENARIOS", "Clip", "make_clip", "make_benchmark", "write_davis"]

ATTRIBUTES = ("occlusion", "fast_motion", "distractors", "appearance_change", "scale_variation",
              "out_of_view")
SCENARIOS = ("control",) + ATTRIBUTES
SHAPES = ("circle", "square", "triangle", "star", "blob")
# Attributes that can be added on top of a clip's scenario without breaking its event geometry.
_EXTRA = ("distractors", "appearance_change", "scale_variation")


@dataclass
class Clip:
    """One generated clip.

    frames: (T, H, W, 3) uint8 RGB.   ids: (T, H, W) uint8 visible-mask ID map, 0 = background.
    attributes: the challenges present (empty for the control split).  num_objects: K targets.
    visible_area, amodal_area: (K, T) pixel counts of each target's visible mask and of its full
    outline inside the frame (hidden parts included), for analysis and tests.
    """

    name: str
    frames: np.ndarray
    ids: np.ndarray
    attributes: tuple
    num_objects: int
    visible_area: np.ndarray = field(repr=False)
    amodal_area: np.ndarray = field(repr=False)

    @property
    def split(self) -> str:
        return "control" if not self.attributes else "challenge"

    def masks(self) -> np.ndarray:
        """(K, T, H, W) bool visible masks, object k+1 in row k."""
        return self.ids[None] == np.arange(1, self.num_objects + 1)[:, None, None, None]


# ------------------------------------------------------------------------------------------- textures
def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray, wrap: bool) -> np.ndarray:
    """Sample img (h, w, c) at float pixel-centre coordinates (x, y); tile (wrap) or clamp at borders."""
    h, w = img.shape[:2]
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    if wrap:
        x0, y0 = x0 % w, y0 % h
        x1, y1 = (x0 + 1) % w, (y0 + 1) % h
    else:
        x0, x1 = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
        y0, y1 = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random (cells × cells) grid, tiled and interpolated to (h, w)."""
    grid = rng.random((cells, cells, 1))
    ys, xs = np.mgrid[0:h, 0:w]
    return _bilinear(grid, xs * cells / w, ys * cells / h, wrap=True)[..., 0]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    c = rng.random(3)
    c = 40 + 200 * (c - c.min()) / max(c.max() - c.min(), 1e-6) * rng.uniform(0.6, 1.0)
    return c


def _texture(rng: np.random.Generator, size: int, octaves=(4, 9), stripes=True,
             two_colours=False) -> np.ndarray:
    """A (size, size, 3) float32 tileable texture: two colours mixed by value noise (and stripes).

    The second colour is a darker shade of the first, or (two_colours) the first with its channels
    rotated (so that the two always differ in hue).
    """
    c1 = _random_colour(rng)
    if two_colours:
        c2 = np.roll(c1, int(rng.integers(1, 3))) * rng.uniform(0.6, 1.0)
    else:
        c2 = np.clip(c1 * rng.uniform(0.35, 0.6) + rng.uniform(0, 80, 3), 0, 255)
    m = sum(_value_noise(rng, size, size, c) / (i + 1) for i, c in enumerate(octaves))
    m = (m - m.min()) / max(m.max() - m.min(), 1e-6)
    if stripes:
        k = rng.integers(2, 6, 2)  # whole periods per tile keep the texture tileable
        ys, xs = np.mgrid[0:size, 0:size] / size
        m = 0.6 * m + 0.4 * (0.5 + 0.5 * np.sin(2 * np.pi * (k[0] * xs + k[1] * ys)))
    return (c1 * (1 - m[..., None]) + c2 * m[..., None]).astype(np.float32)


# ------------------------------------------------------------------------------------------- objects
@dataclass
class _Layer:
    obj_id: int  # 1..K for a target, 0 for a distractor or occluder
    shape: str
    radius: float  # base radius in pixels
    harmonics: np.ndarray  # (3, 4): rows a_k (static), b_k (elastic amplitude), phase, elastic freq
    texture: np.ndarray  # (S, S, 3) texture tile, the object spans half of it
    texture_b: np.ndarray | None  # texture faded into over time (appearance change), or None
    blend: np.ndarray  # (T,) weight of texture_b
    centre: np.ndarray  # (T, 2) x, y
    angle: np.ndarray  # (T,) radians
    scale: np.ndarray  # (T,)

    def max_radius(self) -> float:
        """An upper bound of the outline's distance from the centre over the whole clip."""
        a, b = self.harmonics[0], self.harmonics[1]
        return float(self.radius * self.scale.max() * (1 + np.abs(a).sum() + np.abs(b).sum()))

    def outline(self, theta: np.ndarray, t: int) -> np.ndarray:
        """Radius of the outline at object-frame angle theta, frame t (a star-shaped region)."""
        if self.shape in ("square", "triangle"):
            n = 4 if self.shape == "square" else 3
            # Regular n-gon of circumradius 1: distance to the edge at angle theta.
            base = np.cos(np.pi / n) / np.cos(np.mod(theta, 2 * np.pi / n) - np.pi / n)
        elif self.shape == "star":
            base = 1.0 + 0.35 * np.cos(5 * theta)
        else:
            base = 1.0
        a, b, phase, freq = self.harmonics
        k = np.arange(2, 2 + a.size)
        amp = a + b * np.sin(freq * t + phase)  # elastic deformation: amplitudes drift smoothly in time
        wobble = 1 + (amp[:, None] * np.cos(k[:, None] * theta.ravel()[None] + phase[:, None])).sum(0)
        return self.radius * self.scale[t] * base * wobble.reshape(theta.shape)


def _new_layer(rng, obj_id, t_len, radius, centre, shape=None, texture=None) -> _Layer:
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    harmonics = np.stack([
        rng.uniform(-0.08, 0.08, 3) * (2.0 if shape == "blob" else 1.0),  # static outline variation
        rng.uniform(0.03, 0.07, 3),  # elastic amplitude
        rng.uniform(0, 2 * np.pi, 3),  # phase
        rng.uniform(0.08, 0.2, 3),  # elastic frequency, radians per frame
    ])
    ts = np.arange(t_len)
    spin = rng.uniform(-0.04, 0.04)
    return _Layer(
        obj_id=obj_id, shape=shape, radius=radius, harmonics=harmonics,
        texture=_texture(rng, 64) if texture is None else texture, texture_b=None,
        blend=np.zeros(t_len), centre=centre,
        angle=rng.uniform(0, 2 * np.pi) + spin * ts + 0.1 * np.sin(0.05 * ts),
        scale=1 + 0.08 * np.sin(rng.uniform(0.02, 0.06) * ts + rng.uniform(0, 2 * np.pi)),
    )


def _smooth_path(rng, t_len, centre, amplitude, speed) -> np.ndarray:
    """(T, 2) path: per axis, centre + a sum of two sinusoids of total amplitude ≤ amplitude.

    The angular frequency is chosen so that the peak speed is about ``speed`` pixels per frame.
    """
    ts = np.arange(t_len)[:, None]
    amplitude = np.maximum(np.asarray(amplitude, float), 0.0)
    split = rng.uniform(0.5, 0.8, 2)
    a1, a2 = amplitude * split, amplitude * (1 - split)
    omega = speed / np.maximum(amplitude, 1.0) * rng.uniform(0.8, 1.0, 2)
    phase = rng.uniform(0, 2 * np.pi, (2, 2))
    return (np.asarray(centre, float) + a1 * np.sin(omega * ts + phase[0])
            + a2 * np.sin(1.7 * omega * ts + phase[1]))


def _smoothstep(t_len, start, end) -> np.ndarray:
    u = np.clip((np.arange(t_len) - start) / max(end - start, 1), 0, 1)
    return u * u * (3 - 2 * u)


# ------------------------------------------------------------------------------------------- rendering
def _paint(frame, ids, amodal, layer: _Layer, t: int, h: int, w: int) -> None:
    """Paint one layer at frame t into frame (h, w, 3) and ids (h, w), in place."""
    cx, cy = layer.centre[t]
    r_max = layer.max_radius() + 1
    x0, x1 = max(int(cx - r_max), 0), min(int(cx + r_max) + 1, w)
    y0, y1 = max(int(cy - r_max), 0), min(int(cy + r_max) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    # 1. Pixel centres relative to the object centre, rotated into the object frame.
    dy, dx = np.mgrid[y0:y1, x0:x1] + 0.5
    dx, dy = dx - cx, dy - cy
    c, s = np.cos(layer.angle[t]), np.sin(layer.angle[t])
    u, v = c * dx + s * dy, -s * dx + c * dy
    # 2. Inside test against the outline radius at the pixel's angle.
    inside = np.hypot(u, v) <= layer.outline(np.arctan2(v, u), t)
    if not inside.any():
        return
    # 3. Texture lookup in object coordinates (the texture turns and scales with the object).
    size = layer.texture.shape[0]
    k = size / (4 * layer.radius * layer.scale[t])
    tu, tv = u[inside] * k + size / 2, v[inside] * k + size / 2
    colour = _bilinear(layer.texture, tu, tv, wrap=True)
    if layer.texture_b is not None and layer.blend[t] > 0:
        colour = (1 - layer.blend[t]) * colour + layer.blend[t] * _bilinear(layer.texture_b, tu, tv, True)
    region = frame[y0:y1, x0:x1]
    region[inside] = colour
    ids[y0:y1, x0:x1][inside] = layer.obj_id
    if amodal is not None:
        amodal[y0:y1, x0:x1] |= inside


def make_clip(index: int, seed: int = 0, image_size: int = 128, num_frames: int | None = None) -> Clip:
    """Generate clip ``index`` of the benchmark with the given seed (deterministic per (seed, index)).

    Inputs: index ≥ 0 (its scenario is SCENARIOS[index % 7]); image_size ≥ 64 (frames are square);
    num_frames: None draws 40–80, else at least 8.
    """
    if int(index) < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    if int(image_size) < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    rng = np.random.default_rng([int(seed), int(index)])
    size = int(image_size)
    h = w = size
    px = size / 128.0  # distances below are given for 128 × 128 frames
    t_len = int(rng.integers(40, 81)) if num_frames is None else int(num_frames)
    if t_len < 8:
        raise ValueError(f"num_frames must be >= 8, got {t_len}")
    scenario = SCENARIOS[int(index) % len(SCENARIOS)]
    attributes = [] if scenario == "control" else [scenario]
    if attributes and rng.random() < 0.3:
        extra = [a for a in _EXTRA if a not in attributes]
        attributes.append(extra[rng.integers(len(extra))])
    has = set(attributes)
    ts = np.arange(t_len)
    t_event = int(rng.uniform(0.35, 0.5) * t_len)

    # 1. Targets: one or two, each in its own vertical strip of the frame.
    num_objects = 1 if rng.random() < 0.6 else 2
    targets = []
    for k in range(num_objects):
        primary = k == 0
        radius = rng.uniform(10, 14) * px if num_objects == 1 else rng.uniform(8, 11) * px
        layer = _new_layer(rng, k + 1, t_len, radius, centre=None)
        if primary and "scale_variation" in has:
            factor = rng.uniform(1.8, 2.5)
            grow = rng.random() < 0.5
            layer.radius = radius * (0.75 if grow else 1.3)
            ramp = _smoothstep(t_len, 0.1 * t_len, 0.9 * t_len)
            layer.scale = np.exp((1 if grow else -1) * np.log(factor) * ramp)
        if primary and "appearance_change" in has:
            layer.texture_b = _texture(rng, 64)
            layer.blend = _smoothstep(t_len, 0.25 * t_len, 0.75 * t_len)
        r_max = layer.max_radius()
        x_lo, x_hi = (0, w) if num_objects == 1 else (k * w / 2, (k + 1) * w / 2)
        centre = ((x_lo + x_hi) / 2, h / 2)
        amp = ((x_hi - x_lo) / 2 - r_max - 2, h / 2 - r_max - 2)
        speed = rng.uniform(6, 9) * px if (primary and "fast_motion" in has) else rng.uniform(0.5, 1.5) * px
        layer.centre = _smooth_path(rng, t_len, centre, amp, speed)
        if primary and "out_of_view" in has:
            # A smooth excursion (Gaussian bump in time) through the nearer side edge; at g ≥ 0.9 the
            # target is entirely outside, since E · 0.9 exceeds the distance to the edge plus r_max.
            bx = layer.centre[t_event, 0]
            side = -1.0 if bx < w / 2 else 1.0
            dist = bx if side < 0 else w - bx
            e = (dist + r_max + 8 * px) / 0.9
            g = np.exp(-(((ts - t_event) / 10.0) ** 2))
            layer.centre = layer.centre + np.stack([side * e * g, 0 * g], 1)
        targets.append(layer)
    prim = targets[0]

    # 2. Distractors: same outline, size, texture and motion style as the primary target, not annotated.
    below = []
    if "distractors" in has:
        r_max = prim.max_radius()
        for j in range(2):
            d = _new_layer(rng, 0, t_len, prim.radius, centre=None, shape=prim.shape, texture=prim.texture)
            d.harmonics = prim.harmonics.copy()
            d.scale = prim.scale.copy()
            if j == 0:  # passes alongside the target at a distance of 2 r_max + 3 (never touching)
                beta = rng.uniform(0, 2 * np.pi)
                normal = np.array([np.cos(beta), np.sin(beta)])
                along = np.array([-normal[1], normal[0]])
                d.centre = (prim.centre + normal * (2 * r_max + 3 * px)
                            + along * (1.5 * px) * (ts - t_event)[:, None])
            else:  # wanders over the whole frame (drawn behind the targets)
                d.centre = _smooth_path(rng, t_len, (w / 2, h / 2), (w / 2 - r_max, h / 2 - r_max),
                                        rng.uniform(1, 2.5) * px)
            below.append(d)

    # 3. Occluder: a bigger circle or square sliding over the target with a constant relative velocity,
    # big enough (inscribed radius ≥ r_max + 8) to hide it completely around t_event.
    above = []
    if "occlusion" in has:
        shape = "circle" if rng.random() < 0.5 else "square"
        inscribed = prim.max_radius() + 8 * px
        radius = inscribed / (np.cos(np.pi / 4) if shape == "square" else 1.0) / 0.9
        occ = _new_layer(rng, 0, t_len, radius, centre=None, shape=shape)
        occ.harmonics[:2] = 0.0  # rigid, so the inscribed radius holds exactly
        occ.scale = np.ones(t_len)
        occ.angle = occ.angle[0] + 0.01 * ts
        beta = rng.uniform(0, 2 * np.pi)
        v_rel = 2.5 * px * np.array([np.cos(beta), np.sin(beta)])
        occ.centre = prim.centre + v_rel * (ts - t_event)[:, None]
        above.append(occ)

    # 4. Background: a big texture panned smoothly (sub-pixel, bilinear).
    pad = int(24 * px)
    bg = _texture(rng, size + 2 * pad, octaves=(5, 11, 23, 47), stripes=False, two_colours=True)
    pan = _smooth_path(rng, t_len, (pad, pad), (pad - 1, pad - 1), rng.uniform(0.3, 1.2) * px)
    noise_sigma = 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    frames = np.empty((t_len, h, w, 3), np.uint8)
    ids = np.zeros((t_len, h, w), np.uint8)
    visible = np.zeros((num_objects, t_len), np.int64)
    amodal_area = np.zeros((num_objects, t_len), np.int64)
    layers = below + targets + above
    for t in range(t_len):
        frame = _bilinear(bg, xx + pan[t, 0], yy + pan[t, 1], wrap=False)
        for layer in layers:
            am = np.zeros((h, w), bool) if layer.obj_id > 0 else None
            _paint(frame, ids[t], am, layer, t, h, w)
            if am is not None:
                amodal_area[layer.obj_id - 1, t] = am.sum()
        frame += rng.normal(0, noise_sigma, frame.shape)
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        for k in range(num_objects):
            visible[k, t] = np.count_nonzero(ids[t] == k + 1)
    name = f"clip{int(index):03d}_{scenario}"
    return Clip(name=name, frames=frames, ids=ids, attributes=tuple(attributes), num_objects=num_objects,
                visible_area=visible, amodal_area=amodal_area)


def make_benchmark(num_clips: int = 30, seed: int = 0, image_size: int = 128):
    """Yield clips 0..num_clips−1 (a generator: a clip is rendered only when it is needed)."""
    if int(num_clips) < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    for i in range(int(num_clips)):
        yield make_clip(i, seed=seed, image_size=image_size)


# ------------------------------------------------------------------------------------------- DAVIS files
def write_davis(clip: Clip, root: str, resolution: str = "480p", jpeg_quality: int | None = 90) -> str:
    """Write a clip in the DAVIS layout (``davis_io.write_davis_sequence``) and return its name:
    ROOT/JPEGImages/<res>/<name>/00000.jpg ... and ROOT/Annotations/<res>/<name>/00000.png ... (indexed,
    DAVIS palette). ``jpeg_quality=None`` writes lossless PNG frames instead of JPEG."""
    write_davis_sequence(root, clip.name, clip.frames, clip.ids, resolution=resolution,
                         jpeg_quality=jpeg_quality)
    return clip.name
