"""Settings for the whole test run (``pytest`` from the repository root).

``MINIMASKRCNN_FAST=1`` — the notebooks under ``notebooks/`` read this environment variable and, when
it is ``"1"``, shrink their training budgets, timing repetitions and sweeps so that running them top to
bottom inside the test suite (through nbmake, see ``[tool.pytest.ini_options]`` in pyproject.toml)
stays short. Their committed outputs come from a full run without it. Set here with ``setdefault``, so
``MINIMASKRCNN_FAST=0 pytest notebooks`` runs the notebooks at full size; the Jupyter kernels that
nbmake starts inherit this process's environment.
"""

from __future__ import annotations

import os

os.environ.setdefault("MINIMASKRCNN_FAST", "1")
