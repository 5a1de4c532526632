"""`evalstream backfill`: stored traces sent back through the live rules and scorers (docs/backfill.md).

    spec.py        what a backfill covers, and its identity
    checkpoint.py  where it got to (resumable), one process per backfill
    stored.py      stored traces read back in pages, as the wire form of Trace
    publisher.py   many traces per message on evalstream.backfill.v1
    run.py         the command: read, send, checkpoint, wait for the decisions
"""

from pipeline.backfill.checkpoint import Checkpoint, checkpoint_path
from pipeline.backfill.run import BackfillOptions, BackfillResult, load_backfill_rules, run_backfill
from pipeline.backfill.spec import BackfillSpec, check_rules

__all__ = [
    "BackfillOptions",
    "BackfillResult",
    "BackfillSpec",
    "Checkpoint",
    "check_rules",
    "checkpoint_path",
    "load_backfill_rules",
    "run_backfill",
]
