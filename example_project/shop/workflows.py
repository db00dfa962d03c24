"""The example shop's workflows, found by django-durable because this file is `workflows.py`.

`process_order` takes an order from checkout to confirmation. Each step gets the
context (a dict) and returns the next one; the engine stores it after every step, so a
crash or a deploy never loses an order half-way. Start one with

    process_order.start({"id": "A-1001", "email": "ada@example.com",
                         "items": [{"sku": "MUG", "qty": 2, "price": "12.50"}]})

It validates the order, holds the stock of each line (a `foreach`: one durable item per
line), charges the card (a step with retries), then sends the confirmation e-mail and
notifies the warehouse at the same time (a `parallel` block). It is a saga: the stock
holds and the charge have compensations, so when a step fails for good the steps that
completed are undone, newest first, and the execution ends `compensated`;
`durable.cancel(id, reason, compensate=True)` undoes an order the same way.

Optional input keys drive the fake gateway in `payments.py`: `"flaky_payment": 2` makes
the first two charge attempts time out (watch the retries), `"card": "declined"` fails
the payment at once (a declined card is not worth retrying), and the stock held for the
order is released.
"""

from decimal import Decimal

from django_durable import Retry, foreach, parallel, step, workflow
from django_durable.helpers import append, assign, days, hours
from django_durable.waits import wait_for_approval

from . import payments

HELD_STOCK: dict[str, dict[str, int]] = {}
"""Order id -> {sku: quantity held}, in this process's memory like the fake gateway's
state: the example's stand-in for the Stock rows a real shop would update."""


class InvalidOrder(Exception):
    """The order cannot be processed as given."""


def validate_order(order: dict) -> dict:
    """The first step receives the workflow input and builds the context from it."""
    if not order.get("items"):
        raise InvalidOrder(f"Order {order.get('id')!r} has no items.")
    lines = [
        {"sku": item["sku"], "qty": int(item["qty"]), "price": Decimal(str(item["price"]))}
        for item in order["items"]
    ]
    return {
        "order_id": str(order["id"]),
        "email": order["email"],
        "lines": lines,
        "total": sum((line["price"] * line["qty"] for line in lines), Decimal("0")),
        "card": order.get("card", "4242"),
        "flaky_payment": int(order.get("flaky_payment", 0)),
    }


def reserve_line(ctx: dict, line: dict, index: int) -> dict:
    """One foreach item per line, each a row of its own: a crash re-runs only the lines
    not held yet, and each hold is undone on its own."""
    HELD_STOCK.setdefault(ctx["order_id"], {})[line["sku"]] = line["qty"]
    return {"sku": line["sku"], "held": line["qty"]}  # the item's result


def release_line(ctx: dict, line: dict, index: int) -> None:
    """The compensation gets the line it undoes; pop() makes running it twice harmless."""
    HELD_STOCK.get(ctx["order_id"], {}).pop(line["sku"], None)


def refund_payment(ctx: dict) -> None:
    """Undo the charge if a later step fails (or the order is cancelled)."""
    payments.refund(ctx["order_id"])


@step(retry=Retry(max_attempts=4, backoff="exponential", base=2), compensate=refund_payment)
def charge_payment(ctx: dict) -> dict:
    """Up to 4 attempts; after failed attempt n the engine waits 2s * 2**n (4s, 8s, 16s)."""
    charge_id = payments.charge(
        ctx["order_id"], ctx["total"], card=ctx["card"], flaky=ctx["flaky_payment"]
    )
    return assign(ctx, "charge_id", charge_id)


def send_confirmation(ctx: dict) -> dict:
    """A parallel branch returns only its news: the e-mail sent is its result."""
    body = f"Order {ctx['order_id']} confirmed: {ctx['total']} charged ({ctx['charge_id']})."
    return {"to": ctx["email"], "body": body}


def notify_warehouse(ctx: dict) -> dict:
    """Runs next to `send_confirmation`: neither waits for the other."""
    return {"pick": {line["sku"]: line["qty"] for line in ctx["lines"]}}


process_order = workflow(
    "process_order",
    [
        validate_order,
        # At most two lines at a time, so a 500-line order can't flood the stock service.
        foreach(
            "reserve_stock",
            lambda ctx: ctx["lines"],
            step(reserve_line, compensate=release_line),
            concurrency=2,
        ),
        charge_payment,
        parallel(send_confirmation, notify_warehouse, name="fulfil"),
    ],
    timeout=hours(2),
    description=(
        "Validate an order, hold the stock of each line, charge it, then confirm it and "
        "notify the warehouse; undo the holds and the charge if a step fails for good."
    ),
)


def send_welcome_email(customer: dict) -> dict:
    """A one-step workflow: a plain function is all a step needs to be."""
    body = f"Welcome to the shop, {customer['name']}!"
    return append(customer, "emails", {"to": customer["email"], "body": body})


welcome_customer = workflow("welcome_customer", [send_welcome_email])


def ask_manager(request: dict) -> dict:
    """Waits (for days, if need be) until a manager answers in the admin's inbox; no
    answer within 3 days counts as a rejection."""
    decision = wait_for_approval(
        "manager",
        prompt=f"Refund {request['amount']} EUR on order {request['order_id']}?",
        metadata={"reason": request.get("reason", "")},
        timeout=days(3),
        timeout_value="rejected",
    )
    return assign(request, "decision", decision)


def pay_back(ctx: dict) -> dict:
    if ctx["decision"] == "approved":
        payments.refund(ctx["order_id"])
    return assign(ctx, "refunded", ctx["decision"] == "approved")


refund_request = workflow("refund_request", [ask_manager, pay_back])
