"""Outages over real processes (tests/outages.py, small): PostgreSQL stopped and started, Redis restarted empty, one
of two instances killed while it delivers webhooks. Nothing lost, nothing stored twice, no manual step."""

from __future__ import annotations

from pathlib import Path

from accesspoint.testing import services
from tests import outages


def test_a_postgresql_outage_mid_stream_loses_and_duplicates_nothing_and_refuses_with_503_only_what_it_did_not_store(
    tmp_path: Path, postgres_server: services.PostgresServer
) -> None:
    """The session's PostgreSQL stopped for 2 s under 20 submissions/s: 202s delivered exactly once, 503s stored
    nothing (and are taken when submitted again)."""
    report = outages.postgres_outage(tmp_path, postgres_server, messages=60, rate=20, outage=2)
    print(report.line())
    assert report.refused > 0, "submissions during the outage are answered 503"
    assert report.accepted_after_restart > 0, "submissions are taken again once the database is back"
    assert report.accepted + report.refused == report.submitted == report.delivered


def test_a_redis_restart_without_persistence_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, postgres_server: services.PostgresServer
) -> None:
    """Redis stopped for 2 s and started empty: every submission is 202 and delivered exactly once."""
    report = outages.redis_restart(tmp_path, postgres_server, messages=40, rate=20, outage=2)
    print(report.line())
    assert report.accepted == report.submitted == report.delivered and report.accepted_after_restart > 0


def test_killing_the_instance_that_delivers_webhooks_loses_no_event_and_repeats_only_those_in_flight(
    tmp_path: Path, postgres_server: services.PostgresServer, redis_url: str
) -> None:
    """Two instances, one killed while an event is on the wire: every receipt event arrives, same id if twice."""
    report = outages.instance_killed(tmp_path, postgres_server, redis_url, messages=60)
    print(report.line(), report.notes)
    assert report.delivered == report.submitted
    assert report.events >= report.delivered
