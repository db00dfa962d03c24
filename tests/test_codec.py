"""The context codec: typed JSON round-trips, unstorable values, and what steps return."""

import math
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from django_durable import ContextNotSerializable, Retry, codec, start, step, workflow
from django_durable.models import StepExecution, WorkflowExecution
from django_durable.testing import run_until_idle
from tests.calls import calls, count_call

seen: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _reset():
    seen.clear()


PARIS_SUMMER = timezone(timedelta(hours=2))
WHEN = datetime(2026, 7, 14, 9, 30, 15, 123456, tzinfo=PARIS_SUMMER)
DAY = date(2026, 12, 24)
PRICE = Decimal("19.990")
ORDER_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def _typed_input() -> dict:
    return {
        "when": WHEN,
        "day": DAY,
        "price": PRICE,
        "order_id": ORDER_ID,
        "lines": [{"price": Decimal("1.10"), "ship": DAY}, [ORDER_ID, WHEN]],
        "meta": {"nested": {"at": datetime(2026, 1, 1, tzinfo=UTC)}},
        "plain": {"n": 1, "f": 2.5, "s": "x", "b": True, "none": None, "list": [1, "a"]},
    }


# -- codec unit tests ------------------------------------------------------------------


def test_encode_decode_round_trip_keeps_types():
    value = _typed_input()
    encoded = codec.encode(value)
    decoded = codec.decode(encoded)
    assert decoded == value
    assert type(decoded["when"]) is datetime
    assert decoded["when"].utcoffset() == timedelta(hours=2)
    assert type(decoded["day"]) is date
    assert type(decoded["price"]) is Decimal and str(decoded["price"]) == "19.990"
    assert type(decoded["order_id"]) is uuid.UUID
    assert type(decoded["lines"][0]["price"]) is Decimal
    assert type(decoded["lines"][1][0]) is uuid.UUID
    assert type(decoded["meta"]["nested"]["at"]) is datetime


def test_encoded_form_is_json_native_and_tagged():
    encoded = codec.encode({"price": PRICE, "day": DAY, "n": 3})
    assert encoded == {
        "price": {"__durable__": "decimal", "value": "19.990"},
        "day": {"__durable__": "date", "value": "2026-12-24"},
        "n": 3,
    }


def test_encode_does_not_mutate_and_turns_tuples_into_lists():
    value = {"t": (1, 2), "d": {"x": DAY}}
    encoded = codec.encode(value)
    assert encoded["t"] == [1, 2]
    assert value == {"t": (1, 2), "d": {"x": DAY}}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_rejected(bad):
    with pytest.raises(ContextNotSerializable, match="not a finite number") as info:
        codec.encode({"stats": {"ratio": bad}})
    assert info.value.key == "stats.ratio"
    assert "'stats.ratio'" in str(info.value)


def test_non_string_keys_rejected():
    with pytest.raises(ContextNotSerializable, match="not a string key") as info:
        codec.encode({"counts": {1: "one"}})
    assert info.value.key == "counts.1"
    with pytest.raises(ContextNotSerializable):
        codec.encode({(1, 2): "pair"})


@pytest.mark.parametrize(
    "value, key",
    [
        ({"items": [{"tags": []}, {"tags": {"a", "b"}}]}, "items[1].tags"),
        ({"obj": object()}, "obj"),
        ({"a": {"b": [1, 2, b"bytes"]}}, "a.b[2]"),
        ({"delta": timedelta(seconds=1)}, "delta"),
    ],
)
def test_unstorable_values_name_their_key(value, key):
    with pytest.raises(ContextNotSerializable, match="cannot be stored as JSON") as info:
        codec.encode(value)
    assert info.value.key == key
    assert repr(key) in str(info.value)


def test_unstorable_top_level_value():
    with pytest.raises(ContextNotSerializable, match="the value"):
        codec.encode({1, 2})


# -- through a workflow --------------------------------------------------------------------


def check_types(ctx):
    seen["types"] = {key: type(value) for key, value in ctx.items()}
    seen["line_price"] = type(ctx["lines"][0]["price"])
    seen["nested_at"] = type(ctx["meta"]["nested"]["at"])
    return {
        **ctx,
        "total": ctx["price"] * 2,
        "next_day": ctx["day"] + timedelta(days=1),
        "later": ctx["when"] + timedelta(hours=1),
        "ids": [ctx["order_id"], uuid.UUID(int=1)],
    }


def check_again(ctx):
    # Runs after the context was stored and loaded again.
    seen["total"] = ctx["total"]
    seen["next_day"] = ctx["next_day"]
    return None


typed = workflow("codec.typed", [check_types, check_again])


@pytest.mark.django_db
def test_typed_values_round_trip_through_a_workflow():
    eid = start(typed, _typed_input())
    stored = WorkflowExecution.objects.get(id=eid)
    assert stored.input == _typed_input()
    assert type(stored.input["price"]) is Decimal

    assert run_until_idle() == 2
    assert seen["types"]["when"] is datetime
    assert seen["types"]["day"] is date
    assert seen["types"]["price"] is Decimal
    assert seen["types"]["order_id"] is uuid.UUID
    assert seen["line_price"] is Decimal
    assert seen["nested_at"] is datetime
    assert seen["total"] == Decimal("39.980")
    assert type(seen["total"]) is Decimal

    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    ctx = execution.context
    assert ctx["total"] == Decimal("39.980") and type(ctx["total"]) is Decimal
    assert ctx["next_day"] == date(2026, 12, 25) and type(ctx["next_day"]) is date
    assert ctx["later"] == WHEN + timedelta(hours=1)
    assert ctx["later"].tzinfo is not None
    assert ctx["ids"] == [ORDER_ID, uuid.UUID(int=1)]
    assert all(type(i) is uuid.UUID for i in ctx["ids"])
    assert ctx["lines"][1] == [ORDER_ID, WHEN]
    assert execution.input == _typed_input()

    first = StepExecution.objects.get(execution_id=eid, step_name="check_types")
    assert first.output is None  # the context is kept once, on the execution


