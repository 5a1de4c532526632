"""LLM-as-a-judge and agent-as-a-judge scorers, and the shared judge client.

Importing this package does not import litellm: the client imports it on its first call.
"""
