"""ClickHouse storage: schema migrations, row mapping, the batching sink and read queries."""
