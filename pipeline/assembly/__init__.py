"""Trace assembly: pure state transitions, kept in a Faust table by the assembler agent."""

from pipeline.assembly.deadlines import DeadlineIndex
from pipeline.assembly.state import AssemblyConfig, MergeOutcome, close_trace, due_action, merge_spans

__all__ = ["AssemblyConfig", "DeadlineIndex", "MergeOutcome", "close_trace", "due_action", "merge_spans"]
