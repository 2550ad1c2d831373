import sys
from pathlib import Path

# The in-test network helper lives next to the tests (import mode is importlib).
sys.path.insert(0, str(Path(__file__).parent))
