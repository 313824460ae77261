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
