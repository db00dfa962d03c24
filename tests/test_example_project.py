"""The example project's order pipeline, end to end through the engine.

These run `process_order` exactly as a worker would, with `run_until_idle`, and move
the engine clock with `advance_clock` to get past retry delays without sleeping. The
in-memory stand-ins (the gateway in `payments`, `HELD_STOCK`) show what the saga's
compensations undid.
"""

from datetime import timedelta
from decimal import Decimal

import pytest

import django_durable as durable
from django_durable.models import StepExecution
from django_durable.testing import advance_clock, run_until_idle
from example_project.shop import payments
from example_project.shop.workflows import HELD_STOCK, process_order, refund_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_shop():
    """The fake gateway and the held stock live in memory; start every test from zero."""
    payments.reset()
    HELD_STOCK.clear()
    yield
    payments.reset()
    HELD_STOCK.clear()


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


def timeline(execution_id) -> list[tuple]:
    """The attempts as the admin lists them: the items and branches after their block."""
    return [
        (row.step_name, row.unit, row.status, row.compensation_for)
        for row in durable.get_execution(execution_id, include_steps=True).steps
    ]


RESERVED = [
    ("validate_order", None, "completed", None),
    ("reserve_stock", None, "resumed", None),  # started its items, then waited for them
    ("reserve_stock/reserve_line", ("item", 0), "completed", None),
    ("reserve_stock/reserve_line", ("item", 1), "completed", None),
    ("reserve_stock", None, "completed", None),  # joined their results
]


def test_happy_path_completes_with_the_expected_context():
    execution_id = process_order.start(order())

    assert run_until_idle() == 10

    execution = durable.get_execution(execution_id)
    assert execution.status == "completed"
    assert timeline(execution_id) == [
        *RESERVED,
        ("charge_payment", None, "completed", None),
        ("fulfil", None, "resumed", None),
        ("fulfil/send_confirmation", ("branch", 0), "completed", None),
        ("fulfil/notify_warehouse", ("branch", 1), "completed", None),
        ("fulfil", None, "completed", None),
    ]
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
        "charge_id": "ch_A-1",
        "__results__": {
            "reserve_stock": [["ok", {"sku": "MUG", "held": 2}], ["ok", {"sku": "TEA", "held": 1}]],
            "send_confirmation": [
                "ok",
                {"to": "ada@example.com", "body": "Order A-1 confirmed: 29.99 charged (ch_A-1)."},
            ],
            "notify_warehouse": ["ok", {"pick": {"MUG": 2, "TEA": 1}}],
        },
    }
    assert isinstance(execution.context["total"], Decimal)
    assert execution.compensation_results == []
    assert HELD_STOCK == {"A-1": {"MUG": 2, "TEA": 1}}
    assert payments.calls("A-1") == 1
    assert not payments.refunded("A-1")


def test_flaky_payment_is_retried_after_exponential_delays():
    execution_id = durable.start("process_order", order("A-2", flaky_payment=2))

    assert run_until_idle() == 6  # validate, reserve (block, 2 items, join), charge 1 fails
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
    assert run_until_idle() == 5  # attempt 3 succeeds, then fulfil (block, 2 branches, join)

    execution = durable.get_execution(execution_id)
    assert execution.status == "completed"
    assert execution.context["charge_id"] == "ch_A-2"
    assert [(s.attempt, s.status) for s in attempts(execution_id, "charge_payment")] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert payments.calls("A-2") == 3


