"""A second SDK-instrumented service, run as its own process by the distributed-trace tests.

    python -m tests.integration.sdk_callee BOOTSTRAP PROJECT FLUSH_INTERVAL_S

It speaks JSON lines on stdin/stdout: it prints {"ready": true} once its exporter is connected and idle (a
warm-up trace was published, so the next spans wait a whole flush interval); {"headers": {...}} handles one
request under `continue_trace` (a server span with two children) and answers with the span ids; "stats"
answers with the exporter's counters; "quit" shuts the tracer down (publishing what is queued) and exits.
"""

from __future__ import annotations

import json
import sys

from pipeline.sdk import Tracer
from pipeline.sdk.propagation import continue_trace


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(bootstrap: str, project: str, flush_interval_s: float) -> None:
    tracer = Tracer(project, service="callee-svc", bootstrap_servers=bootstrap, flush_interval_s=flush_interval_s)
    with tracer.span("warm-up"):
        pass
    tracer.flush(timeout_s=30)  # a pass just ended: spans emitted now wait for the next one
    reply({"ready": True, "stats": tracer.stats()})
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            reply(tracer.stats())
        elif command == "quit":
            break
        elif command:
            headers = json.loads(command)["headers"]
            with continue_trace(headers), tracer.span("handle inventory request") as server:
                with tracer.span("lookup stock", "tool") as lookup:
                    pass
                with tracer.span("reserve items") as reserve:
                    pass
            reply({"server": server.span_id, "children": [lookup.span_id, reserve.span_id]})
    tracer.shutdown()
    reply({"stopped": True, "stats": tracer.stats()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
