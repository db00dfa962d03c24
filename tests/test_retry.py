"""Retry policies, step timeouts and workflow timeouts, driven by the engine clock."""

from datetime import timedelta

import pytest

from django_durable import Retry, executions, recording, registry, start, step, workflow
from django_durable.helpers import hours, minutes, seconds
from django_durable.models import StepExecution, WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from tests.calls import calls, count_call


def _attempts(execution_id) -> list[StepExecution]:
    return list(StepExecution.objects.filter(execution_id=execution_id).order_by("started_at"))


# -- delay_after -------------------------------------------------------------------------


@pytest.mark.parametrize("attempt, expected", [(1, 20), (2, 40), (3, 80), (5, 320)])
def test_exponential_delay(attempt, expected):
    retry = Retry(backoff="exponential", base=10, max_backoff=hours(1))
    assert retry.delay_after(attempt) == timedelta(seconds=expected)


@pytest.mark.parametrize("attempt, expected", [(1, 10), (2, 20), (3, 30), (7, 70)])
def test_linear_delay(attempt, expected):
    retry = Retry(backoff="linear", base=10, max_backoff=hours(1))
    assert retry.delay_after(attempt) == timedelta(seconds=expected)


@pytest.mark.parametrize("attempt", [1, 2, 5, 20])
def test_constant_delay(attempt):
    retry = Retry(backoff="constant", base=minutes(2))
    assert retry.delay_after(attempt) == timedelta(minutes=2)


def test_delay_capped_at_max_backoff():
    exponential = Retry(backoff="exponential", base=1, max_backoff=60)
    assert exponential.delay_after(5) == timedelta(seconds=32)
    assert exponential.delay_after(6) == timedelta(seconds=60)
    assert exponential.delay_after(30) == timedelta(seconds=60)
    linear = Retry(backoff="linear", base=10, max_backoff=25)
    assert linear.delay_after(2) == timedelta(seconds=20)
    assert linear.delay_after(3) == timedelta(seconds=25)
    constant = Retry(backoff="constant", base=hours(1), max_backoff=minutes(10))
    assert constant.delay_after(1) == timedelta(minutes=10)


def test_default_max_backoff_is_five_minutes():
    assert Retry(base=1).delay_after(20) == timedelta(minutes=5)


def test_jitter_stays_within_a_quarter():
    retry = Retry(backoff="constant", base=100, max_backoff=hours(1), jitter=True)
    delays = [retry.delay_after(1) for _ in range(300)]
    assert all(timedelta(seconds=75) <= d <= timedelta(seconds=125) for d in delays)
    assert len(set(delays)) > 1  # it actually spreads


def test_jitter_is_capped():
    retry = Retry(backoff="exponential", base=10, max_backoff=30, jitter=True)
    delays = [retry.delay_after(4) for _ in range(200)]  # 160s before the cap
    assert all(d == timedelta(seconds=30) for d in delays)
    near_cap = Retry(backoff="constant", base=28, max_backoff=30, jitter=True)
    assert all(near_cap.delay_after(1) <= timedelta(seconds=30) for _ in range(200))


# -- retries end to end ------------------------------------------------------------------


def fails_twice(ctx):
    n = count_call("fails_twice")
    if n < 3:
        raise RuntimeError(f"boom {n}")
    return {**ctx, "done_on": n}


retry_three = workflow(
    "retry.three",
    [step(fails_twice, retry=Retry(max_attempts=3, backoff="exponential", base=minutes(1)))],
)


