"""Session (conversation) assembly: pure state transitions (state.py) and turn/transcript text (transcript.py)."""

from pipeline.sessions.state import (
           SessionConfig,
           add_turns,
           close_due,
           deadline_ns,
           mark_finished,
           open_turns,
           snapshot,
)
from pipeline.sessions.transcript import render_transcript, turn_from_trace

__all__ = ["SessionConfig", "add_turns", "close_due", "deadline_ns", "mark_finished", "open_turns", "render_transcript", "snapshot",
           "turn_from_trace"]
