"""One worker process: the Faust worker around the app, stopped through `Shutdown` (pipeline/shutdown.py)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import faust

from pipeline.admin import ensure_topics_for
from pipeline.kafka_security import aiokafka_options
from pipeline.rules.store import startup_rules
from pipeline.settings import Settings
from pipeline.shutdown import Shutdown
from pipeline.worker.app import create_app
from scorers.registry import ScorerResolver


class _Worker(faust.Worker):
    """mode's worker handles SIGINT and SIGTERM on the event loop, once: a second Ctrl-C was ignored, and so
    was every signal while a stop hung. They belong to `Shutdown`, which calls `stop_on_signal` here."""

    def _install_signal_handlers_unix(self) -> None:
        self.loop.add_signal_handler(signal.SIGUSR1, self._on_sigusr1)  # mode's dump of every task's stack

    def stop_on_signal(self, signum: int) -> None:
        self._flag_as_shutdown_by_signal()
        self._schedule_shutdown(signal.Signals(signum))


def tune_gc() -> None:
    """A worker allocates a few dicts per span and keeps its open traces: with the default thresholds the
    collector ran every 700 allocations and walked the whole heap (Faust, litellm's cost map, the
    assembly table) each time, about 20% of a busy worker. Frozen start-up objects are never walked,
    and collections run a hundred times less often; reference counting frees almost everything anyway."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(70_000, 20, 20)


def run_worker(settings: Settings, ruleset: Any, bootstrap: str, web_port: int | None, shutdown: Shutdown,
               scorers: ScorerResolver | None = None, *, rules_source: str = "worker") -> None:
    """Run until stopped; returns (or raises SystemExit) once the worker has stopped. `scorers`: the resolver
    the rules were checked with (else the app builds the worker's own). `ruleset`: the rules file's (put on
    the rules topic unless it is the current version there already), or None for the topic's current one."""
    asyncio.run(ensure_topics_for(settings, bootstrap))
    active = asyncio.run(startup_rules(bootstrap, ruleset, rules_source, scorers=scorers,
                                       client_options=aiokafka_options(settings)))
    worker = _Worker(create_app(settings, active, bootstrap, web_port=web_port, scorers=scorers),
                     loglevel=settings.log_level, quiet=True)
    # At warning and above Faust keeps a terminal spinner that sets the root logger to DEBUG, so every
    # aiokafka debug record gets built (~10% of a busy worker's time): a service has no use for it.
    worker.spinner = None
    tune_gc()

    sink = ", the sink (it commits only what it stored)" if settings.sink_enabled else ""

    def begin(signum: int) -> None:
        shutdown.say(f"stopping the worker: its agents{sink}, its Kafka clients")
        try:
            worker.loop.call_soon_threadsafe(worker.stop_on_signal, signum)
        except RuntimeError:  # the loop has closed: the worker is stopping anyway
            pass

    try:
        with shutdown.stopping_with(begin):
            worker.execute_from_commandline()
    finally:
        if shutdown.stopping:
            shutdown.say(f"worker stopped ({shutdown.elapsed_s():.1f} s)")
