"""The Kubernetes operator for the Raft-replicated exchange.

Pure modules (``names``, ``spec``, ``crd``, ``render``, ``monitoring``,
``decisions``) turn an ``ExchangeCluster`` into desired objects and the next
action; ``handlers`` is the thin kopf layer that applies them.
"""
