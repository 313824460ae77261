"""``minimaskrcnn bench``: our kernels timed against the reference in the same run, as ratios.

Both sides run in this process with the same thread count (Numba's and torch's thread pools are
both set to ``threads``). Each timing is the best of ``repeat`` runs after one warm-up call, so
Numba's one-time compilation is reported separately and never counted in a ratio.
"""

from __future__ import annotations

import time


def best_time(fn, repeat: int = 5) -> float:
    """Seconds taken by the fastest of ``repeat`` calls of ``fn()`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _import_torch(threads: int):
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError:
        raise SystemExit("minimaskrcnn bench needs torch and torchvision: "
                         "pip install -e \".[test]\"") from None
    torch.set_num_threads(threads)
    return torch


def _set_numba_threads(threads: int) -> None:
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def report(name: str, ours: float, theirs: float) -> None:
    print(f"{name:<48s} ours {ours * 1e3:9.2f} ms   torch {theirs * 1e3:9.2f} ms   "
          f"ours/torch {ours / theirs:6.2f}x   (torch/ours {theirs / ours:6.2f}x)")


TARGETS = {}  # name -> function(threads, repeat); filled in below, one section per target


# ---- conv: conv2d forward + backward against torch ------------------------------------------------


def _set_blas_threads(threads: int) -> str:
    """Ask numpy's OpenBLAS for ``threads`` threads (best effort; reports what it found)."""
    from minimaskrcnn.nn._stacked import openblas_threads

    blas = openblas_threads()
    if blas is None:
        return "BLAS thread count not controlled (set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS)"
    blas.set(threads)
    return f"OpenBLAS threads {blas.get()}"


def _interleaved_best(fns: dict, repeat: int, block: int = 2, pause: float = 0.3,
                      samples: dict | None = None) -> tuple[dict, dict]:
    """Best wall-clock and best process-CPU time of each function, run in alternating blocks of
    ``block`` calls for ``repeat`` rounds. ``samples``, when given, receives every timed call's
    (wall, CPU) seconds: samples[name] = [(wall, cpu), ...].

    Alternating blocks (rather than all of one side, then all of the other) spreads the noise of a
    shared machine over both sides. Before each block we pause: the thread pools of OpenMP (torch)
    and OpenBLAS (numpy) keep their workers busy-waiting for a while after a call, and without the
    pause those spinning workers of one side steal the cores from the other (measured: both sides
    2–10× slower). CPU time (all threads of this process) is insensitive to other processes: with
    one thread it is the cleanest measure of the work done.
    """
    wall = {name: float("inf") for name in fns}
    cpu = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up: compile, allocate scratch buffers
    for _ in range(repeat):
        for name, fn in fns.items():
            time.sleep(pause)
            for _ in range(block):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                w, c = time.perf_counter() - t0, time.process_time() - c0
                wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
                if samples is not None:
                    samples.setdefault(name, []).append((w, c))
    return wall, cpu


def bench_conv(threads: int, repeat: int) -> None:
    """conv2d forward + backward (float32, 3×3, pad 1, stride 1, bias) against torch on CPU: times,
    ratios, and each side's achieved GFLOP/s against numpy's sgemm rate measured in the same run."""
    import numpy as np
    import torch

    from minimaskrcnn.nn import functional as F

    print(f"conv2d forward+backward, float32, {threads} thread(s) each (ours: the default method, "
          f"\"auto\", which takes the one named in brackets); "
          f"torch {torch.__version__}, {_set_blas_threads(threads)}")
    t0 = time.perf_counter()
    x = np.ones((1, 2, 5, 5), np.float32)
    for dtype in (np.float32, np.float64):
        _, cache = F.conv2d_forward(x.astype(dtype), np.ones((2, 2, 3, 3), dtype), None, padding=1)
        F.conv2d_backward(np.ones((1, 2, 5, 5), dtype), cache)
    print(f"first call, float32 + float64 (includes Numba compilation unless cached on disk): "
          f"{time.perf_counter() - t0:.2f} s")

    rng = np.random.default_rng(0)
    achieved = []
    for n, c, h, w, c_out in ((2, 64, 64, 64, 64), (8, 256, 32, 32, 256)):
        wall, cpu, chosen = _time_conv_case(rng, (n, c, h, w), c_out, repeat)
        name = f"conv2d fwd+bwd {n}x{c}x{h}x{w} k3 pad1 {c}->{c_out}"
        report(f"{name} ({chosen})", wall["ours"], wall["torch"])
        print(f"{'  (process CPU time, all threads)':<48s} ours {cpu['ours'] * 1e3:9.2f} ms   "
              f"torch {cpu['torch'] * 1e3:9.2f} ms   ours/torch {cpu['ours'] / cpu['torch']:6.2f}x")
        # forward, dx and dW each multiply-add N·C_out·C_in·9·H·W times (direct convolution's count)
        achieved.append((name, 3 * 2 * n * c_out * c * 9 * h * w, wall))
    # The limit: numpy's sgemm with the same BLAS and threads (see ``bench roofline``). Winograd
    # multiplies 2.25× (F(2×2, 3×3)) or 4× (F(4×4, 3×3)) less than the count, so its rate is an
    # effective one.
    peak = max(rate for _, rate in _sgemm_rates(repeat))
    print(f"achieved GFLOP/s (direct convolution's count) against this machine's sgemm rate, "
          f"{peak:.1f} GFLOP/s:")
    for name, flops, wall in achieved:
        print(f"  {name}: " + "   ".join(
            f"{side} {flops / wall[side] / 1e9:6.1f} GFLOP/s ({flops / wall[side] / 1e9 / peak:5.1%})"
            for side in ("ours", "torch")))


