"""Shared setup for the operator tests.

The operator package is installed by `pip install -e .`; an environment
installed before operator/ existed still finds it through this path entry.
The folder itself goes on sys.path so tests can import their helper modules
(kmock_harness, pss_restricted, fixtures) under --import-mode=importlib.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

if importlib.util.find_spec("exchange_operator") is None:
    sys.path.insert(0, str(ROOT / "operator"))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