@pytest.mark.django_db
def test_step_retried_after_its_backoff_then_completes():
    eid = start(retry_three, {"order": 7})

    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    first = _attempts(eid)[0]
    assert execution.status == "pending"
    assert execution.attempt == 2
    assert execution.context == {"order": 7}
    assert first.status == "failed"
    assert execution.run_at == first.completed_at + timedelta(minutes=2)  # base * 2**1
    assert execution.locked_by is None and execution.run_token is None

    # Not due yet: nothing runs.
    assert run_until_idle() == 0
    advance_clock(minutes(1))
    assert run_until_idle() == 0
    assert calls["fails_twice"] == 1

    advance_clock(minutes(1))
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    second = _attempts(eid)[1]
    assert execution.status == "pending"
    assert execution.attempt == 3
    assert execution.run_at == second.completed_at + timedelta(minutes=4)  # base * 2**2

    advance_clock(minutes(3))
    assert run_until_idle() == 0
    advance_clock(minutes(1))
    assert run_until_idle() == 1

    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.error is None
    assert execution.context == {"order": 7, "done_on": 3}
    assert execution.completed_at is not None
    assert calls["fails_twice"] == 3

    steps = _attempts(eid)
    assert [(s.step_name, s.attempt, s.status) for s in steps] == [
        ("fails_twice", 1, "failed"),
        ("fails_twice", 2, "failed"),
        ("fails_twice", 3, "completed"),
    ]
    for number, failed in enumerate(steps[:2], start=1):
        assert failed.error["type"] == "RuntimeError"
        assert failed.error["message"] == f"boom {number}"
        assert "Traceback" in failed.error["traceback"]
        assert "fails_twice" in failed.error["traceback"]
        assert f"RuntimeError: boom {number}" in failed.error["traceback"]
        assert failed.completed_at is not None
    assert steps[2].error is None
    assert steps[2].output is None  # the context is kept once, on the execution
    assert WorkflowExecution.objects.get(id=eid).context == {"order": 7, "done_on": 3}


def always_fails(ctx):
    n = count_call("always_fails")
    raise ValueError(f"nope {n}")


retry_exhausted = workflow(
    "retry.exhausted",
    [step(always_fails, retry=Retry(max_attempts=2, backoff="constant", base=10))],
)


@pytest.mark.django_db
def test_exhausted_retries_fail_the_execution():
    eid = start(retry_exhausted, {"x": 1})
    assert run_until_idle() == 1
    advance_clock(seconds(10))
    assert run_until_idle() == 1
    advance_clock(hours(1))
    assert run_until_idle() == 0

    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "ValueError"
    assert execution.error["message"] == "nope 2"
    assert "ValueError: nope 2" in execution.error["traceback"]
    assert execution.completed_at is not None
    assert execution.current_step == "always_fails"
    assert calls["always_fails"] == 2
    assert [(s.attempt, s.status) for s in _attempts(eid)] == [(1, "failed"), (2, "failed")]


def fails_once(ctx):
    if count_call("fails_once") == 1:
        raise RuntimeError("first time")
    return {**ctx, "ok": True}


def also_fails_once(ctx):
    if count_call("also_fails_once") == 1:
        raise RuntimeError("first time")
    return {**ctx, "also": True}


workflow_level = workflow(
    "retry.workflow_level",
    [fails_once, step(also_fails_once, retry=Retry(max_attempts=1))],
    retry=Retry(max_attempts=2, backoff="constant", base=30),
)


@pytest.mark.django_db
def test_workflow_retry_applies_to_steps_without_their_own():
    eid = start(workflow_level)
    assert run_until_idle() == 1
    assert WorkflowExecution.objects.get(id=eid).status == "pending"
    advance_clock(seconds(30))
    # fails_once succeeds on its second attempt; also_fails_once has its own policy (one
    # attempt) which wins over the workflow's, so it fails the execution at once.
    assert run_until_idle() == 2
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.current_step == "also_fails_once"
    assert calls == {"fails_once": 2, "also_fails_once": 1}


no_policy = workflow("retry.no_policy", [fails_once])


@pytest.mark.django_db
def test_without_any_policy_a_step_runs_once(settings):
    settings.DURABLE = {**settings.DURABLE, "DEFAULT_RETRY": None}
    eid = start(no_policy)
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.error["message"] == "first time"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "default_retry",
    [
        {"max_attempts": 2, "backoff": "constant", "base": 45},
        Retry(max_attempts=2, backoff="constant", base=45),
    ],
)
def test_default_retry_setting_applies_when_nothing_else_does(settings, default_retry):
    settings.DURABLE = {**settings.DURABLE, "DEFAULT_RETRY": default_retry}
    eid = start(no_policy)
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "pending"
    assert execution.run_at == _attempts(eid)[0].completed_at + timedelta(seconds=45)
    advance_clock(seconds(45))
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.context == {"ok": True}


def test_retry_policy_precedence(settings):
    own = Retry(max_attempts=5)
    wf_level = Retry(max_attempts=3)
    settings.DURABLE = {**settings.DURABLE, "DEFAULT_RETRY": {"max_attempts": 7}}
    with_step_policy = step(fails_once, retry=own)
    plain = step(fails_once)
    definition = registry.get("retry.workflow_level")
    definition_without = registry.get("retry.no_policy")
    assert definition.retry is not None

    assert recording.retry_policy(definition, with_step_policy) is own
    assert recording.retry_policy(definition, plain) == definition.retry
    assert recording.retry_policy(definition_without, plain) == Retry(max_attempts=7)
    settings.DURABLE = {**settings.DURABLE, "DEFAULT_RETRY": None}
    assert recording.retry_policy(definition_without, plain) == Retry()
    assert wf_level.max_attempts == 3


