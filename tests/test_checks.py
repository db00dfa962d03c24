"""System checks for the DURABLE setting (`manage.py check`)."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_durable.checks import check_durable_settings


def _ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_valid_settings_pass(settings):
    settings.DURABLE = {
        "QUEUES": {"default": {"concurrency": 4, "poll_interval": 0.5}, "bulk": {}},
        "LEASE_SECONDS": 120,
        "HEARTBEAT_SECONDS": 10,
        "DEFAULT_RETRY": {"max_attempts": 3, "backoff": "linear"},
        "LOG_CAPTURE": False,
    }
    assert check_durable_settings(None) == []


def test_missing_setting_uses_defaults(settings):
    del settings.DURABLE
    assert check_durable_settings(None) == []


def test_manage_py_check_passes_with_test_settings():
    call_command("check")  # raises SystemCheckError on any error


def test_not_a_dict(settings):
    settings.DURABLE = [("QUEUES", {})]
    assert _ids(check_durable_settings(None)) == ["durable.E001"]


def test_unknown_option(settings):
    settings.DURABLE = {"LEASE_SECOND": 60}
    messages = check_durable_settings(None)
    assert _ids(messages) == ["durable.E002"]
    assert "'LEASE_SECOND'" in messages[0].msg
    assert "LEASE_SECONDS" in messages[0].hint


@pytest.mark.parametrize(
    "option, value",
    [
        ("LEASE_SECONDS", 0),
        ("LEASE_SECONDS", -5),
        ("LEASE_SECONDS", "300"),
        ("HEARTBEAT_SECONDS", True),
        ("SHUTDOWN_GRACE_SECONDS", None),
    ],
)
def test_non_positive_durations(settings, option, value):
    settings.DURABLE = {option: value}
    messages = check_durable_settings(None)
    assert "durable.E003" in _ids(messages)
    assert option in next(m.msg for m in messages if m.id == "durable.E003")


@pytest.mark.parametrize("heartbeat, lease", [(30, 30), (60, 30), (300.5, 300)])
def test_heartbeat_not_shorter_than_lease(settings, heartbeat, lease):
    settings.DURABLE = {"HEARTBEAT_SECONDS": heartbeat, "LEASE_SECONDS": lease}
    assert _ids(check_durable_settings(None)) == ["durable.E004"]


def test_heartbeat_against_default_lease(settings):
    settings.DURABLE = {"HEARTBEAT_SECONDS": 600}  # the default lease is 300s
    assert _ids(check_durable_settings(None)) == ["durable.E004"]


def test_heartbeat_error_reported_alongside_other_errors(settings):
    settings.DURABLE = {"TYPO": 1, "HEARTBEAT_SECONDS": 60, "LEASE_SECONDS": 30}
    assert sorted(_ids(check_durable_settings(None))) == ["durable.E002", "durable.E004"]


@pytest.mark.parametrize(
    "retry",
    [{"max_attempts": 0}, {"tries": 3}, {"backoff": "sometimes"}, "fast", 3],
)
def test_bad_default_retry(settings, retry):
    settings.DURABLE = {"DEFAULT_RETRY": retry}
    messages = check_durable_settings(None)
    assert _ids(messages) == ["durable.E005"]
    assert "DEFAULT_RETRY" in messages[0].msg


@pytest.mark.parametrize("queues", [{}, [], "default"])
def test_queues_must_be_a_non_empty_dict(settings, queues):
    settings.DURABLE = {"QUEUES": queues}
    assert _ids(check_durable_settings(None)) == ["durable.E006"]


def test_queue_options_must_be_a_dict(settings):
    settings.DURABLE = {"QUEUES": {"default": 4}}
    assert _ids(check_durable_settings(None)) == ["durable.E009"]


@pytest.mark.parametrize("concurrency", [0, -1, 2.5, "4", True, None])
def test_bad_queue_concurrency(settings, concurrency):
    settings.DURABLE = {"QUEUES": {"default": {"concurrency": concurrency}}}
    messages = check_durable_settings(None)
    assert _ids(messages) == ["durable.E007"]
    assert "'default'" in messages[0].msg


@pytest.mark.parametrize("interval", [0, -1.0, "1", False])
def test_bad_poll_interval(settings, interval):
    settings.DURABLE = {"QUEUES": {"fast": {"poll_interval": interval}}}
    messages = check_durable_settings(None)
    assert _ids(messages) == ["durable.E008"]
    assert "'fast'" in messages[0].msg


def test_several_errors_reported_together(settings):
    settings.DURABLE = {
        "UNKNOWN": 1,
        "QUEUES": {"a": {"concurrency": 0}, "b": {"poll_interval": -1}},
        "DEFAULT_RETRY": {"max_attempts": 0},
    }
    assert sorted(_ids(check_durable_settings(None))) == [
        "durable.E002",
        "durable.E005",
        "durable.E007",
        "durable.E008",
    ]


def test_manage_py_check_reports_durable_errors(settings):
    settings.DURABLE = {"QUEUES": {"default": {"concurrency": 0}}, "BOGUS": True}
    with pytest.raises(SystemCheckError) as info:
        call_command("check")
    assert "durable.E007" in str(info.value)
    assert "durable.E002" in str(info.value)
