"""TEST-ONLY plant for ``test_lost_tail_scenario``: the node's recovery takes every
lost tail for a torn write (the behaviour before protocol-aware recovery).

Put on a node's ``PYTHONPATH``, Python imports it at start: no verdict says the
node must recover, so the node never calls ``RaftCore.start_recovering`` and votes
as if it never had the tail it lost. Never a product flag: the node's code is
untouched.
"""

from exchange_node.storage.verdict import RecoveryVerdict

RecoveryVerdict.must_recover = property(lambda self: False)  # type: ignore[method-assign, assignment]
