"""TraceBatch: the trace versions one assembler event closed (a tick's, or a spans message's whole traces),
with the routing decisions made for them, in one message on `evalstream.traces.v2`. The sink stores both
from it, so a close costs one message whatever the number of rules."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.contracts.jobs import Decision
from pipeline.contracts.spans import _Wire
from pipeline.contracts.traces import Trace


class TraceBatch(_Wire):
    v: Literal[1] = 1
    traces: list[Trace]
    # Every (rule, trace) decision of routing these traces; older assemblers routed in a separate hop and
    # left it empty.
    decisions: list[Decision] = Field(default_factory=list)