# -- step timeouts ---------------------------------------------------------------------------


def slow_first_time(ctx):
    n = count_call("slow_first_time")
    if n == 1:
        advance_clock(minutes(2))  # this attempt "runs" for two minutes
        return {**ctx, "late": True}
    return {**ctx, "fast": True}


step_timeout = workflow(
    "retry.step_timeout",
    [step(slow_first_time, timeout=60, retry=Retry(max_attempts=2, backoff="constant", base=5))],
)


@pytest.mark.django_db
def test_step_running_past_its_timeout_fails_and_is_retried():
    eid = start(step_timeout, {"n": 1})
    assert run_until_idle() == 1

    execution = WorkflowExecution.objects.get(id=eid)
    first = _attempts(eid)[0]
    assert execution.status == "pending"
    assert execution.context == {"n": 1}  # the late result is discarded
    assert first.status == "failed"
    assert first.error["type"] == "StepTimeout"
    assert "slow_first_time" in first.error["message"]
    assert first.output is None
    assert execution.run_at == first.completed_at + timedelta(seconds=5)

    advance_clock(seconds(5))
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert execution.context == {"n": 1, "fast": True}
    assert "late" not in execution.context
    assert [s.status for s in _attempts(eid)] == ["failed", "completed"]


def always_slow(ctx):
    count_call("always_slow")
    advance_clock(minutes(5))
    return {**ctx, "late": True}


step_timeout_final = workflow("retry.step_timeout_final", [step(always_slow, timeout=minutes(1))])


@pytest.mark.django_db
def test_step_timeout_without_retries_fails_the_execution():
    eid = start(step_timeout_final, {"n": 1})
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "StepTimeout"
    assert execution.context == {"n": 1}
    assert calls["always_slow"] == 1


# -- workflow timeouts -------------------------------------------------------------------


def keeps_failing(ctx):
    count_call("keeps_failing")
    raise RuntimeError("try again later")


workflow_timeout = workflow(
    "retry.workflow_timeout",
    [
        step(
            keeps_failing,
            retry=Retry(max_attempts=5, backoff="constant", base=hours(3), max_backoff=hours(3)),
        )
    ],
    timeout=hours(1),
)


@pytest.mark.django_db
def test_execution_not_finished_by_its_deadline_fails_with_workflow_timeout():
    eid = start(workflow_timeout)
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.deadline == execution.created_at + timedelta(hours=1)

    assert run_until_idle() == 1
    assert WorkflowExecution.objects.get(id=eid).status == "pending"
    advance_clock(minutes(59))
    assert run_until_idle() == 0
    assert WorkflowExecution.objects.get(id=eid).status == "pending"

    advance_clock(minutes(2))
    assert run_until_idle() == 0
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "WorkflowTimeout"
    assert "retry.workflow_timeout" in execution.error["message"]
    assert execution.completed_at is not None

    # The retry that was due later never runs.
    advance_clock(hours(5))
    assert run_until_idle() == 0
    assert calls["keeps_failing"] == 1


def overruns(ctx):
    count_call("overruns")
    advance_clock(hours(2))
    return {**ctx, "overran": True}


def after_overrun(ctx):
    count_call("after_overrun")
    return {**ctx, "after": True}


deadline_between_steps = workflow(
    "retry.deadline_between_steps", [overruns, after_overrun], timeout=hours(1)
)


@pytest.mark.django_db
def test_deadline_passed_during_a_step_stops_before_the_next():
    eid = start(deadline_between_steps)
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "failed"
    assert execution.error["type"] == "WorkflowTimeout"
    assert calls == {"overruns": 1}
    assert [(s.step_name, s.status) for s in _attempts(eid)] == [("overruns", "completed")]

    # Resuming continues after the completed step instead of running it again.
    calls.clear()
    executions.resume(eid)
    assert run_until_idle() == 1
    execution = WorkflowExecution.objects.get(id=eid)
    assert execution.status == "completed"
    assert calls == {"after_overrun": 1}
    assert execution.context == {"overran": True, "after": True}
