"""The example project's order pipeline, end to end through the engine.

These run `process_order` exactly as a worker would, with `run_until_idle`, and move
the engine clock with `advance_clock` to get past retry delays without sleeping.
"""

from datetime import timedelta
from decimal import Decimal

import pytest

import django_durable as durable
from django_durable.models import StepExecution
from django_durable.testing import advance_clock, run_until_idle
from example_project.shop import payments
from example_project.shop.workflows import process_order

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_gateway():
    """The fake gateway counts calls per order in memory; start every test from zero."""
    payments.reset()
    yield
    payments.reset()


def order(order_id: str = "A-1", **extra) -> dict:
    return {
        "id": order_id,
        "email": "ada@example.com",
        "items": [
            {"sku": "MUG", "qty": 2, "price": "12.50"},
            {"sku": "TEA", "qty": 1, "price": Decimal("4.99")},
        ],
        **extra,
    }


def attempts(execution_id, step_name: str) -> list[StepExecution]:
    return list(
        StepExecution.objects.filter(execution_id=execution_id, step_name=step_name).order_by(
            "attempt"
        )
    )


def test_happy_path_completes_with_the_expected_context():
    execution_id = process_order.start(order())

    assert run_until_idle() == 4

    execution = durable.get_execution(execution_id, include_steps=True)
    assert execution.status == "completed"
    assert [s.step_name for s in execution.steps] == [
        "validate_order",
        "reserve_inventory",
        "charge_payment",
        "send_confirmation",
    ]
    assert all(s.status == "completed" and s.attempt == 1 for s in execution.steps)
    assert execution.context == {
        "order_id": "A-1",
        "email": "ada@example.com",
        "lines": [
            {"sku": "MUG", "qty": 2, "price": Decimal("12.50")},
            {"sku": "TEA", "qty": 1, "price": Decimal("4.99")},
        ],
        "total": Decimal("29.99"),
        "card": "4242",
        "flaky_payment": 0,
        "reserved": {"MUG": 2, "TEA": 1},
        "charge_id": "ch_A-1",
        "emails": [
            {
                "to": "ada@example.com",
                "body": "Order A-1 confirmed: 29.99 charged (ch_A-1).",
            }
        ],
    }
    assert isinstance(execution.context["total"], Decimal)
    assert payments.calls("A-1") == 1


def test_flaky_payment_is_retried_after_exponential_delays():
    execution_id = durable.start("process_order", order("A-2", flaky_payment=2))

    assert run_until_idle() == 3  # validate, reserve, charge attempt 1 (fails)
    execution = durable.get_execution(execution_id)
    assert execution.status == "pending"
    assert execution.current_step == "charge_payment"
    first = attempts(execution_id, "charge_payment")[0]
    assert first.status == "failed"
    assert first.error["type"] == "GatewayUnavailable"
    assert execution.run_at - first.completed_at == timedelta(seconds=4)

    # Nothing runs before the delay has passed.
    advance_clock(3)
    assert run_until_idle() == 0
    advance_clock(1)
    assert run_until_idle() == 1  # attempt 2 (fails again)

    second = attempts(execution_id, "charge_payment")[1]
    assert (second.attempt, second.status) == (2, "failed")
    execution = durable.get_execution(execution_id)
    assert execution.run_at - second.completed_at == timedelta(seconds=8)

    advance_clock(7)
    assert run_until_idle() == 0
    advance_clock(1)
    assert run_until_idle() == 2  # attempt 3 succeeds, then send_confirmation

    execution = durable.get_execution(execution_id)
    assert execution.status == "completed"
    assert execution.context["charge_id"] == "ch_A-2"
    assert [(s.attempt, s.status) for s in attempts(execution_id, "charge_payment")] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert payments.calls("A-2") == 3


def test_declined_card_fails_at_once_without_retries_and_records_the_error():
    execution_id = process_order.start(order("A-3", card="declined"))

    assert run_until_idle() == 3  # validate, reserve, one charge attempt

    execution = durable.get_execution(execution_id)
    assert execution.status == "failed"
    assert execution.current_step == "charge_payment"
    assert execution.error["type"] == "CardDeclined"
    assert "Card declined for order A-3" in execution.error["message"]
    assert "CardDeclined" in execution.error["traceback"]
    charges = attempts(execution_id, "charge_payment")
    assert [(s.attempt, s.status) for s in charges] == [(1, "failed")]
    assert "charge_id" not in execution.context
    assert not StepExecution.objects.filter(
        execution_id=execution_id, step_name="send_confirmation"
    ).exists()

    advance_clock(timedelta(hours=1))
    assert run_until_idle() == 0  # failed is final: CardDeclined is not retried
    assert payments.calls("A-3") == 1


def test_an_order_without_items_fails_validation():
    execution_id = process_order.start({"id": "A-4", "email": "ada@example.com", "items": []})

    assert run_until_idle() == 1

    execution = durable.get_execution(execution_id)
    assert execution.status == "failed"
    assert execution.error["type"] == "InvalidOrder"
    assert payments.calls("A-4") == 0


def test_welcome_customer_appends_an_email():
    execution_id = durable.start("welcome_customer", {"name": "Ada", "email": "ada@example.com"})

    assert run_until_idle() == 1

    execution = durable.get_execution(execution_id)
    assert execution.status == "completed"
    assert execution.context["emails"] == [
        {"to": "ada@example.com", "body": "Welcome to the shop, Ada!"}
    ]