@pytest.mark.django_db
def test_json_lookups_on_context():
    big = start(typed, {**_typed_input(), "price": Decimal("10")})
    small = start(typed, {**_typed_input(), "price": Decimal("1")})
    WorkflowExecution.objects.filter(id=big).update(context={"total": 25, "tier": "gold"})
    WorkflowExecution.objects.filter(id=small).update(context={"total": 5, "tier": "basic"})

    assert list(
        WorkflowExecution.objects.filter(context__total__gt=10).values_list("id", flat=True)
    ) == [big]
    assert list(
        WorkflowExecution.objects.filter(context__tier="basic").values_list("id", flat=True)
    ) == [small]
    assert WorkflowExecution.objects.filter(context__has_key="tier").count() == 2


def counts_total(ctx):
    return {**ctx, "total": sum(ctx["amounts"])}


lookup = workflow("codec.lookup", [counts_total])


@pytest.mark.django_db
def test_json_lookups_on_context_written_by_steps():
    big = start(lookup, {"amounts": [5, 7]})
    start(lookup, {"amounts": [1, 2]})
    run_until_idle()
    assert list(
        WorkflowExecution.objects.filter(context__total__gt=10).values_list("id", flat=True)
    ) == [big]


def returns_a_set(ctx):
    count_call("returns_a_set")
    return {**ctx, "items": [{"tags": ["ok"]}, {"tags": {"red", "blue"}}]}


def never_reached(ctx):
    count_call("never_reached")
    return ctx


returns_set = workflow(
    "codec.returns_set",
    [step(returns_a_set, retry=Retry(max_attempts=3, backoff="constant", base=1)), never_reached],
)


@pytest.mark.django_db
def test_step_returning_unstorable_value_fails_without_retry():
    eid = start(returns_set, {"n": 1})
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "ContextNotSerializable"
    assert "'items[1].tags'" in execution.error["message"]
    assert "set" in execution.error["message"]
    assert execution.context == {"n": 1}
    assert calls == {"returns_a_set": 1}
    attempt = StepExecution.objects.get(execution_id=eid)
    assert attempt.status == "failed"
    assert attempt.error["type"] == "ContextNotSerializable"


def returns_object(ctx):
    return {**ctx, "client": object()}


returns_obj = workflow("codec.returns_object", [returns_object])


@pytest.mark.django_db
def test_step_returning_an_object_fails_naming_the_key():
    eid = start(returns_obj)
    run_until_idle()
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "ContextNotSerializable"
    assert "'client'" in execution.error["message"]


def returns_list(ctx):
    count_call("returns_list")
    return [ctx]


returns_non_dict = workflow(
    "codec.returns_non_dict",
    [step(returns_list, retry=Retry(max_attempts=3, backoff="constant", base=1)), never_reached],
)


@pytest.mark.django_db
def test_step_returning_a_non_dict_fails():
    eid = start(returns_non_dict, {"n": 1})
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "StepReturnedInvalidValue"
    assert "returns_list" in execution.error["message"]
    assert "list" in execution.error["message"]
    assert execution.context == {"n": 1}
    assert calls == {"returns_list": 1}


def returns_none(ctx):
    count_call("returns_none")
    return None


def records_ctx(ctx):
    seen["ctx"] = ctx
    return {**ctx, "after": True}


keeps_context = workflow("codec.keeps_context", [returns_none, records_ctx])


@pytest.mark.django_db
def test_step_returning_none_keeps_the_context():
    eid = start(keeps_context, {"n": 1, "price": PRICE})
    assert run_until_idle() == 2
    assert seen["ctx"] == {"n": 1, "price": PRICE}
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.context == {"n": 1, "price": PRICE, "after": True}
    none_step = StepExecution.objects.get(execution_id=eid, step_name="returns_none")
    assert none_step.status == "completed"


def mutates_then_raises(ctx):
    n = count_call("mutates_then_raises")
    ctx["flag"] = "changed"
    ctx["items"].append("junk")
    ctx["nested"]["k"] = "changed"
    if n == 1:
        raise RuntimeError("half-way")
    return None


mutates = workflow(
    "codec.mutates",
    [step(mutates_then_raises, retry=Retry(max_attempts=2, backoff="constant", base=1))],
)


@pytest.mark.django_db
def test_step_mutating_ctx_then_raising_leaves_context_unchanged():
    from django_durable.testing import advance_clock

    original = {"flag": "original", "items": ["a"], "nested": {"k": "v"}}
    eid = start(mutates, original)
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "pending"
    assert execution.context == {"flag": "original", "items": ["a"], "nested": {"k": "v"}}
    assert original == {"flag": "original", "items": ["a"], "nested": {"k": "v"}}

    # Returning None after mutating in place keeps the context as it was given.
    advance_clock(1)
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.context == {"flag": "original", "items": ["a"], "nested": {"k": "v"}}
