"""Video folders in and out: the DAVIS layout, a plain folder of frames, indexed-PNG masks.

The DAVIS layout (DAVIS 2016 / 2017, also what davis2017-evaluation and vos-benchmark read)::

    ROOT/JPEGImages/<res>/<seq>/00000.jpg 00001.jpg ...   the frames (RGB JPEG; PNG accepted too)
    ROOT/Annotations/<res>/<seq>/00000.png ...            the masks, one per frame (at least frame 0)
    ROOT/ImageSets/2017/val.txt (or ImageSets/2016/...)   one sequence name per line (optional)

<res> is "480p" (854×480 frames in DAVIS) or "Full-Resolution". An annotation is an indexed PNG
(Pillow mode "P"): pixel value 0 is background, 1..K the objects (DAVIS 2017). DAVIS 2016's single-
object masks are greyscale PNGs holding 0 and 255 (mode "L"); they are read as object 1. Anything else
— an RGB mask, a greyscale mask with other values — is refused with an error naming the file.

Results are written the way every published method writes them and both evaluators read them::

    RESULTS/<method>/<seq>/<frame>.png      indexed PNG, DAVIS palette, the frame's own size

A user's own clip needs no layout: a folder of frames (any names that sort in time order, .jpg /
.jpeg / .png) and one mask PNG for its first frame (``read_frames_folder``).

Every reading function checks what it reads and raises ``FileNotFoundError`` / ``ValueError`` naming
the file: a missing first mask, frames of different sizes, an object ID that frame 0 does not have,
a non-indexed annotation. Every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

__all__ = ["FRAME_EXTENSIONS", "Sequence", "davis_palette", "read_annotation", "write_indexed_png",
           "read_frames", "list_sequences", "read_davis_sequence", "read_frames_folder", "write_masks",
           "write_davis_sequence", "read_masks"]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclass
class Sequence:
    """One video read from disk.

    name: sequence name.  frames: (T, H, W, 3) uint8 RGB.  frame_names: T file stems ("00000", ...), the
    names the results are written under.  first_mask: (H, W) uint8 ID map of frame 0 (objects 1..K, all
    present).  gt: (T, H, W) uint8 ID maps of every frame when every annotation exists, else None.
    """

    name: str
    frames: np.ndarray
    frame_names: list
    first_mask: np.ndarray
    gt: np.ndarray | None = None

    @property
    def num_objects(self) -> int:
        return int(self.first_mask.max())


def davis_palette() -> list[int]:
    """The 256-colour PASCAL VOC palette DAVIS annotations use (1 = dark red, 2 = green, ...), flat RGB."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):  # spread the bits of the index over the high bits of r, g, b
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _atomic_save(img, path: str, quality: int = 90) -> None:
    """Save a Pillow image (JPEG at ``quality`` or PNG, from the extension) through a temporary file in
    the same folder, then rename: a crash never leaves a half-written file under ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=ext)
    os.close(fd)
    try:
        if ext in (".jpg", ".jpeg"):
            img.save(tmp, format="JPEG", quality=int(quality))
        else:
            img.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_indexed_png(ids: np.ndarray, path: str) -> None:
    """Write an (H, W) ID map (values 0..255) as an indexed PNG with the DAVIS palette, atomically."""
    from PIL import Image

    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer) or (ids.size and (ids.min() < 0 or
                                                                                  ids.max() > 255)):
        raise ValueError(f"{path}: an ID map must be (H, W) integers in 0..255, got {ids.dtype} {ids.shape}")
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    img.putpalette(davis_palette())
    _atomic_save(img, path)


def read_annotation(path: str) -> np.ndarray:
    """(H, W) uint8 ID map of one annotation PNG.

    Mode "P" (indexed, DAVIS 2017): the pixel values are the IDs. Mode "L" / "1" (DAVIS 2016): values
    must be 0 and 255 (or 0 and 1) only, read as background / object 1. Anything else: ValueError
    naming the file.
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation {path} does not exist")
    try:
        with Image.open(path) as img:
            mode = img.mode
            a = np.array(img)
    except OSError as exc:
        raise ValueError(f"annotation {path} cannot be read as an image: {exc}") from None
    if mode == "P":
        return a.astype(np.uint8)
    if mode in ("L", "1"):
        values = np.unique(a)
        if mode == "1" or set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}:
            return (a > 0).astype(np.uint8)
        raise ValueError(f"annotation {path} is a greyscale PNG with values {values[:8].tolist()}...: "
                         "expected an indexed (palette) PNG, or a DAVIS 2016 mask of 0 and 255")
    raise ValueError(f"annotation {path} has image mode {mode!r}: expected an indexed (palette, mode "
                     "'P') PNG with 0 = background and 1..K the objects, or a DAVIS 2016 mask of 0 and 255")


