"""pipeline/worker/transport.py: the assignor keeps a worker consuming when Faust's own check of an assignment
fails (members of different roles in one group), instead of letting the assertion stop its coordinator."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from faust.assignor import PartitionAssignor

from pipeline.rules import parse_rules
from pipeline.settings import Settings
from pipeline.worker.app import create_app
from pipeline.worker.transport import RoleTolerantAssignor


def test_the_app_uses_the_tolerant_assignor(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, roles="assembler")
    app = create_app(settings, parse_rules({"rules": []}), "127.0.0.1:1")
    assert isinstance(app.assignor, RoleTolerantAssignor)


def test_a_disagreeing_assignment_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    def faust_check(self: Any, assignment: Any) -> None:
        self.seen = assignment
        raise AssertionError("[TP(topic='evalstream-assembly-changelog', partition=1)] != []")

    monkeypatch.setattr(PartitionAssignor, "on_assignment", faust_check)
    assignor = RoleTolerantAssignor.__new__(RoleTolerantAssignor)
    with caplog.at_level(logging.WARNING):
        assignor.on_assignment("the assignment")
    assert assignor.seen == "the assignment"  # Faust's own handling ran
    assert "going on with Kafka's assignment" in caplog.text and "assembly-changelog" in caplog.text
