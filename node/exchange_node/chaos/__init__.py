"""Chaos runs you can trust: the recorded history and the checker that judges it.

``history``: the JSON-lines record format, its writer and reader.
``lineage``: which operations concern which order.
``order_model`` and ``linearizability``: the per-order model and the search.
``checker``: every check, and the JSON-ready result. ``cli``: ``exchange chaos check``.
"""
