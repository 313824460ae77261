"""Smoke test of ``minimaskrcnn bench roofline`` (tiny sizes; nothing here asserts on a time)."""

import re

from minimaskrcnn import bench


def test_roofline_runs_and_reports_every_workload(torch, torchvision, monkeypatch, capsys):
    monkeypatch.setenv("MINIMASKRCNN_FAST", "1")
    assert bench.main("roofline", threads=1, repeat=1) == 0
    out = capsys.readouterr().out
    assert re.search(r"sgemm rate \(best of 4 probes over the run\): [0-9.]+ GFLOP/s", out)
    for workload in ("shapes train step", "R50-FPN inference", "R50-FPN fine-tuning step"):
        assert workload in out
    gflops = [float(g) for g in re.findall(r": ([0-9.]+) GFLOP\n", out)]
    assert len(gflops) == 3 and all(g > 0 for g in gflops)
    assert len(re.findall(r"of sgemm", out)) == 6  # ours and torch for each workload
    # The fine-tuning step is counted as run with conv1 + layer1 frozen: no frozen dW, no unread dx.
    assert "frozen layers' dW" not in out
    dw = re.search(r"dW ([0-9.]+); torch's own counter", out)
    assert dw and float(dw.group(1)) > 0


def test_conv_reports_ratios_and_achieved_rates(torch, torchvision, capsys):
    assert bench.main("conv", threads=1, repeat=1) == 0
    out = capsys.readouterr().out
    # each benchmark shape names the method "auto" took, then its ratio and its achieved rate per side
    assert len(re.findall(r"conv2d fwd\+bwd \S+ k3 pad1 \S+ \((winograd4|winograd|im2col)\) +ours", out)) == 2
    peak = re.search(r"against this machine's sgemm rate, ([0-9.]+) GFLOP/s", out)
    assert peak and float(peak.group(1)) > 0
    rates = re.findall(r"(ours|torch) +([0-9.]+) GFLOP/s \( *[0-9.]+%\)", out)
    assert [side for side, _ in rates] == ["ours", "torch"] * 2 and all(float(r) > 0 for _, r in rates)


def test_interleaved_best_keeps_every_sample_and_the_spread_line_reads_them():
    calls = {"ours": 0, "torch": 0}

    def make(name):
        def fn():
            calls[name] += 1
        return fn

    samples = {}
    wall, cpu = bench._interleaved_best({"ours": make("ours"), "torch": make("torch")}, repeat=2,
                                        block=3, pause=0.0, samples=samples)
    assert calls == {"ours": 7, "torch": 7}  # one warm-up call each, not sampled
    for name in ("ours", "torch"):
        assert len(samples[name]) == 6
        assert wall[name] == min(w for w, _ in samples[name])
        assert cpu[name] == min(c for _, c in samples[name])
    line = bench._spread_line({"ours": [(0.2, 0.3), (0.1, 0.25), (0.4, 0.35)],
                               "torch": [(0.5, 0.9), (0.6, 1.0), (0.55, 0.95)]})
    assert "(all 3 steps per side)" in line
    assert "ours median  200.0 ms (100-400), CPU 300 ms" in line
    assert "torch median  550.0 ms (500-600), CPU 950 ms" in line


def test_train_reports_the_best_ratio_cpu_and_spread(torch, torchvision, capsys):
    assert bench.main("train", threads=1, repeat=1) == 0
    out = capsys.readouterr().out
    start = re.search(r"^Numba threading layer: (tbb|workqueue) \(an empty parallel kernel starts in "
                      r"([0-9.]+) µs, median of 2,000 calls\)$", out, re.M)
    assert start and float(start.group(2)) > 0
    assert re.search(r"train step, initial weights +ours +[0-9.]+ ms +torch +[0-9.]+ ms +ours/torch", out)
    assert len(re.findall(r"\(all 3 steps per side\) +ours median +[0-9.]+ ms \(\d+-\d+\), CPU \d+ ms;  "
                          r"torch median", out)) == len(re.findall(r"^train step, .* ours/torch", out, re.M))
