"""Names of the built-in synthetic workloads (kept import-light: the CLI reads them at start)."""

SYNTHETIC_KINDS = ("openb", "mig", "mixed-topology", "nvswitch-spot", "multi-tenant")
"""`openb`: the openb-like mix; `mig`: MIG inference + whole-GPU training; the last two are
the topology scenarios of simulator/scenarios.py; `multi-tenant`: three teams with queues,
priorities and pod groups (simulator/traces/tenants.py)."""
