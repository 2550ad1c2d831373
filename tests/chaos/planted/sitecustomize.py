"""TEST-ONLY: a deliberately broken node for the end-to-end chaos run (test_run_broken.py).

Put this directory on ``PYTHONPATH`` with ``EXCHANGE_TEST_PLANT=double_fill`` and
every Python process started with that environment (the chaos runner and the
node processes it launches, which inherit it) gets the engine's position update
for a fill that reduces a position applied twice. Deterministic, so every replica
agrees on the wrong positions: only the history checker can tell (a position that
is not the sum of its fills). Never a product flag: the node's code is untouched.
"""

from __future__ import annotations

import os

if os.environ.get("EXCHANGE_TEST_PLANT") == "double_fill":
    from exchange_node.engine import engine as _engine

    _original = _engine._apply_fill

    def _apply_fill_twice(position: object, signed_quantity: int, price: int) -> None:
        _original(position, signed_quantity, price)
        _original(position, signed_quantity, price)

    _engine._apply_fill = _apply_fill_twice