def _frame_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"frame folder {folder} does not exist")
    files = sorted(f for f in os.listdir(folder)
                   if f.lower().endswith(FRAME_EXTENSIONS) and not f.startswith("."))
    if not files:
        raise ValueError(f"frame folder {folder} holds no .jpg / .png frame")
    return files


def read_frames(paths: list) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of the image files ``paths``; all must have the first one's size."""
    from PIL import Image

    frames = []
    for p in paths:
        try:
            with Image.open(p) as img:
                size = img.size
                if frames and size != (frames[0].shape[1], frames[0].shape[0]):
                    raise ValueError(f"frame {p} is {size[0]}×{size[1]} but the first frame {paths[0]} is "
                                     f"{frames[0].shape[1]}×{frames[0].shape[0]}: all frames must have "
                                     "one size")
                frames.append(np.array(img.convert("RGB")))
        except OSError as exc:
            raise ValueError(f"frame {p} cannot be read as an image: {exc}") from None
    return np.stack(frames)


def _check_first_mask(first: np.ndarray, path: str, frame_shape) -> np.ndarray:
    if first.shape != tuple(frame_shape):
        raise ValueError(f"first-frame mask {path} is {first.shape[1]}×{first.shape[0]} but the frames are "
                         f"{frame_shape[1]}×{frame_shape[0]}")
    k = int(first.max())
    if k == 0:
        raise ValueError(f"first-frame mask {path} has no object (every pixel is 0)")
    present = np.bincount(first.ravel(), minlength=k + 1)[1:] > 0
    if not present.all():
        missing = (np.flatnonzero(~present) + 1).tolist()
        raise ValueError(f"first-frame mask {path} has objects up to {k} but no pixel of object(s) "
                         f"{missing}: the objects must be numbered 1..K, every one present in frame 0")
    return first


def list_sequences(root: str, resolution: str = "480p", image_set: str | None = None,
                   sequences=None) -> list[str]:
    """The sequence names to run: ``sequences`` (a list or "a,b"), else the lines of
    ROOT/ImageSets/2017/<image_set>.txt (or 2016/), else every folder of ROOT/JPEGImages/<resolution>."""
    images = os.path.join(root, "JPEGImages", resolution)
    if not os.path.isdir(images):
        raise FileNotFoundError(f"{images} does not exist: a DAVIS folder holds "
                                "JPEGImages/<res>/<sequence>/ and Annotations/<res>/<sequence>/ "
                                f"(resolution {resolution!r})")
    if sequences is not None:
        names = [s.strip() for s in (sequences.split(",") if isinstance(sequences, str) else sequences)]
        names = [s for s in names if s]
    elif image_set is not None:
        candidates = [os.path.join(root, "ImageSets", year, f"{image_set}.txt") for year in ("2017", "2016")]
        path = next((c for c in candidates if os.path.isfile(c)), None)
        if path is None:
            raise FileNotFoundError(f"image set {image_set!r}: neither {candidates[0]} nor {candidates[1]} "
                                    "exists")
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        names = sorted(d for d in os.listdir(images) if os.path.isdir(os.path.join(images, d)))
    if not names:
        raise ValueError(f"no sequence to run in {root}")
    for n in names:
        if not os.path.isdir(os.path.join(images, n)):
            raise FileNotFoundError(f"sequence {n!r}: {os.path.join(images, n)} does not exist")
    return names


def read_davis_sequence(root: str, name: str, resolution: str = "480p") -> Sequence:
    """Read one sequence of a DAVIS folder: its frames, frame 0's annotation, and (when every frame has
    one) all annotations as ground truth. Annotation k belongs to the frame with the same file stem."""
    img_dir = os.path.join(root, "JPEGImages", resolution, name)
    ann_dir = os.path.join(root, "Annotations", resolution, name)
    files = _frame_files(img_dir)
    stems = [os.path.splitext(f)[0] for f in files]
    frames = read_frames([os.path.join(img_dir, f) for f in files])
    first_path = os.path.join(ann_dir, stems[0] + ".png")
    if not os.path.isfile(first_path):
        raise FileNotFoundError(f"sequence {name!r} has no first-frame annotation {first_path}")
    first = _check_first_mask(read_annotation(first_path), first_path, frames.shape[1:3])
    ann_paths = [os.path.join(ann_dir, s + ".png") for s in stems]
    gt = None
    if all(os.path.isfile(p) for p in ann_paths):
        gt = np.stack([first] + [_read_gt(p, frames.shape[1:3], int(first.max())) for p in ann_paths[1:]])
    return Sequence(name, frames, stems, first, gt)


