"""Workflow definitions: steps, policies, validation, registration and the ctx helpers."""

from datetime import timedelta

import pytest

from django_durable import Retry, Step, Workflow, WorkflowDefinitionError, registry, step, workflow
from django_durable.dsl import END, Next
from django_durable.errors import UnknownWorkflow
from django_durable.helpers import (
    append,
    assign,
    days,
    hours,
    increment,
    minutes,
    seconds,
    update,
)


def validate(ctx):
    return {**ctx, "valid": True}


def charge(ctx):
    return {**ctx, "charged": True}


def refund(ctx):
    return None


@step
def decorated(ctx):
    return {**ctx, "decorated": True}


@step(
    name="renamed", retry=Retry(max_attempts=3), timeout=30, queue="payments", compensate="refund"
)
def decorated_with_options(ctx):
    return ctx


@pytest.fixture
def cleanup():
    """Names of workflows a test registers; unregistered afterwards."""
    names = []
    yield names
    for name in names:
        registry.unregister(name)


# -- steps -------------------------------------------------------------------------------


def test_plain_function_becomes_step_named_after_it(cleanup):
    cleanup.append("dsl.plain")
    wf = workflow("dsl.plain", [validate, charge])
    assert isinstance(wf, Workflow)
    assert wf.node_ids() == ["validate", "charge"]
    assert all(isinstance(node, Step) for node in wf.nodes)
    assert wf.node("validate").fn is validate
    assert wf.entry(dict) == Next("validate")
    assert wf.after("validate", dict) == Next("charge")
    assert wf.after("charge", dict) == END
    assert wf.node("charge").retry is None
    assert wf.node("charge").timeout is None
    assert wf.node("charge").queue is None


def test_bare_step_decorator():
    assert isinstance(decorated, Step)
    assert decorated.name == "decorated"
    assert decorated.retry is None
    assert decorated.timeout is None
    # A decorated step can still be called like the function it wraps.
    assert decorated({"a": 1}) == {"a": 1, "decorated": True}


def test_step_decorator_with_options():
    assert isinstance(decorated_with_options, Step)
    assert decorated_with_options.name == "renamed"
    assert decorated_with_options.retry == Retry(max_attempts=3)
    assert decorated_with_options.timeout == timedelta(seconds=30)
    assert decorated_with_options.queue == "payments"
    assert decorated_with_options.compensate == "refund"


def test_step_called_with_function_and_options():
    s = step(
        charge,
        name="pay",
        retry={"max_attempts": 2, "backoff": "linear"},
        timeout=timedelta(minutes=2),
        queue="q2",
        compensate=refund,
    )
    assert s.fn is charge
    assert s.name == "pay"
    assert s.retry == Retry(max_attempts=2, backoff="linear")
    assert isinstance(s.retry, Retry)
    assert s.timeout == timedelta(minutes=2)
    assert s.queue == "q2"
    assert s.compensate is refund


def test_step_without_name_uses_function_name():
    assert step(charge).name == "charge"
    assert step(charge, timeout=5).name == "charge"


def test_step_of_a_step_rewraps_the_function():
    s = step(decorated, name="again")
    assert s.fn is decorated.fn
    assert s.name == "again"


def test_workflow_with_step_forms(cleanup):
    cleanup.append("dsl.forms")
    wf = workflow(
        "dsl.forms",
        [
            validate,
            decorated,
            step(charge, name="pay", compensate="refund"),
            decorated_with_options,
        ],
        compensations=[refund],
    )
    assert wf.node_ids() == ["validate", "decorated", "pay", "renamed"]
    assert wf.node("pay").compensate == "refund"
    assert wf.compensations == (refund,)


def test_compensate_may_be_the_function_itself(cleanup):
    cleanup.append("dsl.comp_fn")
    wf = workflow("dsl.comp_fn", [step(charge, compensate=refund)])
    assert wf.node("charge").compensate is refund


def test_workflow_options(cleanup):
    cleanup.append("dsl.options")
    wf = workflow(
        "dsl.options",
        [validate],
        timeout=hours(2),
        queue="orders",
        retry={"max_attempts": 4, "backoff": "constant", "base": 3},
        version=2,
        description="An order.",
    )
    assert wf.timeout == timedelta(hours=2)
    assert wf.queue == "orders"
    assert wf.retry == Retry(max_attempts=4, backoff="constant", base=timedelta(seconds=3))
    assert wf.version == "2"
    assert wf.description == "An order."


# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        (timedelta(minutes=3), timedelta(minutes=3)),
        (45, timedelta(seconds=45)),
        (1.5, timedelta(seconds=1.5)),
        (0.25, timedelta(milliseconds=250)),
    ],
)
def test_durations_as_timedelta_int_or_float(given, expected, cleanup):
    assert step(charge, timeout=given).timeout == expected
    assert Retry(base=given).base == expected
    assert Retry(max_backoff=given).max_backoff == expected
    cleanup.append("dsl.durations")
    assert workflow("dsl.durations", [validate], timeout=given).timeout == expected


def test_retry_defaults():
    retry = Retry()
    assert retry.max_attempts == 1
    assert retry.backoff == "exponential"
    assert retry.base == timedelta(seconds=1)
    assert retry.max_backoff == timedelta(minutes=5)
    assert retry.jitter is False


def test_retry_coerce():
    r = Retry(max_attempts=2)
    assert Retry.coerce(r) is r
    assert Retry.coerce(None) is None
    assert Retry.coerce({"max_attempts": 5, "jitter": True}) == Retry(max_attempts=5, jitter=True)


# -- bad definitions -----------------------------------------------------------------------


def test_empty_nodes_rejected():
    with pytest.raises(WorkflowDefinitionError, match=r"'dsl\.empty' has no steps"):
        workflow("dsl.empty", [])
    with pytest.raises(UnknownWorkflow):
        registry.get("dsl.empty")


def test_non_callable_node_rejected():
    with pytest.raises(WorkflowDefinitionError, match=r"'dsl\.bad_node'.*42 is not a step"):
        workflow("dsl.bad_node", [validate, 42])
    with pytest.raises(WorkflowDefinitionError, match="is not a step"):
        workflow("dsl.bad_node", ["validate"])
    with pytest.raises(UnknownWorkflow):
        registry.get("dsl.bad_node")


def test_non_callable_step_function_rejected():
    with pytest.raises(WorkflowDefinitionError, match="not callable"):
        step("charge", name="x")


def test_duplicate_step_names_rejected(cleanup):
    with pytest.raises(
        WorkflowDefinitionError, match=r"'dsl\.dup_steps' has two steps named 'validate'"
    ):
        workflow("dsl.dup_steps", [validate, charge, validate])
    with pytest.raises(WorkflowDefinitionError, match="two steps named 'pay'"):
        workflow("dsl.dup_steps", [step(validate, name="pay"), step(charge, name="pay")])
    with pytest.raises(UnknownWorkflow):
        registry.get("dsl.dup_steps")
    # Renaming one of them fixes it.
    cleanup.append("dsl.dup_steps")
    wf = workflow("dsl.dup_steps", [validate, step(validate, name="validate_again")])
    assert wf.node_ids() == ["validate", "validate_again"]


def test_duplicate_workflow_name_from_another_place_rejected(cleanup):
    cleanup.append("dsl.dup")
    first = workflow("dsl.dup", [validate])
    with pytest.raises(WorkflowDefinitionError, match=r"'dsl\.dup' is already defined at"):
        workflow("dsl.dup", [charge])
    assert registry.get("dsl.dup") is first


def _define_same():
    return workflow("dsl.same_place", [validate])


def test_same_definition_registered_twice_replaces(cleanup):
    cleanup.append("dsl.same_place")
    first = _define_same()
    second = _define_same()
    assert first is not second
    assert registry.get("dsl.same_place") is second


def test_registry_get_accepts_workflow_object(cleanup):
    cleanup.append("dsl.get_obj")
    wf = workflow("dsl.get_obj", [validate])
    assert registry.get(wf) is wf
    assert registry.get("dsl.get_obj") is wf
    assert wf in registry.all_workflows()


def test_unknown_workflow_name():
    with pytest.raises(UnknownWorkflow, match="dsl.nothing"):
        registry.get("dsl.nothing")


