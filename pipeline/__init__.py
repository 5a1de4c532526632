"""evalstream: a streaming evaluation pipeline for LLM agents in production.

Importing this package is cheap: the SDK (`pipeline.sdk`), the wire contracts
(`pipeline.contracts`) and sampling import only pydantic, orjson and the standard library.
Faust, ClickHouse and slack-sdk load only inside the worker modules.
"""

__version__ = "0.1.0"
