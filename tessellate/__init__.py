"""The `tessellate` command."""