@pytest.mark.parametrize("bad", [-1, -0.5, timedelta(seconds=-3), 0, timedelta()])
def test_non_positive_timeout_rejected(bad):
    with pytest.raises(WorkflowDefinitionError, match="timeout must be positive"):
        step(charge, timeout=bad)
    with pytest.raises(
        WorkflowDefinitionError, match=r"Workflow 'dsl\.neg' timeout must be positive"
    ):
        workflow("dsl.neg", [validate], timeout=bad)
    with pytest.raises(UnknownWorkflow):
        registry.get("dsl.neg")


@pytest.mark.parametrize("bad", ["30", True, [1]])
def test_timeout_of_wrong_type_rejected(bad):
    with pytest.raises(WorkflowDefinitionError, match="must be a timedelta or a number of seconds"):
        step(charge, timeout=bad)


def test_bad_backoff_rejected():
    with pytest.raises(WorkflowDefinitionError, match="backoff must be one of.*'fibonacci'"):
        Retry(backoff="fibonacci")
    with pytest.raises(WorkflowDefinitionError, match="backoff"):
        step(charge, retry={"backoff": "fibonacci"})


@pytest.mark.parametrize("bad", [0, -1])
def test_max_attempts_below_one_rejected(bad):
    with pytest.raises(WorkflowDefinitionError, match="max_attempts must be at least 1"):
        Retry(max_attempts=bad)
    with pytest.raises(WorkflowDefinitionError, match="max_attempts must be at least 1"):
        workflow("dsl.zero", [validate], retry={"max_attempts": bad})


@pytest.mark.parametrize("bad", [1.5, "3", True])
def test_max_attempts_must_be_int(bad):
    with pytest.raises(WorkflowDefinitionError, match="max_attempts must be an int"):
        Retry(max_attempts=bad)


def test_negative_retry_durations_rejected():
    with pytest.raises(WorkflowDefinitionError, match="Retry base must be positive"):
        Retry(base=-1)
    with pytest.raises(WorkflowDefinitionError, match="Retry max_backoff must be positive"):
        Retry(max_backoff=timedelta(seconds=-1))


def test_unknown_retry_dict_key_rejected():
    with pytest.raises(WorkflowDefinitionError, match=r"Unknown Retry option\(s\): \['tries'\]"):
        Retry.coerce({"tries": 3})
    with pytest.raises(WorkflowDefinitionError, match="Unknown Retry option"):
        step(charge, retry={"max_attempts": 2, "delay": 5})
    with pytest.raises(WorkflowDefinitionError, match="Unknown Retry option"):
        workflow("dsl.bad_retry", [validate], retry={"attempts": 2})


def test_retry_of_wrong_type_rejected():
    with pytest.raises(WorkflowDefinitionError, match="retry must be a Retry or a dict, not int"):
        step(charge, retry=3)


def test_compensate_name_not_in_compensations_rejected():
    with pytest.raises(
        WorkflowDefinitionError,
        match=r"'dsl\.comp'.*step 'charge' compensates with 'refund'.*not in the workflow's "
        "compensations",
    ):
        workflow("dsl.comp", [step(charge, compensate="refund")])
    with pytest.raises(WorkflowDefinitionError, match="'undo'"):
        workflow("dsl.comp", [step(charge, compensate="undo")], compensations=[refund])
    with pytest.raises(UnknownWorkflow):
        registry.get("dsl.comp")


def test_non_callable_compensation_rejected():
    with pytest.raises(WorkflowDefinitionError, match="compensation 'refund' is not callable"):
        workflow("dsl.comp_bad", [validate], compensations=["refund"])


@pytest.mark.parametrize("bad", ["", None, 5])
def test_bad_workflow_name_rejected(bad):
    with pytest.raises(WorkflowDefinitionError, match="workflow name must be a non-empty string"):
        workflow(bad, [validate])


def test_bad_queue_rejected():
    with pytest.raises(WorkflowDefinitionError, match="queue must be a non-empty string"):
        workflow("dsl.bad_queue", [validate], queue="")
    with pytest.raises(WorkflowDefinitionError, match="queue must be a non-empty string"):
        step(charge, queue="")


