"""Kubernetes adapter (live scheduler and node agent); built on placement/."""
