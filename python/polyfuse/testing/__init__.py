"""Test support: random networks and targets, the fuzz case runner, determinism checks."""
