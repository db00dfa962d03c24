"""A fake payment gateway for the example shop.

It behaves like the real thing in the ways that matter for a durable workflow, and
deterministically, so tests and the demo can rely on it:

- `flaky=N` makes the first N calls for an order fail with `GatewayUnavailable`, as a
  gateway that times out now and then does; the step's retry policy gets past them.
- the card `"declined"` fails with `CardDeclined`, a `NonRetryableError`: retrying
  cannot help, so the step fails at once whatever its retry policy.
- charging an order twice returns the first charge id, because a real gateway is called
  with an idempotency key: a step that crashed after charging can safely run again.
- `refund` refunds an order's charge once, however often it is called, so the saga's
  compensation can safely run again too; an order that was never charged has nothing
  to refund.

The state lives in this process's memory; tests call `reset()` between runs.
"""

from decimal import Decimal

from django_durable import NonRetryableError


class PaymentError(Exception):
    """Anything the gateway refuses."""


class GatewayUnavailable(PaymentError):
    """A transient failure: trying again later may well succeed."""


class CardDeclined(PaymentError, NonRetryableError):
    """A permanent failure: this card will not be charged, so it is not retried."""


_calls: dict[str, int] = {}  # order id -> charge calls so far
_charges: dict[str, str] = {}  # order id (the idempotency key) -> charge id
_refunds: set[str] = set()  # order ids whose charge was refunded


def charge(order_id: str, amount: Decimal, *, card: str = "4242", flaky: int = 0) -> str:
    """Charge `amount` for `order_id`; returns the charge id."""
    _calls[order_id] = _calls.get(order_id, 0) + 1
    if order_id in _charges:
        return _charges[order_id]
    if _calls[order_id] <= flaky:
        raise GatewayUnavailable(
            f"Gateway timed out charging order {order_id} (call {_calls[order_id]})."
        )
    if card == "declined":
        raise CardDeclined(f"Card declined for order {order_id} ({amount}).")
    _charges[order_id] = f"ch_{order_id}"
    return _charges[order_id]


def refund(order_id: str) -> None:
    """Refund the charge of `order_id`, if it was charged."""
    if order_id in _charges:
        _refunds.add(order_id)


def refunded(order_id: str) -> bool:
    """Whether the order's charge was refunded (for tests)."""
    return order_id in _refunds


def calls(order_id: str) -> int:
    """How often `charge` was called for an order (for tests)."""
    return _calls.get(order_id, 0)


def reset() -> None:
    """Forget every call and charge (for tests and demos)."""
    _calls.clear()
    _charges.clear()
    _refunds.clear()