def test_get_unknown_step_explains():
    wf = Workflow(name="dsl.unregistered", nodes=[])
    with pytest.raises(WorkflowDefinitionError, match="has no step 'gone'"):
        wf.node("gone")


# -- helpers -----------------------------------------------------------------------------


def test_assign_returns_new_dict():
    ctx = {"a": 1}
    new = assign(ctx, "b", 2)
    assert new == {"a": 1, "b": 2}
    assert ctx == {"a": 1}
    assert assign(ctx, "a", 5) == {"a": 5}
    assert ctx == {"a": 1}


def test_update_returns_new_dict():
    ctx = {"n": 2}
    assert update(ctx, "n", lambda v: v * 10) == {"n": 20}
    assert update(ctx, "m", lambda v: v + 1, default=0) == {"n": 2, "m": 1}
    assert update(ctx, "m", lambda v: v) == {"n": 2, "m": None}
    assert ctx == {"n": 2}


def test_append_returns_new_dict_and_list():
    items = ["x"]
    ctx = {"items": items}
    new = append(ctx, "items", "y")
    assert new == {"items": ["x", "y"]}
    assert ctx == {"items": ["x"]}
    assert items == ["x"]
    assert append({}, "items", 1) == {"items": [1]}


def test_increment_returns_new_dict():
    ctx = {"count": 3}
    assert increment(ctx, "count") == {"count": 4}
    assert increment(ctx, "count", by=2.5) == {"count": 5.5}
    assert increment(ctx, "other") == {"count": 3, "other": 1}
    assert ctx == {"count": 3}


def test_duration_helpers():
    assert seconds(90) == timedelta(seconds=90)
    assert minutes(2) == timedelta(minutes=2)
    assert hours(1.5) == timedelta(minutes=90)
    assert days(3) == timedelta(days=3)
    assert all(isinstance(h(1), timedelta) for h in (seconds, minutes, hours, days))


# -- names that go into the database -----------------------------------------------------


def test_name_limits_are_the_columns_lengths():
    from django_durable.dsl import names
    from django_durable.models import Event, PendingInput, StepExecution, WorkflowExecution

    def length(model, field):
        return model._meta.get_field(field).max_length

    assert names.WORKFLOW_NAME == length(WorkflowExecution, "workflow_name")
    assert names.VERSION == length(WorkflowExecution, "workflow_version")
    assert (
        names.QUEUE == length(WorkflowExecution, "queue") == length(WorkflowExecution, "run_queue")
    )
    assert names.NODE_ID == length(StepExecution, "step_name")
    assert names.NODE_ID == length(WorkflowExecution, "current_step")
    assert names.EVENT_NAME == length(Event, "name")
    assert names.INPUT_NAME == length(PendingInput, "input_name")
    assert names.IDEMPOTENCY_KEY == length(WorkflowExecution, "idempotency_key")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: workflow("w" * 201, [validate]), "workflow name .* the limit is 200"),
        (lambda: workflow("", [validate]), "workflow name must be a non-empty string"),
        (lambda: workflow("dsl.long_queue", [validate], queue="q" * 101), "limit is 100"),
        (lambda: workflow("dsl.long_version", [validate], version="9" * 51), "limit is 50"),
        (lambda: step(validate, name="s" * 201), "step name .* the limit is 200"),
        (lambda: step(validate, queue="q" * 101), "queue .* the limit is 100"),
    ],
)
def test_names_too_long_or_empty_are_refused_when_defined(build, message):
    with pytest.raises(WorkflowDefinitionError, match=message):
        build()
    with pytest.raises(ValueError):  # a definition error is also a ValueError
        build()
    with pytest.raises(UnknownWorkflow):
        registry.get("w" * 201)


def test_a_workflow_is_a_graph_of_readable_node_ids(cleanup):
    cleanup.append("dsl.graph")
    wf = workflow("dsl.graph", [validate, step(charge, queue="payments")])
    assert wf.graph.entry_id == "validate"
    assert wf.graph.follows == {"validate": "charge", "charge": None}
    assert wf.run_queue("charge", "default") == "payments"
    assert wf.run_queue("validate", "default") == "default"
    with pytest.raises(WorkflowDefinitionError, match="has no step 'gone'"):
        wf.after("gone", dict)
