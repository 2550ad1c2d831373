import sys
from pathlib import Path

from hypothesis import settings

# The history generator lives next to the tests (import mode is importlib).
sys.path.insert(0, str(Path(__file__).parent))

# The same examples on every run, bounded in time.
settings.register_profile("chaos", derandomize=True, deadline=None, print_blob=True)
