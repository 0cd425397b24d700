"""Test support: random networks and targets, shared small modules, the fuzz case runner,
determinism checks."""
