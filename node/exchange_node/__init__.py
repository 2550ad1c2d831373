"""A Raft-replicated exchange node: consensus core, storage, engine, servers and CLI."""

__version__ = "0.1.0"
