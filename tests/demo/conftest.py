"""tests/demo: make ``demo_support`` importable and provide the ``cluster`` fixture."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from demo_support import cluster  # noqa: E402,F401  (the fixture)