def _read_gt(path: str, shape, k: int) -> np.ndarray:
    a = read_annotation(path)
    if a.shape != tuple(shape):
        raise ValueError(f"annotation {path} is {a.shape[1]}×{a.shape[0]} but the frames are "
                         f"{shape[1]}×{shape[0]}")
    if int(a.max()) > k:
        extra = sorted(set(np.unique(a).tolist()) - set(range(k + 1)))
        raise ValueError(f"annotation {path} holds object ID(s) {extra} that the first frame does not have "
                         f"(it has 1..{k}): semi-supervised evaluation follows the objects of frame 0")
    return a


def read_frames_folder(frames_dir: str, first_mask: str, name: str | None = None) -> Sequence:
    """A user's own clip: every .jpg / .jpeg / .png in ``frames_dir`` (sorted by name) and the mask PNG
    ``first_mask`` of its first frame. No ground truth."""
    files = _frame_files(frames_dir)
    if not os.path.isfile(first_mask):
        raise FileNotFoundError(f"first-frame mask {first_mask} does not exist")
    frames = read_frames([os.path.join(frames_dir, f) for f in files])
    first = _check_first_mask(read_annotation(first_mask), first_mask, frames.shape[1:3])
    name = name or os.path.basename(os.path.normpath(frames_dir))
    return Sequence(name, frames, [os.path.splitext(f)[0] for f in files], first, None)


def write_masks(folder: str, frame_names: list, ids: np.ndarray) -> None:
    """Write (T, H, W) ID maps as folder/<frame_names[t]>.png, indexed with the DAVIS palette."""
    ids = np.asarray(ids)
    if ids.ndim != 3 or ids.shape[0] != len(frame_names):
        raise ValueError(f"ids must be (T, H, W) with T = {len(frame_names)} frame names, got shape "
                         f"{ids.shape}")
    for stem, m in zip(frame_names, ids):
        write_indexed_png(m, os.path.join(folder, f"{stem}.png"))


def read_masks(folder: str, frame_names: list, shape, num_objects: int) -> np.ndarray:
    """(T, H, W) uint8 predicted ID maps folder/<name>.png; a missing file, a wrong size or an ID above
    ``num_objects`` is a ValueError / FileNotFoundError naming the file."""
    out = np.zeros((len(frame_names),) + tuple(shape), np.uint8)
    for t, stem in enumerate(frame_names):
        path = os.path.join(folder, f"{stem}.png")
        a = read_annotation(path)
        if a.shape != tuple(shape):
            raise ValueError(f"result {path} is {a.shape[1]}×{a.shape[0]} but the frames are "
                             f"{shape[1]}×{shape[0]}")
        if int(a.max()) > num_objects:
            raise ValueError(f"result {path} holds ID {int(a.max())} but the sequence has {num_objects} "
                             "object(s)")
        out[t] = a
    return out


def write_davis_sequence(root: str, name: str, frames: np.ndarray, ids: np.ndarray, resolution: str = "480p",
                         jpeg_quality: int | None = 90) -> None:
    """Write one clip in the DAVIS layout: ROOT/JPEGImages/<res>/<name>/00000.jpg ... (JPEG at
    ``jpeg_quality``, or lossless PNG with None) and ROOT/Annotations/<res>/<name>/00000.png ...
    (indexed, DAVIS palette). frames (T, H, W, 3) uint8, ids (T, H, W) ID map."""
    from PIL import Image

    frames, ids = np.asarray(frames), np.asarray(ids)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or ids.shape != frames.shape[:3]:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 and ids (T, H, W), got {frames.shape} "
                         f"{frames.dtype} and {ids.shape}")
    img_dir = os.path.join(root, "JPEGImages", resolution, name)
    ann_dir = os.path.join(root, "Annotations", resolution, name)
    for t in range(frames.shape[0]):
        img = Image.fromarray(frames[t], mode="RGB")
        if jpeg_quality is None:
            _atomic_save(img, os.path.join(img_dir, f"{t:05d}.png"))
        else:
            _atomic_save(img, os.path.join(img_dir, f"{t:05d}.jpg"), quality=int(jpeg_quality))
        write_indexed_png(ids[t], os.path.join(ann_dir, f"{t:05d}.png"))
