import os
import sys

# The helper modules beside these tests (storage_workload) are imported by name,
# here and by the crash child run as a script from this directory.
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
