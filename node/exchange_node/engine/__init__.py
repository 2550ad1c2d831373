"""The exchange state machine: commands, events, the matching engine, snapshots.

Deterministic by construction: no clock, no randomness, no environment. The
same committed log gives byte-identical state (and ``state_hash``) on every
replica.
"""
