"""Trading agents that exercise a cluster through its public API only."""
