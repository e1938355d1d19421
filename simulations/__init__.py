"""Deterministic simulations of many mounts, and live load runs of the same workloads."""
