"""ClickHouse storage, both directions: writing (migrations, rows.py, the batching sink) and reading (reader.py
over sources.py; wire.py maps stored rows back to wire models; filters.py builds WHERE clauses)."""
