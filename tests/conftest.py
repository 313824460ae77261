"""Shared fixtures.

The oracles (torch, torchvision, pycocotools) are test-only dependencies. Locally a missing oracle
skips the tests that need it; when the ``CI`` environment variable is set, a missing oracle is a
failure, so an oracle test can never be silently skipped in CI.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def require(module_name: str):
    """Import an oracle module, or skip (locally) / fail (CI) when it is missing."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        if os.environ.get("CI"):
            pytest.fail(f"oracle {module_name!r} is required in CI but cannot be imported: {exc}")
        pytest.skip(f"{module_name} not installed")


@pytest.fixture(scope="session")
def torch():
    t = require("torch")
    t.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return t


@pytest.fixture(scope="session")
def torchvision():
    require("torch")
    return require("torchvision")


@pytest.fixture(scope="session")
def pycocotools():
    require("pycocotools.mask")
    require("pycocotools.coco")
    require("pycocotools.cocoeval")
    return require("pycocotools")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
