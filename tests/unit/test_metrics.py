"""pipeline/metrics.py: the in-process counters and their Prometheus exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pipeline.metrics import Counters


def scrape(counters: Counters) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> labels -> value, parsed back from the text format as Prometheus would."""
    body, content_type = counters.exposition()
    assert content_type.startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def types(counters: Counters) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(counters.exposition()[0].decode())}


def test_events_become_named_and_typed_metrics() -> None:
    c = Counters()
    c.inc("spans_in", 7)
    c.inc("traces_closed", status="complete")
    c.inc("traces_closed", status="complete")
    c.inc("traces_closed", status="incomplete")
    c.inc("traces_closed", status="reopened")
    c.inc("jobs_queued", 3)
    c.set("jobs_running", 2)
    c.inc("scores", status="scored", rule="r1")
    c.inc("scores", status="error", rule="r1")
    c.inc("dead_letters", stage="assembler")
    c.observe("sink_batch_rows", 120)
    c.observe("sink_insert_seconds", 0.02)
    c.inc("alerts", kind="firing", status="delivered")
    c.inc("alerts_redelivered", kind="firing", status="delivered")  # the same metric: every delivery
    c.set("consumer_lag_records", 5, group="g", topic="t", partition="1")
    m = scrape(c)
    assert m["evalstream_spans_in_total"][()] == 7
    assert m["evalstream_traces_closed_total"] == {
        (("status", "complete"),): 2, (("status", "incomplete"),): 1, (("status", "reopened"),): 1}
    assert m["evalstream_jobs_queued_total"][()] == 3 and m["evalstream_jobs_running"][()] == 2
    assert m["evalstream_scores_total"] == {(("rule", "r1"), ("status", "error")): 1,
                                            (("rule", "r1"), ("status", "scored")): 1}
    assert m["evalstream_dead_letters_total"] == {(("stage", "assembler"),): 1}
    assert m["evalstream_sink_batch_rows_count"][()] == 1 and m["evalstream_sink_batch_rows_sum"][()] == 120
    assert m["evalstream_sink_batch_rows_bucket"][(("le", "100.0"),)] == 0
    assert m["evalstream_sink_batch_rows_bucket"][(("le", "500.0"),)] == 1
    assert m["evalstream_sink_insert_seconds_sum"][()] == 0.02
    assert m["evalstream_alert_deliveries_total"] == {(("kind", "firing"), ("status", "delivered")): 2}
    assert m["evalstream_consumer_lag_records"] == {(("group", "g"), ("partition", "1"), ("topic", "t")): 5}
    t = types(c)
    assert t["evalstream_spans_in"] == "counter" and t["evalstream_jobs_running"] == "gauge"
    assert t["evalstream_sink_insert_seconds"] == "histogram" and t["evalstream_consumer_lag_seconds"] == "gauge"
    assert "process_cpu_seconds" in t  # the process collector, in this registry


def test_counters_without_labels_show_zero_before_the_first_event() -> None:
    m = scrape(Counters())
    assert m["evalstream_spans_in_total"][()] == 0 and m["evalstream_jobs_queued_total"][()] == 0


def test_each_counters_object_has_its_own_registry() -> None:
    a, b = Counters(), Counters()
    a.inc("spans_in", 4)
    assert scrape(a)["evalstream_spans_in_total"][()] == 4
    assert scrape(b)["evalstream_spans_in_total"][()] == 0


def test_the_health_snapshot_keeps_its_names() -> None:
    c = Counters()
    c.inc("spans_in", 2)
    c.inc("traces_closed", status="complete")
    c.observe("sink_insert_seconds", 0.5)
    c.set("jobs_running", 1)
    assert c.snapshot() == {"spans_in": 2, "traces_closed{status=complete}": 1, "sink_insert_seconds_last": 0.5,
                            "jobs_running": 1}
    assert c.get("traces_closed", status="complete") == 1


def test_an_unlisted_event_is_still_exported_and_a_bad_call_never_raises() -> None:
    c = Counters()
    c.inc("backfill_traces", 40)
    c.inc("scores", status="scored")  # missing its rule label: counted in the snapshot, skipped in Prometheus
    c.inc("scores", status="scored", rule="r")  # later good calls still count
    c.observe("something_ms", 3.0)
    m = scrape(c)
    assert m["evalstream_backfill_traces_total"][()] == 40
    assert m["evalstream_scores_total"] == {(("rule", "r"), ("status", "scored")): 1}
    assert m["evalstream_something_ms"][()] == 3.0
    assert c.get("scores", status="scored") == 1


def test_clearing_a_gauge_drops_partitions_no_longer_owned() -> None:
    c = Counters()
    c.set("consumer_lag_records", 3, group="g", topic="t", partition="0")
    c.set("consumer_lag_records", 4, group="g", topic="t", partition="1")
    c.clear("consumer_lag_records")
    c.set("consumer_lag_records", 0, group="g", topic="t", partition="1")
    assert scrape(c)["evalstream_consumer_lag_records"] == {(("group", "g"), ("partition", "1"), ("topic", "t")): 0}
    assert c.snapshot() == {"consumer_lag_records{group=g,partition=1,topic=t}": 0}


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    c = Counters()
    c.describe_worker("host:1", "assembler,router", sink=False)
    body, content_type = c.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    assert b'evalstream_worker_info{roles="assembler,router",sink="false",worker="host:1"} 1.0' in body


def test_a_cleared_gauge_shows_the_values_set_after_it_again() -> None:
    c = Counters()
    lag = {"group": "g", "topic": "t", "partition": "0"}
    c.set("consumer_lag_records", 5, **lag)
    c.set("consumer_lag_records", 6, **lag)  # the second set goes through the cached child
    assert scrape(c)["evalstream_consumer_lag_records"] == {tuple(sorted(lag.items())): 6}
    c.clear("consumer_lag_records")
    assert "evalstream_consumer_lag_records" not in scrape(c)
    c.set("consumer_lag_records", 7, **lag)  # a child made after the clear, not the one it dropped
    assert scrape(c)["evalstream_consumer_lag_records"] == {tuple(sorted(lag.items())): 7}


def test_a_bad_value_on_a_cached_metric_is_logged_not_raised() -> None:
    c = Counters()
    c.set("jobs_running", 1)
    c.set("jobs_running", "not a number")  # type: ignore[arg-type]  # the child is cached by now
    assert scrape(c)["evalstream_jobs_running"] == {(): 1}