def _time_conv_case(rng, x_shape, c_out, repeat):
    import numpy as np
    import torch

    from minimaskrcnn.nn import functional as F

    n, c, h, w = x_shape
    x = rng.standard_normal(x_shape, dtype=np.float32)
    wt = rng.standard_normal((c_out, c, 3, 3), dtype=np.float32) * np.float32(0.05)
    b = rng.standard_normal(c_out, dtype=np.float32)
    dout = rng.standard_normal((n, c_out, h, w), dtype=np.float32)

    def ours():
        _, cache = F.conv2d_forward(x, wt, b, 1, 1)
        return F.conv2d_backward(dout, cache)

    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(wt).requires_grad_()
    tb = torch.from_numpy(b).requires_grad_()
    tdout = torch.from_numpy(dout)

    def theirs():
        tx.grad = tw.grad = tb.grad = None
        torch.nn.functional.conv2d(tx, tw, tb, 1, 1).backward(tdout)

    wall, cpu = _interleaved_best({"ours": ours, "torch": theirs}, repeat)
    chosen = F.conv2d_forward(x, wt, b, 1, 1)[1][5]  # the method "auto" resolved to (kept in the cache)
    return wall, cpu, chosen


TARGETS["conv"] = bench_conv


# ---- ops: RoIAlign, RoIPool, NMS ---------------------------------------------------------------------

_OPS_FIRST_CALL = """
import time
import numpy as np
t0 = time.perf_counter()
from minimaskrcnn.ops.roi_align import roi_align, roi_align_backward
from minimaskrcnn.ops.roi_pool import roi_pool, roi_pool_backward
from minimaskrcnn.ops.nms import nms
t1 = time.perf_counter()
x = np.ones((1, 2, 5, 5), np.float32)
rois = np.array([[0, 0, 0, 3, 3]], np.float32)
roi_align(x, rois, 2, 1.0, 2, True)
roi_align_backward(np.ones((1, 2, 2, 2), np.float32), rois, x.shape, 2, 1.0, 2, True)
out, arg = roi_pool(x, rois, 2, return_argmax=True)
roi_pool_backward(out, rois, arg, x.shape)
nms(rois[:, 1:], np.ones(1, np.float32), 0.7)
print(f"{t1 - t0:.3f} {time.perf_counter() - t1:.3f}")
"""


