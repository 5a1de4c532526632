"""OpenTelemetry in: keep your OpenTelemetry instrumentation and send its spans to evalstream.

    mapping    an OpenTelemetry span -> our wire span (pure: stdlib and orjson)
"""
