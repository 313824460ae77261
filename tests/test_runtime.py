"""The process-wide settings ``import minimaskrcnn`` makes (see ``minimaskrcnn/__init__``), each
checked in a fresh interpreter: they act when libraries load."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys
if os.environ.get("PROBE_WITHOUT_TBB"):  # as if TBB were not installed: its Numba layer cannot load
    sys.modules["numba.np.ufunc.tbbpool"] = None
import minimaskrcnn
from minimaskrcnn.nn import _conv_kernels
import numba, numpy as np
numba.set_num_threads(numba.get_num_threads())  # starts the pool
report = {"layer": numba.threading_layer()}
import ctypes
class MallInfo2(ctypes.Structure):  # glibc >= 2.33
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks",
                                                     "keepcost")]
mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = MallInfo2
a = np.ones(64 << 18, np.float32)  # 64 MiB, far above glibc's default mmap threshold
report["mmapped_bytes"] = mallinfo2().hblkhd  # memory handed out as separate mmaps (unmapped on free)
print(json.dumps(report))
"""


def _probe(**env_overrides) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY", "GOMP_SPINCOUNT",
                        "OMP_WAIT_POLICY", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    env.update(env_overrides)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tbb_installed() -> bool:
    """Whether the tbb wheel is installed; in CI it must be (the test extra has it), else the TBB
    layer would go untested."""
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("CI"):
            pytest.fail("tbb (in the test extra) is not installed: the TBB layer would go untested")
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and GNU OpenMP settings")
def test_import_picks_tbb_and_reuses_freed_memory():
    report = _probe()
    # TBB when installed (pip's wheel: libtbb loaded from the environment's lib folder), else workqueue
    assert report["layer"] == ("tbb" if _tbb_installed() else "workqueue")
    # a 64 MiB array comes from the heap (kept for reuse when freed), not from its own mmap
    assert report["mmapped_bytes"] < (64 << 20), report


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and GNU OpenMP settings")
def test_a_user_asking_for_tbb_gets_it_from_the_pip_wheel():
    if not _tbb_installed():
        pytest.skip("tbb not installed")
    assert _probe(NUMBA_THREADING_LAYER="tbb")["layer"] == "tbb"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and GNU OpenMP settings")
def test_without_tbb_the_layer_is_workqueue_not_openmp():
    report = _probe(PROBE_WITHOUT_TBB="1")
    assert report["layer"] == "workqueue"  # no spinning OpenMP workers to fight OpenBLAS's


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and GNU OpenMP settings")
def test_the_users_own_settings_are_left_alone():
    report = _probe(NUMBA_THREADING_LAYER="omp", MALLOC_MMAP_THRESHOLD_="131072")
    assert report["layer"] == "omp"
    assert report["mmapped_bytes"] >= (64 << 20), report  # glibc's own behaviour: its own mmap