def _ops_first_call(cache_dir: str) -> tuple[float, float]:
    """(import seconds, first-call seconds) of the float32 ops in a fresh Python process whose Numba
    cache lives in ``cache_dir``."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    res = subprocess.run([sys.executable, "-c", _OPS_FIRST_CALL], env=env, capture_output=True, text=True,
                         check=True)
    imp, first = res.stdout.split()[-2:]
    return float(imp), float(first)


def _ops_inputs(rng, num_rois: int, image: int, min_side: float, max_side: float):
    """``num_rois`` boxes in an image×image frame, sides log-uniform in [min_side, max_side]."""
    import numpy as np

    wh = np.exp(rng.uniform(np.log(min_side), np.log(max_side), (num_rois, 2)))
    xy = rng.uniform(0, image - wh)
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def bench_ops(threads: int, repeat: int) -> None:
    """RoIAlign forward and backward, RoIPool forward and NMS (float32) against torchvision on CPU.

    Shapes: a 1×256×50×50 feature map of an 800×800 image (spatial_scale 1/16), 512 RoIs with sides
    log-uniform in 16..600 pixels; RoIAlign 14×14, sampling_ratio 2, aligned; RoIPool 7×7; NMS of
    6,000 boxes (sides 8..300) at IoU 0.7.
    """
    import tempfile

    import numpy as np
    import torch
    import torchvision

    from minimaskrcnn.ops.nms import nms
    from minimaskrcnn.ops.roi_align import roi_align, roi_align_backward
    from minimaskrcnn.ops.roi_pool import roi_pool

    print(f"ops, float32, {threads} thread(s) each; torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}")
    # Numba compiles each kernel on its first call; cache=True stores the machine code on disk, so
    # only the first process on a machine pays. Shown with an empty cache folder, then again.
    with tempfile.TemporaryDirectory() as cache_dir:
        imp0, cold = _ops_first_call(cache_dir)
        imp1, warm = _ops_first_call(cache_dir)
    print(f"first call of roi_align/roi_align_backward/roi_pool/roi_pool_backward/nms (float32) in a new "
          f"process: {cold:.2f} s with an empty Numba cache (compiling), {warm:.2f} s in a second process "
          f"(loaded from the cache); imports {imp0:.2f} s / {imp1:.2f} s")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 256, 50, 50), dtype=np.float32)
    rois = np.concatenate([np.zeros((512, 1), np.float32), _ops_inputs(rng, 512, 800, 16, 600)], axis=1)
    scale = 1.0 / 16
    dout = rng.standard_normal((512, 256, 14, 14), dtype=np.float32)
    tx, trois, tdout = torch.from_numpy(x), torch.from_numpy(rois), torch.from_numpy(dout)

    _ops_compare("roi_align forward 1x256x50x50, 512 RoIs, 14x14, sr 2", repeat, {
        "ours": lambda: roi_align(x, rois, 14, scale, 2, True),
        "torch": lambda: torchvision.ops.roi_align(tx, trois, 14, scale, 2, True),
    })
    # torchvision's autograd backward of roi_align calls exactly this kernel.
    _ops_compare("roi_align backward (same)", repeat, {
        "ours": lambda: roi_align_backward(dout, rois, x.shape, 14, scale, 2, True),
        "torch": lambda: torch.ops.torchvision._roi_align_backward(
            tdout, trois, scale, 14, 14, 1, 256, 50, 50, 2, True),
    })
    # torchvision always records the argmax (int32); ours only when asked (training needs it for the
    # backward, inference does not), so both are timed against the same torchvision call.
    _ops_compare("roi_pool forward 1x256x50x50, 512 RoIs, 7x7", repeat, {
        "ours": lambda: roi_pool(x, rois, 7, scale, return_argmax=True),
        "output only": lambda: roi_pool(x, rois, 7, scale),
        "torch": lambda: torchvision.ops.roi_pool(tx, trois, 7, scale),
    })

    boxes = _ops_inputs(rng, 6000, 800, 8, 300)
    scores = rng.random(6000, dtype=np.float32)
    tboxes, tscores = torch.from_numpy(boxes), torch.from_numpy(scores)
    _ops_compare("nms 6000 boxes, IoU 0.7", repeat, {
        "ours": lambda: nms(boxes, scores, 0.7),
        "torch": lambda: torchvision.ops.nms(tboxes, tscores, 0.7),
    })


def _ops_compare(name: str, repeat: int, fns: dict) -> None:
    """Time ``fns`` (keys "ours", "torch" and optionally variants of ours) in interleaved blocks and
    print wall-clock ratios, then process-CPU-time ratios (all threads; insensitive to other
    processes on a shared machine)."""
    wall, cpu = _interleaved_best(fns, repeat)
    for key in fns:
        if key != "torch":
            label = name if key == "ours" else f"{name}, {key}"
            report(label, wall[key], wall["torch"])
            print(f"{'  (process CPU time, all threads)':<48s} ours {cpu[key] * 1e3:9.2f} ms   "
                  f"torch {cpu['torch'] * 1e3:9.2f} ms   ours/torch {cpu[key] / cpu['torch']:6.2f}x")


TARGETS["ops"] = bench_ops


# ---- train: one training step of the shapes model ----------------------------------------------------

def bench_train(threads: int, repeat: int) -> None:
    """One training step (forward, hand-written backward, SGD update) of the shapes preset, batch 8 of
    128×128 images, against torchvision's MaskRCNN assembled with the same architecture (float32,
    same batch, same weights, same RoI samples up to sampling randomness). The two are timed in
    alternating blocks of three back-to-back steps (as in training) after a pause, best of the
    ``repeat`` blocks' steps each, so a busy machine slows both alike. A last line per case gives
    the median and range of all the timed steps of each side (and their median CPU time).

    Two weight sets: the initial weights (step 1 of a run: few proposals overlap an object, so the mask
    head sees few positive RoIs) and, when ``data/shapes_model.npz`` is shipped, the trained weights
    (the rest of a run: every sampled positive slot is filled, and the mask head does the most work)."""
    import numpy as np

    from minimaskrcnn.config import shapes
    from minimaskrcnn.datasets.shapes import shapes_dataset
    from minimaskrcnn.datasets.transforms import batch_of
    from minimaskrcnn.model import MaskRCNN
    from minimaskrcnn.weights import SHIPPED_MODEL as CHECKPOINT
    from minimaskrcnn.weights import load_model

    cfg = shapes()
    images, targets = batch_of(shapes_dataset(8, seed=0), range(8))
    cases = [("initial weights", MaskRCNN(cfg, np.random.default_rng(0)))]
    if CHECKPOINT.exists():
        trained = load_model(CHECKPOINT)
        model = MaskRCNN(cfg, np.random.default_rng(0))
        model.load_state_dict(trained.state_dict())
        cases.append((f"trained weights ({CHECKPOINT.name})", model))
    import torch

    print(f"train step, float32, {threads} thread(s) each; torch {torch.__version__}")
    for name, model in cases:
        samples = {}
        wall, cpu = _time_train_step(cfg, model, images, targets, repeat, samples)
        report(f"train step, {name}", wall["ours"], wall["torch"])
        print(f"{'  (process CPU time, all threads)':<48s} ours {cpu['ours'] * 1e3:9.2f} ms   "
              f"torch {cpu['torch'] * 1e3:9.2f} ms   ours/torch {cpu['ours'] / cpu['torch']:6.2f}x")
        print(_spread_line(samples))
    print("(shapes preset, batch 8 of 128x128 images; forward + backward + SGD update)")


def _spread_line(samples: dict) -> str:
    """One line: the median wall time of every timed step of each side, its range, and the median
    CPU time. The ratio above compares the best steps; this shows how far the others scatter (a
    side whose threads sleep between kernels scatters more than one whose threads spin)."""
    import numpy as np

    parts = []
    for name in ("ours", "torch"):
        w, c = (np.array(v) * 1e3 for v in zip(*samples[name]))
        parts.append(f"{name} median {np.median(w):6.1f} ms ({w.min():.0f}-{w.max():.0f}), "
                     f"CPU {np.median(c):.0f} ms")
    label = f"  (all {len(samples['ours'])} steps per side)"
    return f"{label:<48s} " + ";  ".join(parts)


def _time_train_step(cfg, model, images, targets, repeat, samples=None):
    import numpy as np
    import torch

    from minimaskrcnn.model.torch_reference import build_torch_maskrcnn, copy_weights, torch_inputs
    from minimaskrcnn.nn.optim import SGD

    tmodel = build_torch_maskrcnn(cfg, 128, "float32")
    copy_weights(model, tmodel)
    tmodel.train()
    # a tiny learning rate: repeated steps on one batch must not drift far from the starting point
    opt = SGD(model.parameters(), lr=1e-5, momentum=0.9, weight_decay=1e-4)
    topt = torch.optim.SGD(tmodel.parameters(), lr=1e-5, momentum=0.9, weight_decay=1e-4)
    timgs, ttgts = torch_inputs([im.astype(np.float32) / 255 for im in images], targets)

    def ours():
        model.forward_train(images, targets)
        opt.zero_grad()
        model.backward()
        opt.step()

    def theirs():
        losses = tmodel(timgs, ttgts)
        topt.zero_grad()
        sum(losses.values()).backward()
        topt.step()

    # Alternated with a pause before each call, as every other section: without it, the thread pool
    # of the side that just ran still spins on the cores while the other side is timed.
    return _interleaved_best({"ours": ours, "torch": theirs}, repeat, block=3, samples=samples)


TARGETS["train"] = bench_train


# ---- resnet50: inference of torchvision's maskrcnn_resnet50_fpn -------------------------------------

def bench_resnet50(threads: int, repeat: int) -> None:
    """Inference on one photo (matplotlib's grace_hopper.jpg, 600×512, resized by both to 938×800 as
    torchvision's defaults do): our ``predict`` (transform, ResNet-50-FPN, RPN, RoI heads, mask pasting)
    against torchvision's ``maskrcnn_resnet50_fpn`` forward, float32, the same weights.

    The weights are random (nothing is downloaded), as torchvision builds the model for its COCO
    weights (FrozenBatchNorm2d body); the class logits are scaled so that detections pass the 0.05
    score threshold and the mask head runs on all 100 of them — the most work inference can take."""
    import matplotlib.cbook as cbook
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    from minimaskrcnn.weights import build_model, load_state_dict_named, torchvision_config

    blas = _set_blas_threads(threads)
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        image = np.asarray(im.convert("RGB")).copy()
    torch.manual_seed(0)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    tmodel = torchvision.models.detection.MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=91).eval()
    with torch.no_grad():
        tmodel.roi_heads.box_predictor.cls_score.weight.mul_(30)
    model = build_model(torchvision_config())
    load_state_dict_named(model, {k: v.numpy() for k, v in tmodel.state_dict().items()}, "torchvision model")
    timage = [torch.from_numpy(image).permute(2, 0, 1).float() / 255]

    found = {}  # detections of the last call of each side

    def ours():
        found["ours"] = len(model.predict([image])[0]["boxes"])

    def theirs():
        with torch.no_grad():
            found["torch"] = len(tmodel(timage)[0]["boxes"])

    print(f"maskrcnn_resnet50_fpn inference, float32, {threads} thread(s) each; torch {torch.__version__}, "
          f"{blas}")
    wall, cpu = _interleaved_best({"ours": ours, "torch": theirs}, repeat, block=1)
    print(f"detections: ours {found['ours']}, torchvision {found['torch']}")
    report("predict, 1 image 600x512 -> 938x800 (100 masks)", wall["ours"], wall["torch"])
    print(f"{'  (process CPU time, all threads)':<48s} ours {cpu['ours'] * 1e3:9.2f} ms   "
          f"torch {cpu['torch'] * 1e3:9.2f} ms   ours/torch {cpu['ours'] / cpu['torch']:6.2f}x")


TARGETS["resnet50"] = bench_resnet50


# ---- finetune: one training step of maskrcnn_resnet50_fpn with torchvision's frozen layers -------------

FINETUNE_SIZE = 512  # image side; min_size = max_size = 512 on both sides, so no resize
FINETUNE_CLASSES = 4  # background + 3, as a small fine-tuning label set


def _finetune_batch():
    """Two 512×512 photos (skimage's astronaut; matplotlib's grace_hopper, its top 512 rows) with three
    elliptic instances each (boxes, labels 1..3, masks), as uint8 images."""
    import matplotlib.cbook as cbook
    import numpy as np
    import skimage.data
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        hopper = np.asarray(im.convert("RGB"))[:FINETUNE_SIZE, :FINETUNE_SIZE].copy()
    images = [skimage.data.astronaut().copy(), hopper]
    yy, xx = np.mgrid[:FINETUNE_SIZE, :FINETUNE_SIZE]
    targets = []
    for i, _ in enumerate(images):
        masks, boxes = [], []
        for cx, cy, rx, ry in ((150, 180, 60, 90), (330, 260, 110, 70), (260, 420, 40, 40)):
            cx, cy = cx + 30 * i, cy - 20 * i
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            ys, xs = np.nonzero(m)
            masks.append(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        targets.append({"boxes": np.array(boxes, np.float32), "labels": np.array([1, 2, 3], np.int64),
                        "masks": np.stack(masks)})
    return images, targets


def _finetune_sides(path, images, targets, sides=("ours", "torch")):
    """{side: a zero-argument function doing one training step — forward, backward, SGD update} for
    our model and torchvision's (only the ``sides`` asked for are built), both loaded from ``path``
    with conv1 + layer1 frozen."""
    import numpy as np
    import torch

    from minimaskrcnn.model.torch_reference import torch_inputs, torchvision_resnet50_fpn
    from minimaskrcnn.nn.optim import SGD
    from minimaskrcnn.weights import load_torchvision_weights

    size = {"min_size": FINETUNE_SIZE, "max_size": FINETUNE_SIZE}
    fns = {}
    # a tiny learning rate: repeated steps on one batch must not drift far from the starting point
    if "ours" in sides:
        model = load_torchvision_weights(path, trainable_backbone_layers=3, **size)
        opt = SGD(model.trainable_parameters(), lr=1e-5, momentum=0.9, weight_decay=1e-4)

        def ours():
            model.forward_train(images, targets)
            opt.zero_grad()
            model.backward()
            opt.step()

        fns["ours"] = ours
    if "torch" in sides:
        tmodel = torchvision_resnet50_fpn(FINETUNE_CLASSES, 3, **size)
        tmodel.load_state_dict(torch.load(path, weights_only=True), strict=True)
        tmodel.train()
        topt = torch.optim.SGD([p for p in tmodel.parameters() if p.requires_grad], lr=1e-5, momentum=0.9,
                               weight_decay=1e-4)
        timgs, ttgts = torch_inputs([im.astype(np.float32) / 255 for im in images], targets)

        def theirs():
            losses = tmodel(timgs, ttgts)
            topt.zero_grad()
            sum(losses.values()).backward()
            topt.step()

        fns["torch"] = theirs
    return fns


def _memory_status() -> dict:
    with open("/proc/self/status") as f:
        fields = (ln.split(":", 1) for ln in f)
        return {k: int(v.split()[0]) * 1024 for k, v in fields if k in ("VmRSS", "VmHWM")}


def finetune_step_memory(side: str, path: str, threads: int) -> None:
    """Run in a fresh process per side (``python -c``): one warm-up step, then reset the kernel's peak
    RSS counter (``/proc/self/clear_refs``) and run one measured step; print JSON with the resident
    memory just before the step and its peak during the step, in bytes."""
    import json

    import torch

    torch.set_num_threads(threads)
    _set_numba_threads(threads)
    images, targets = _finetune_batch()
    step = _finetune_sides(path, images, targets, sides=(side,))[side]
    step()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # 5: reset VmHWM (the peak resident set) to the current RSS
    before = _memory_status()["VmRSS"]
    step()
    print(json.dumps({"before": before, "peak": _memory_status()["VmHWM"]}))


def _finetune_memory(side: str, path: str, threads: int) -> dict:
    import json
    import os
    import subprocess
    import sys

    # Fixed mmap threshold: glibc then returns every large array to the system when it is freed, so the
    # RSS just before the step holds no memory left over from the warm-up, and the peak is the step's.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    code = ("from minimaskrcnn.bench import finetune_step_memory; "
            f"finetune_step_memory({side!r}, {path!r}, {threads})")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_finetune(threads: int, repeat: int) -> None:
    """One fine-tuning step of ``maskrcnn_resnet50_fpn`` — forward, hand-written backward, SGD update —
    against torchvision's, float32, batch 2 of 512×512 photos with 3 instances each, the same weights
    (torchvision's model at random initialisation, 4 classes; nothing is downloaded), the same frozen
    layers (``trainable_backbone_layers=3``: conv1 and layer1 frozen, FrozenBatchNorm everywhere) and
    torchvision's samplers (256 anchors, 512 RoIs per image; the draws differ between the sides).

    Time: best of ``repeat`` steps per side, the sides alternating. Memory: each side in its own fresh
    process, after one warm-up step: the resident set just before the measured step and its peak
    during it (the kernel's VmHWM, reset before the step), so model weights, libraries and the
    interpreter are counted in both (each process imports torch; only its own side's model is
    built); the difference is what the step itself holds at its peak."""
    import os
    import tempfile

    import torch

    from minimaskrcnn.model.torch_reference import torchvision_resnet50_fpn

    print(f"finetune step, maskrcnn_resnet50_fpn, float32, {threads} thread(s) each; "
          f"torch {torch.__version__}, {_set_blas_threads(threads)}")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "maskrcnn_resnet50_fpn_random.pth")
        torch.save(torchvision_resnet50_fpn(FINETUNE_CLASSES, 3).state_dict(), path)
        images, targets = _finetune_batch()
        fns = _finetune_sides(path, images, targets)
        wall, cpu = _interleaved_best(fns, repeat, block=1)
        del fns
        report("train step, 2 images 512x512, conv1+layer1 frozen", wall["ours"], wall["torch"])
        print(f"{'  (process CPU time, all threads)':<48s} ours {cpu['ours'] * 1e3:9.2f} ms   "
              f"torch {cpu['torch'] * 1e3:9.2f} ms   ours/torch {cpu['ours'] / cpu['torch']:6.2f}x")
        mem = {side: _finetune_memory(side, path, threads) for side in ("ours", "torch")}
    mib = 2.0 ** 20
    for side, m in mem.items():
        print(f"peak memory of one step, {side:<5s}: {m['peak'] / mib:8.0f} MiB resident at the peak, "
              f"{(m['peak'] - m['before']) / mib:8.0f} MiB above the {m['before'] / mib:.0f} MiB "
              "before the step")
    ratio = (mem["ours"]["peak"] - mem["ours"]["before"]) / (mem["torch"]["peak"] - mem["torch"]["before"])
    print(f"step memory ours/torch {ratio:.2f}x (above the resident set before the step)")


TARGETS["finetune"] = bench_finetune


# ---- roofline: achieved GFLOP/s against this machine's sgemm rate -----------------------------------

# GEMMs (M, K, N) = (C_out, C_in·kH·kW, columns) of the convolutions that dominate the three workloads:
# the shapes model's 3×3 convs on 64 and 256 channels, ResNet-50's 3×3 convs on 128 and 256 channels
# and a bottleneck's 1×1 expansion 256→1024, each over one chunk of 4096 output positions (the column
# chunk of minimaskrcnn.nn._conv).
SGEMM_SHAPES = ((64, 576, 4096), (256, 2304, 4096), (128, 1152, 4096), (1024, 256, 4096))


def _sgemm_rates(repeat: int) -> list[tuple[tuple, float]]:
    """(shape, GFLOP/s) of numpy's float32 matmul (its BLAS, at the thread count already set) for each
    of ``SGEMM_SHAPES``: best of ``repeat`` calls after a warm-up."""
    import numpy as np

    rng = np.random.default_rng(0)
    rates = []
    for m, k, n in SGEMM_SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        time.sleep(0.3)  # let other thread pools stop spinning (see _interleaved_best)
        t = best_time(lambda a=a, b=b, c=c: np.matmul(a, b, out=c), max(repeat, 3))
        rates.append(((m, k, n), 2 * m * k * n / t / 1e9))
    return rates


def _roofline_row(name: str, flops: float, wall: dict, peak: float) -> None:
    """One workload: its counted GFLOP, then per side the time, achieved GFLOP/s and fraction of the
    sgemm rate ``peak`` (GFLOP/s)."""
    print(f"{name}: {flops / 1e9:.2f} GFLOP")
    for side in ("ours", "torch"):
        rate = flops / wall[side] / 1e9
        print(f"    {side:<6s} {wall[side] * 1e3:9.1f} ms   {rate:7.1f} GFLOP/s   "
              f"{rate / peak:6.1%} of sgemm")
    print(f"    ours/torch {wall['ours'] / wall['torch']:.2f}x")


def _torch_flops(fn) -> float:
    """FLOPs of ``fn()`` as torch's own counter (torch.utils.flop_counter) sees them: a cross-check
    of our count on the torch side (its sampled RoIs differ from ours, so the two agree to a few %)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _resnet50_pair(**kwargs):
    """torchvision's maskrcnn_resnet50_fpn (random weights, FrozenBatchNorm2d body, 91 classes; nothing
    is downloaded) and our model loaded with the same weights, both built with the torchvision keyword
    arguments ``kwargs`` (``min_size``, ``box_detections_per_img`` ...)."""
    import torch
    import torchvision
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    from minimaskrcnn.weights import build_model, load_state_dict_named, torchvision_config

    torch.manual_seed(0)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    tmodel = torchvision.models.detection.MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=91,
                                                   **kwargs)
    with torch.no_grad():  # as bench resnet50: detections pass the score threshold, masks run on 100
        tmodel.roi_heads.box_predictor.cls_score.weight.mul_(30)
    model = build_model(torchvision_config(**kwargs))
    load_state_dict_named(model, {k: v.numpy() for k, v in tmodel.state_dict().items()}, "torchvision model")
    return model, tmodel


# Fine-tuning as torchvision's trainable_backbone_layers=3: the stem and layer1 are frozen (no dW), and
# so are the gradients of the image and of layer1's output (C2): no layer reading them needs a dx.
_FROZEN_PREFIXES = ("backbone.body.conv1.", "backbone.body.layer1.")
_READS_C2 = ("backbone.body.layer2.0.conv1.", "backbone.body.layer2.0.downsample.0.",
             "backbone.fpn.inner_blocks.0.")


def _finetune_skips(model) -> tuple[set, set]:
    """(no_dw, no_dx): ids of the weight arrays whose dW / dx a fine-tuning step skips."""
    no_dw, no_dx = set(), set()
    for name, p in model.named_parameters():
        if name.startswith(_FROZEN_PREFIXES):
            no_dw.add(id(p.data))
            no_dx.add(id(p.data))
        elif name.startswith(_READS_C2):
            no_dx.add(id(p.data))
    return no_dw, no_dx


def _photo_and_target():
    """matplotlib's grace_hopper.jpg (600×512) and one "person" (label 1) object: an ellipse
    inscribed in a box around the figure."""
    import matplotlib.cbook as cbook
    import numpy as np
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        image = np.asarray(im.convert("RGB")).copy()
    h, w = image.shape[:2]
    x1, y1, x2, y2 = 0.15 * w, 0.1 * h, 0.85 * w, 1.0 * h
    yy, xx = np.mgrid[:h, :w] + 0.5
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    ys, xs = np.nonzero(mask)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    return image, {"boxes": box, "labels": np.array([1], np.int64), "masks": mask[None]}


def bench_roofline(threads: int, repeat: int) -> None:
    """Floating-point work of three workloads, counted from the shapes of every conv / linear call of
    one real run of ours (``minimaskrcnn.nn.flops.count_flops``), divided by the time of ours and of
    torch(vision): achieved GFLOP/s and its fraction of this machine's sgemm rate (numpy's BLAS, the
    same thread count, on GEMMs shaped like those convs).

    1. the shapes preset's training step (batch 8 of 128×128, the trained weights when shipped);
    2. maskrcnn_resnet50_fpn inference on one photo resized to 938×800 (as bench resnet50);
    3. an R50-FPN fine-tuning step on that photo (one object; conv1 and layer1 frozen, as
       torchvision's trainable_backbone_layers=3).

    With MINIMASKRCNN_FAST=1 the shapes batch is 2 and the R50-FPN runs on a 160-pixel image with few
    proposals and detections (a smoke test of the command, not a measurement)."""
    import os

    import numpy as np
    import torch

    from minimaskrcnn.config import shapes
    from minimaskrcnn.datasets.shapes import shapes_dataset
    from minimaskrcnn.datasets.transforms import batch_of
    from minimaskrcnn.model import MaskRCNN
    from minimaskrcnn.model.torch_reference import torch_inputs
    from minimaskrcnn.nn.flops import count_flops
    from minimaskrcnn.weights import SHIPPED_MODEL, load_model

    fast = os.environ.get("MINIMASKRCNN_FAST") == "1"
    blas = _set_blas_threads(threads)
    print(f"roofline, float32, {threads} thread(s) each; torch {torch.__version__}, {blas}")

    # 1. The limit: numpy's sgemm on conv-shaped products, probed again after each workload (a busy
    #    machine can slow any one probe); the best rate seen in the run is the limit.
    rates = _sgemm_rates(repeat)
    for (m, k, n), rate in rates:
        print(f"sgemm ({m}x{k}) @ ({k}x{n}): {rate:7.1f} GFLOP/s")
    peaks = [max(rate for _, rate in rates)]
    rows = []  # (name, FLOPs, wall times): printed at the end, against the best sgemm rate

    # 2. The shapes training step.
    cfg = shapes()
    batch = 2 if fast else 8
    images, targets = batch_of(shapes_dataset(batch, seed=0), range(batch))
    model = MaskRCNN(cfg, np.random.default_rng(0))
    weights = "initial weights"
    if SHIPPED_MODEL.exists():
        model.load_state_dict(load_model(SHIPPED_MODEL).state_dict())
        weights = "trained weights"
    with count_flops() as counted:
        model.forward_train(images, targets, np.random.default_rng(1))
        model.backward()
    model.zero_grad()
    flops = counted.flops()
    wall, _ = _time_train_step(cfg, model, images, targets, repeat)
    rows.append((f"shapes train step, batch {batch}, {weights} (forward {flops['forward'] / 1e9:.2f} + dx "
                 f"{flops['dx'] / 1e9:.2f} + dW {flops['dw'] / 1e9:.2f})", flops["total"], wall))
    peaks.append(max(rate for _, rate in _sgemm_rates(1)))

    # 3. R50-FPN inference.
    # smoke test: a small image, few proposals, RoI samples and detections
    kwargs = dict(min_size=160, max_size=200, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                  rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, box_batch_size_per_image=32,
                  box_detections_per_img=5) if fast else {}
    min_size = kwargs.get("min_size", 800)
    model, tmodel = _resnet50_pair(**kwargs)
    tmodel.eval()
    image, target = _photo_and_target()
    timage = [torch.from_numpy(image).permute(2, 0, 1).float() / 255]
    with count_flops() as counted:
        model.predict([image])
    flops = counted.flops()["total"]

    def ours_predict():
        model.predict([image])

    def torch_predict():
        with torch.no_grad():
            tmodel(timage)

    wall, _ = _interleaved_best({"ours": ours_predict, "torch": torch_predict}, repeat, block=1)
    with torch.no_grad():
        check = _torch_flops(lambda: tmodel(timage))
    rows.append((f"R50-FPN inference, 600x512 photo -> {min_size}-pixel short side "
                 f"(torch's own counter: {check / 1e9:.2f} GFLOP)", flops, wall))
    peaks.append(max(rate for _, rate in _sgemm_rates(1)))

    # 4. R50-FPN fine-tuning step: forward in training mode, backward, SGD update.
    from minimaskrcnn.model.backbone import freeze_body
    from minimaskrcnn.nn.optim import SGD

    tmodel.train()
    for name, p in tmodel.named_parameters():
        p.requires_grad_(not name.startswith(_FROZEN_PREFIXES))
    topt = torch.optim.SGD([p for p in tmodel.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)
    timgs, ttgts = torch_inputs([image.astype(np.float32) / 255], [target])
    freeze_body(model.backbone.body, 3)  # as load_torchvision_weights(trainable_backbone_layers=3)
    opt = SGD(model.trainable_parameters(), lr=1e-5, momentum=0.9)
    with count_flops() as counted:
        model.forward_train([image], [target], np.random.default_rng(1))
        model.backward()
    model.zero_grad()
    flops = counted.flops()  # what the step computed: frozen layers' dW and the dx nobody reads skipped
    no_dw, no_dx = _finetune_skips(model)
    extra = flops["total"] - counted.flops(no_dw=no_dw, no_dx=no_dx)["total"]

    def ours_step():
        model.forward_train([image], [target])
        opt.zero_grad()
        model.backward()
        opt.step()

    def torch_step():
        losses = tmodel(timgs, ttgts)
        topt.zero_grad()
        sum(losses.values()).backward()
        topt.step()

    wall, _ = _interleaved_best({"ours": ours_step, "torch": torch_step}, repeat, block=1)
    check = _torch_flops(torch_step)
    rows.append((f"R50-FPN fine-tuning step, 1 image, conv1+layer1 frozen (forward "
                 f"{flops['forward'] / 1e9:.2f} + dx {flops['dx'] / 1e9:.2f} + dW {flops['dw'] / 1e9:.2f}; "
                 f"torch's own counter: {check / 1e9:.2f} GFLOP)", flops["total"], wall))
    peaks.append(max(rate for _, rate in _sgemm_rates(1)))

    peak = max(peaks)
    print(f"sgemm rate (best of {len(peaks)} probes over the run): {peak:.1f} GFLOP/s — the limit the "
          "fractions below are of")
    print("FLOPs = 2 x multiply-adds of every conv2d / conv_transpose2d / linear call (forward, dx, dW)")
    for name, flops, wall in rows:
        _roofline_row(name, flops, wall, peak)
    if extra > 0:  # work the freezing rule says a fine-tuning step need not do
        print(f"    (ours also computes {extra / 1e9:.2f} GFLOP of frozen layers' dW or unread dx, included "
              "in its time, not in its rate)")
    print("times: best of --repeat, ours and torch alternated; achieved GFLOP/s = counted FLOPs / time")


TARGETS["roofline"] = bench_roofline


def main(target: str, threads: int = 2, repeat: int = 5) -> int:
    if target not in TARGETS:
        raise SystemExit(f"bench target {target!r} is not available yet (known: {sorted(TARGETS)})")
    _set_numba_threads(threads)
    _import_torch(threads)
    import numba

    from minimaskrcnn.nn._launch import parallel_start_cost

    # the layer that runs our parallel kernels (see minimaskrcnn/__init__): TBB, when installed, is faster
    print(f"Numba threading layer: {numba.threading_layer()} (an empty parallel kernel starts in "
          f"{parallel_start_cost() * 1e6:.1f} µs, median of 2,000 calls)")
    TARGETS[target](threads=threads, repeat=repeat)
    return 0
