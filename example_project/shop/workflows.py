"""The example shop's workflows, found by django-durable because this file is `workflows.py`.

`process_order` takes an order from checkout to confirmation. Each step gets the
context (a dict) and returns the next one; the engine stores it after every step, so a
crash or a deploy never loses an order half-way. Start one with

    process_order.start({"id": "A-1001", "email": "ada@example.com",
                         "items": [{"sku": "MUG", "qty": 2, "price": "12.50"}]})

Optional input keys drive the fake gateway in `payments.py`: `"flaky_payment": 2` makes
the first two charge attempts time out (watch the retries), `"card": "declined"` fails
the payment at once (a declined card is not worth retrying).
"""

from decimal import Decimal

from django_durable import Retry, step, workflow
from django_durable.helpers import append, assign, hours

from . import payments


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


def reserve_inventory(ctx: dict) -> dict:
    """Hold the stock for every line (a real shop would update its Stock rows here)."""
    reserved = {line["sku"]: line["qty"] for line in ctx["lines"]}
    return assign(ctx, "reserved", reserved)


@step(retry=Retry(max_attempts=4, backoff="exponential", base=2))
def charge_payment(ctx: dict) -> dict:
    """Up to 4 attempts; after failed attempt n the engine waits 2s * 2**n (4s, 8s, 16s)."""
    charge_id = payments.charge(
        ctx["order_id"], ctx["total"], card=ctx["card"], flaky=ctx["flaky_payment"]
    )
    return assign(ctx, "charge_id", charge_id)


def send_confirmation(ctx: dict) -> dict:
    """Record the e-mail we sent; the list in the context is the order's outbox."""
    message = f"Order {ctx['order_id']} confirmed: {ctx['total']} charged ({ctx['charge_id']})."
    return append(ctx, "emails", {"to": ctx["email"], "body": message})


process_order = workflow(
    "process_order",
    [validate_order, reserve_inventory, charge_payment, send_confirmation],
    timeout=hours(2),
    description="Validate an order, reserve its stock, charge it and confirm it.",
)


def send_welcome_email(customer: dict) -> dict:
    """A one-step workflow: a plain function is all a step needs to be."""
    body = f"Welcome to the shop, {customer['name']}!"
    return append(customer, "emails", {"to": customer["email"], "body": body})


welcome_customer = workflow("welcome_customer", [send_welcome_email])
