from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from django_durable import clock, testing
from tests.calls import calls

WEDNESDAY_NOON = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


@pytest.fixture(autouse=True)
def _reset_engine_clock():
    """Every test starts and ends on the wall clock."""
    testing.reset_clock()
    yield
    testing.reset_clock()


@pytest.fixture
def frozen(monkeypatch):
    """Pin the engine clock's wall-clock part to a Wednesday noon; `advance_clock` still
    moves it forward, so due times can be compared exactly."""
    monkeypatch.setattr(clock, "timezone", SimpleNamespace(now=lambda: WEDNESDAY_NOON))
    return WEDNESDAY_NOON
