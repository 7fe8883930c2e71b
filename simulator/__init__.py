"""Tessellate's trace-driven simulator: replays workloads through the placement core."""
