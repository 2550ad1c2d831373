import sys
from pathlib import Path

from hypothesis import settings

# The reference model and command generators live next to the tests (import mode is importlib).
sys.path.insert(0, str(Path(__file__).parent))

# Deterministic property tests: the same examples on every run, bounded in time.
settings.register_profile("engine", derandomize=True, deadline=None, print_blob=True)
