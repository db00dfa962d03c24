from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from django_durable import clock, testing
from tests.calls import calls
from tests.worker_support import WorkerPool

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


@pytest.fixture
def workers(transactional_db, tmp_path):
    """Real worker processes: start them with `workers.start(...)`; any still running
    are killed at the end (before the test database is flushed). Their logs are
    printed, so a failing test shows them under "Captured stdout teardown"."""
    pool = WorkerPool(tmp_path)
    yield pool
    pool.close()
    print(pool.report())
