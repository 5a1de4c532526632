"""Session (conversation) assembly: pure state transitions (state.py). A turn's text and the transcript are
contracts (`pipeline.contracts.transcript`), as is the `Conversation` a session scorer gets."""

from pipeline.sessions.state import (
           SessionConfig,
           add_turns,
           close_due,
           deadline_ns,
           mark_finished,
           open_turns,
           snapshot,
)

__all__ = ["SessionConfig", "add_turns", "close_due", "deadline_ns", "mark_finished", "open_turns", "snapshot"]
