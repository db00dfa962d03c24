import pytest

from django_durable import testing


@pytest.fixture(autouse=True)
def _reset_engine_clock():
    """Every test starts and ends on the wall clock."""
    testing.reset_clock()
    yield
    testing.reset_clock()
