"""The Celery app's configuration: what every task relies on."""

from __future__ import annotations

from pathlib import Path

from celery.schedules import crontab

from nrr.settings import load_settings
from worker.broker import broker_folder, queue_depth
from worker.celery_app import make_celery


def test_without_redis_the_broker_is_embedded_next_to_the_database(tmp_path: Path) -> None:
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'nrr.db'}"})
    app = make_celery(settings)
    assert app.conf.broker_url == "filesystem://"
    options = app.conf.broker_transport_options
    assert options["data_folder_in"] == str(tmp_path / "nrr-state" / "broker")
    assert "redis" not in str(app.conf.broker_url) and not app.conf.result_backend
    assert queue_depth(settings) == 0
    broker_folder(settings).mkdir(parents=True)
    (broker_folder(settings) / "1_ab.nrr.msg").write_text("{}")
    assert queue_depth(settings) == 1


def test_with_redis_the_broker_is_redis_with_a_visibility_timeout() -> None:
    settings = load_settings({"DATABASE_URL": "sqlite:////tmp/nrr.db",
                              "REDIS_URL": "redis://127.0.0.1:6390/3"})
    app = make_celery(settings)
    assert app.conf.broker_url == "redis://127.0.0.1:6390/3"
    assert app.conf.broker_transport_options["visibility_timeout"] == 7200


def test_tasks_are_json_late_acknowledged_and_given_back_when_a_worker_dies() -> None:
    app = make_celery(load_settings({"DATABASE_URL": "sqlite:////tmp/nrr.db"}))
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True
    assert conf.task_soft_time_limit and conf.task_time_limit > conf.task_soft_time_limit


def test_every_task_has_an_explicit_retry_policy_and_time_limits() -> None:
    from worker import tasks

    for task in (tasks.sync, tasks.backfill, tasks.process_event, tasks.recompute,
                 tasks.snapshot, tasks.evaluate_alerts):
        assert task.autoretry_for, task.name
        assert task.max_retries is not None and task.max_retries > 0, task.name
        assert task.retry_backoff, task.name
        assert task.soft_time_limit and task.time_limit > task.soft_time_limit, task.name


def test_the_beat_schedule_follows_the_settings(tmp_path: Path) -> None:
    config = tmp_path / "nrr.toml"
    config.write_text("[schedule]\nsync_every_minutes = 5\nnightly_recompute_hour = 3\n"
                      "snapshot_day = 2\nsnapshot_hour = 4\n")
    settings = load_settings({"DATABASE_URL": "sqlite:////tmp/nrr.db", "NRR_CONFIG": str(config),
                              "NRR_TIMEZONE": "Europe/Berlin"})
    app = make_celery(settings)
    schedule = app.conf.beat_schedule
    assert schedule["incremental-sync"]["task"] == "nrr.sync"
    assert schedule["incremental-sync"]["schedule"].total_seconds() == 300
    nightly = schedule["nightly-recompute"]
    assert nightly["task"] == "nrr.recompute" and nightly["kwargs"]["scope"] == "all"
    assert nightly["schedule"] == crontab(minute=0, hour=3)
    monthly = schedule["monthly-snapshot"]
    assert monthly["task"] == "nrr.snapshot"
    assert monthly["schedule"] == crontab(minute=0, hour=4, day_of_month=2)
    # Crontab times are read in NRR_TIMEZONE.
    assert app.conf.timezone == "Europe/Berlin"
