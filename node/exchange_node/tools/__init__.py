"""Tools around the node: the local cluster, the demo, certificates and every benchmark.

Nothing in the node's own packages (raft/, storage/, engine/, transport/, server/)
imports from here; the tools import the node.
"""