def test_declined_card_releases_the_stock_and_ends_compensated():
    execution_id = process_order.start(order("A-3", card="declined"))

    assert run_until_idle() == 8  # validate, reserve (4), one charge attempt, 2 releases

    execution = durable.get_execution(execution_id)
    assert execution.status == "compensated"
    assert execution.current_step == "charge_payment"
    assert execution.error["type"] == "CardDeclined"  # what started the compensations
    assert "Card declined for order A-3" in execution.error["message"]
    assert "CardDeclined" in execution.error["traceback"]
    assert timeline(execution_id) == [
        *RESERVED,
        ("charge_payment", None, "failed", None),  # not retried: CardDeclined
        # Newest first: TEA was held last. The charge did not complete: no refund.
        ("release_line", None, "completed", "reserve_stock/reserve_line"),
        ("release_line", None, "completed", "reserve_stock/reserve_line"),
    ]
    released = {"status": "completed"}
    assert execution.compensation_results == [
        {"step": "reserve_stock/reserve_line", "compensation": "release_line", "result": released},
        {"step": "reserve_stock/reserve_line", "compensation": "release_line", "result": released},
    ]
    assert HELD_STOCK["A-3"] == {}
    assert "charge_id" not in execution.context
    assert not payments.refunded("A-3")

    advance_clock(timedelta(hours=1))
    assert run_until_idle() == 0  # compensated is final: CardDeclined is not retried
    assert payments.calls("A-3") == 1


def test_cancelling_after_the_payment_refunds_it_and_releases_the_stock():
    execution_id = process_order.start(order("A-5"))
    assert run_until_idle(max_steps=6) == 6  # up to and including the charge
    assert durable.get_execution(execution_id).current_step == "fulfil"

    durable.cancel(execution_id, "customer cancelled", compensate=True)
    assert run_until_idle() == 3

    execution = durable.get_execution(execution_id)
    assert execution.status == "compensated"
    assert execution.cancel_reason == "customer cancelled"
    assert [(r["step"], r["compensation"]) for r in execution.compensation_results] == [
        ("charge_payment", "refund_payment"),
        ("reserve_stock/reserve_line", "release_line"),
        ("reserve_stock/reserve_line", "release_line"),
    ]
    assert payments.refunded("A-5")
    assert HELD_STOCK["A-5"] == {}
    assert not StepExecution.objects.filter(
        execution__root_id=execution_id, step_name__startswith="fulfil/"
    ).exists()


def test_an_order_without_items_fails_validation():
    execution_id = process_order.start({"id": "A-4", "email": "ada@example.com", "items": []})

    assert run_until_idle() == 1

    execution = durable.get_execution(execution_id)
    assert execution.status == "failed"
    assert execution.error["type"] == "InvalidOrder"
    assert execution.compensation_results == []  # nothing was done, so nothing to undo
    assert HELD_STOCK == {}
    assert payments.calls("A-4") == 0


def test_welcome_customer_appends_an_email():
    execution_id = durable.start("welcome_customer", {"name": "Ada", "email": "ada@example.com"})

    assert run_until_idle() == 1

    execution = durable.get_execution(execution_id)
    assert execution.status == "completed"
    assert execution.context["emails"] == [
        {"to": "ada@example.com", "body": "Welcome to the shop, Ada!"}
    ]


def test_an_approved_refund_request_refunds_the_charge():
    charged = process_order.start(order("A-7"))
    run_until_idle()
    assert durable.get_execution(charged).status == "completed"
    request = refund_request.start({"order_id": "A-7", "amount": "29.99", "reason": "broken"})
    run_until_idle()
    [asked] = durable.list_pending_inputs(workflow=refund_request)
    assert asked.prompt == "Refund 29.99 EUR on order A-7?"
    assert asked.metadata == {"reason": "broken"}
    durable.provide_input(request, "manager", "approved", responded_by="boss")
    run_until_idle()
    assert durable.get_execution(request).context["refunded"] is True
    assert payments.refunded("A-7")


def test_an_unanswered_refund_request_is_rejected_after_three_days():
    request = refund_request.start({"order_id": "A-8", "amount": "5.00"})
    run_until_idle()
    advance_clock(timedelta(days=3, minutes=1))
    run_until_idle()
    execution = durable.get_execution(request)
    assert (execution.status, execution.context["decision"]) == ("completed", "rejected")
    assert execution.context["refunded"] is False
