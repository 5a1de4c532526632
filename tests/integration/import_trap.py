"""A module a hostile span names as its scorer: importing it leaves a mark, so a test can prove nobody did."""

import os
from pathlib import Path

_MARK = os.environ.get("EVALSTREAM_TEST_IMPORT_TRAP")
if _MARK:
    Path(_MARK).write_text("imported")

from scorers import Score, Scorer


class Trap(Scorer):
    name = "trap"

    def score(self, target: object) -> Score:
        return Score(value=True)
