"""Trace readers: the Alibaba openb format, a generic CSV/Parquet schema, synthetic traces."""
