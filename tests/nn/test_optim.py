"""SGD, the LR schedule and gradient clipping, step for step against torch."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from minimaskrcnn.nn.optim import SGD, LRSchedule, clip_grad_norm


class P:
    """A minimal parameter (the optimiser only needs ``.data`` and ``.grad``)."""

    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)


def _params(rng, dtype=np.float64):
    return [P(rng.standard_normal(s).astype(dtype)) for s in [(3, 4), (5,), (2, 2, 3)]]


_OPTIONS = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n)
    for m, d, wd, n in itertools.product([0.0, 0.9], [0.0, 0.3], [0.0, 1e-2], [False, True])
    if not (n and (m == 0 or d != 0))
]


def test_sgd_golden_momentum():
    # lr 0.1, momentum 0.5, gradient 1 at every step, θ0 = 0:
    #   step 1: v = g = 1 (first step copies g)       θ = 0 − 0.1·1 = −0.1
    #   step 2: v = 0.5·1 + 1 = 1.5                     θ = −0.1 − 0.15 = −0.25
    #   step 3: v = 0.5·1.5 + 1 = 1.75                  θ = −0.25 − 0.175 = −0.425
    p = P(np.zeros(1))
    opt = SGD([p], lr=0.1, momentum=0.5)
    for expected in (-0.1, -0.25, -0.425):
        p.grad[:] = 1.0
        opt.step()
        assert p.data[0] == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("opts", _OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_sgd_matches_torch(torch, opts):
    rng = np.random.default_rng(3)
    ours = _params(rng)
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt = SGD(ours, lr=0.05, **opts)
    t_opt = torch.optim.SGD(theirs, lr=0.05, **opts)
    for step in range(5):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.data.shape)
            p.grad[...] = g
            t.grad = torch.tensor(g)
        if step == 3:  # a schedule changing the learning rate mid-run
            opt.lr = 0.01
            t_opt.param_groups[0]["lr"] = 0.01
        opt.step()
        t_opt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_sgd_float32_stays_float32(torch):
    rng = np.random.default_rng(4)
    ours = _params(rng, np.float32)
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt = SGD(ours, lr=0.1, momentum=0.9, weight_decay=1e-4)
    t_opt = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(3):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.data.shape).astype(np.float32)
            p.grad[...] = g
            t.grad = torch.tensor(g)
        opt.step()
        t_opt.step()
    for p, t in zip(ours, theirs):
        assert p.data.dtype == np.float32 and opt.momentum_buffers[0].dtype == np.float32
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_sgd_state_dict_resumes_exactly():
    rng = np.random.default_rng(5)
    grads = [[rng.standard_normal(s) for s in [(3, 4), (5,), (2, 2, 3)]] for _ in range(6)]
    init = _params(rng)

    def run(steps, opt=None, params=None):
        params = params or [P(p.data.copy()) for p in init]
        opt = opt or SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
        for gs in steps:
            for p, g in zip(params, gs):
                p.grad[...] = g
            opt.step()
        return params, opt

    straight, _ = run(grads)
    first, opt = run(grads[:3])
    state = opt.state_dict()
    opt.step()  # a later step must not change the saved state (it holds copies)
    # Resume from the parameters as they were when the state was saved, with a fresh optimiser.
    at_save, _ = run(grads[:3])
    resumed_params = [P(p.data.copy()) for p in at_save]
    fresh = SGD(resumed_params, lr=123.0)  # hyper-parameters come from the state
    fresh.load_state_dict(state)
    assert fresh.lr == 0.1 and fresh.momentum == 0.9 and fresh.nesterov
    resumed, _ = run(grads[3:], opt=fresh, params=resumed_params)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.data, b.data)


def test_sgd_load_state_dict_names_bad_keys():
    params = [P(np.zeros((2, 2))), P(np.zeros(3))]
    opt = SGD(params, lr=0.1, momentum=0.9)
    state = opt.state_dict()
    state["momentum_buffer.0"] = np.zeros((3, 3))
    state["momentum_buffer.7"] = np.zeros(3)
    del state["lr"]
    with pytest.raises(ValueError) as exc:
        opt.load_state_dict(state)
    msg = str(exc.value)
    assert "'lr'" in msg and "momentum_buffer.7" in msg and "momentum_buffer.0" in msg


def test_sgd_bad_arguments():
    p = [P(np.zeros(2))]
    with pytest.raises(ValueError, match="lr"):
        SGD(p, lr=-1.0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="params"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[0\]"):
        SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="twice"):
        SGD(p + p, lr=0.1)


# ----------------------------------------------------------------------------- schedule


def test_schedule_golden():
    # warm-up over 4 steps from factor 0.1: α = step/4, factor = 0.1·(1 − α) + α
    #   step 0: 0.1, step 2: 0.1·0.5 + 0.5 = 0.55, step 4: warm-up over → 1.
    # milestones (6, 8), gamma 0.1: steps 6, 7 → 0.1×; steps ≥ 8 → 0.01×.
    s = LRSchedule(0.02, warmup_iters=4, warmup_factor=0.1, milestones=(6, 8), gamma=0.1)
    assert s.lr_at(0) == pytest.approx(0.002)
    assert s.lr_at(2) == pytest.approx(0.011)
    assert s.lr_at(4) == pytest.approx(0.02)
    assert s.lr_at(6) == pytest.approx(0.002)
    assert s.lr_at(9) == pytest.approx(0.0002)
    # cosine over 10 steps: halfway (t = 5) is (1 + cos(π/2))/2 = 1/2 of the way from min_lr to base.
    c = LRSchedule(1.0, kind="cosine", total_steps=10, min_lr=0.2)
    assert c.lr_at(0) == pytest.approx(1.0)
    assert c.lr_at(5) == pytest.approx(0.6)
    assert c.lr_at(10) == c.lr_at(25) == pytest.approx(0.2)  # held at the floor after the end


def _torch_lrs(torch, make_scheds, n):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.02)
    sched = make_scheds(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_schedule_warmup_and_steps_match_torch(torch):
    LR = torch.optim.lr_scheduler
    n = 30
    ours = LRSchedule(0.02, warmup_iters=7, warmup_factor=1 / 3, milestones=(12, 20), gamma=0.1)
    theirs = _torch_lrs(torch, lambda o: LR.ChainedScheduler([
        LR.LinearLR(o, start_factor=1 / 3, total_iters=7), LR.MultiStepLR(o, milestones=[12, 20], gamma=0.1)
    ]), n)
    np.testing.assert_allclose([ours.lr_at(i) for i in range(n)], theirs, rtol=1e-12)


def test_schedule_cosine_matches_torch(torch):
    LR = torch.optim.lr_scheduler
    n = 25
    ours = LRSchedule(0.02, kind="cosine", total_steps=n, min_lr=1e-4)
    theirs = _torch_lrs(torch, lambda o: LR.CosineAnnealingLR(o, T_max=n, eta_min=1e-4), n)
    np.testing.assert_allclose([ours.lr_at(i) for i in range(n)], theirs, rtol=1e-12)
    # With a zero floor the cosine is a pure factor, so warm-up chains multiplicatively as in torch.
    ours = LRSchedule(0.02, kind="cosine", total_steps=n, warmup_iters=5, warmup_factor=0.01)
    theirs = _torch_lrs(torch, lambda o: LR.ChainedScheduler([
        LR.LinearLR(o, start_factor=0.01, total_iters=5), LR.CosineAnnealingLR(o, T_max=n)]), n)
    np.testing.assert_allclose([ours.lr_at(i) for i in range(n)], theirs, rtol=1e-12)


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        LRSchedule(0.1, kind="linear")
    with pytest.raises(ValueError, match="total_steps"):
        LRSchedule(0.1, kind="cosine")
    with pytest.raises(ValueError, match="milestones"):
        LRSchedule(0.1, milestones=(5, 3))
    with pytest.raises(ValueError, match="warmup_factor"):
        LRSchedule(0.1, warmup_factor=0.0)
    with pytest.raises(ValueError, match="step"):
        LRSchedule(0.1).lr_at(-1)


# ----------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_grad_norm_matches_torch(torch, max_norm, norm_type):
    rng = np.random.default_rng(6)
    ours = _params(rng)
    for p in ours:
        p.grad[...] = rng.standard_normal(p.data.shape)
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    for p, t in zip(ours, theirs):
        t.grad = torch.tensor(p.grad.copy())
    total = clip_grad_norm(ours, max_norm, norm_type)
    t_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total == pytest.approx(float(t_total), rel=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_clip_grad_norm_golden():
    # Gradients (3, 4) and (0,): global norm 5; max_norm 1 scales by 1/(5 + 1e-6).
    a, b = P(np.zeros(2)), P(np.zeros(1))
    a.grad[:] = [3.0, 4.0]
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0, abs=1e-15)
    np.testing.assert_allclose(a.grad, [3 / (5 + 1e-6), 4 / (5 + 1e-6)], rtol=1e-15)
    with pytest.raises(ValueError, match="non-finite"):
        a.grad[0] = np.nan
        clip_grad_norm([a], 1.0, error_if_nonfinite=True)
