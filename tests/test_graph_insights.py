"""graphs.insights: introspect(), flow_analytics()/to_text(), mermaid(), and the hand-over
from django_durable.insights, on both databases, with graphs run in-process on a frozen
engine clock."""

from datetime import timedelta

import pytest

import django_durable as durable
from django_durable import ExecutionNotFound, Retry, UnknownWorkflow, graphs, insights
from django_durable.graphs import insights as graph_insights
from django_durable.models import WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle

pytestmark = pytest.mark.django_db
NOON = "2024-03-06 12:00:00Z"


def make_greeting(values):
    return f"Welcome, {values['name']} at {values['email_address']}"


def reject(values):
    raise ValueError("mail server\n   down")


def positive_double(values):
    if values["x"] < 0:
        raise ValueError("negative")
    return values["x"] * 2


def is_big(node):
    return node.value > 10


def forget(values):
    return None


def next_week(values):
    return timedelta(days=7)


onboarding = graphs.graph(
    "tests_insights_onboarding",
    "v1",
    [
        graphs.input("name"),
        graphs.input("email_address"),
        graphs.compute("greeting", ["name", "email_address"], make_greeting),
    ],
)
failing = graphs.graph(
    "tests_insights_failing",
    "v1",
    [graphs.input("x"), graphs.compute("checked", ["x"], reject, retry=Retry(max_attempts=1))],
)
flaky = graphs.graph(
    "tests_insights_flaky",
    "v1",
    [
        graphs.input("x"),
        graphs.compute("checked", ["x"], reject, retry=Retry(max_attempts=3, base=60)),
    ],
)
twice = graphs.graph(
    "tests_insights_twice",
    "v1",
    [
        graphs.input("x"),
        graphs.compute("double", ["x"], positive_double, retry=Retry(max_attempts=1)),
        graphs.compute("triple", ["x"], lambda values: values["x"] * 3),
    ],
)
gated = graphs.graph(
    "tests_insights_gated",
    "v1",
    [
        graphs.input("a"),
        graphs.input("b"),
        graphs.input("c"),
        graphs.compute(
            "verdict",
            graphs.all_of("a", graphs.any_of(graphs.unblocked_when("b", is_big), "c")),
            lambda values: "ok",
        ),
    ],
)


def header(eid, graph, status="waiting", started=NOON, created=NOON):
    return (
        f"Execution {eid}\n"
        f"Graph: '{graph.name}' (version v1)\n"
        f"Status: {status}\n"
        f"Created: {created} | Started: {started}\n"
    )


# -- introspect ----------------------------------------------------------------------------


def test_introspect_a_half_set_execution_shows_what_blocks_each_compute(frozen):
    eid = graphs.start(onboarding)
    graphs.set_value(eid, "name", "Luigi")
    run_until_idle()
    text = insights.introspect(eid)
    assert text == header(eid, onboarding, started="-") + (
        "Now: nothing to compute; it waits for values to be set.\n"
        "\n"
        "Values:\n"
        "- Set:\n"
        "  - name: 'Luigi' | input\n"
        "    set at 2024-03-06 12:00:00Z | rev 1\n"
        "\n"
        "- Not set:\n"
        "  - email_address: <not set> | input\n"
        "  - greeting: <not set> | compute\n"
        "\n"
        "Computations:\n"
        "- Completed:\n"
        "  (none)\n"
        "\n"
        "- Outstanding:\n"
        "  - greeting: ⬜ not set (not yet attempted) | compute\n"
        "      all_of\n"
        "        ├─ ✅ name | is set | rev 1\n"
        "        └─ 🛑 email_address | is set\n"
    )
    assert graph_insights.introspect(str(eid)) == text
    assert graph_insights.introspect(WorkflowExecution.objects.get(id=eid)) == text


def test_introspect_a_completed_compute_and_a_queued_one(frozen):
    eid = graphs.start(onboarding)
    graphs.set_value(eid, "name", "Luigi")
    advance_clock(30)
    graphs.set_value(eid, "email_address", "luigi@example.com")
    queued = insights.introspect(eid)
    assert "Now: 'greeting' to compute, queued: attempt 1, waits for a worker on queue" in queued
    assert (
        "  - greeting: ⏳ not set (queued: attempt 1, waits for a worker on queue 'default') "
        "| compute\n"
        "      all_of\n"
        "        ├─ ✅ name | is set | rev 1\n"
        "        └─ ✅ email_address | is set | rev 1\n"
    ) in queued
    run_until_idle()
    text = insights.introspect(eid)
    later = "2024-03-06 12:00:30Z"
    assert text == header(eid, onboarding, started=later) + (
        "Now: nothing to compute; it waits for values to be set.\n"
        "\n"
        "Values:\n"
        "- Set:\n"
        "  - name: 'Luigi' | input\n"
        "    set at 2024-03-06 12:00:00Z | rev 1\n"
        "  - email_address: 'luigi@example.com' | input\n"
        f"    set at {later} | rev 1\n"
        "  - greeting: 'Welcome, Luigi at luigi@example.com' | compute\n"
        f"    set at {later} | rev 1\n"
        "\n"
        "- Not set:\n"
        "  (none)\n"
        "\n"
        "Computations:\n"
        "- Completed:\n"
        f"  - greeting: ✅ computed | compute | rev 1 | at {later} | from name rev 1, "
        "email_address rev 1\n"
        "\n"
        "- Outstanding:\n"
        "  (none)\n"
    )


def test_introspect_a_stale_compute_queued_then_running(frozen):
    eid = graphs.start(onboarding)
    graphs.set_value(eid, "name", "Luigi")
    graphs.set_value(eid, "email_address", "luigi@example.com")
    run_until_idle()
    graphs.set_value(eid, "name", "Mario")
    text = insights.introspect(eid)
    assert "  - name: 'Mario' | input\n    set at 2024-03-06 12:00:00Z | rev 2\n" in text
    assert (
        "  - greeting: ⏳ stale rev 1 (since: name rev 1 → 2) (queued: attempt 1, waits for "
        "a worker on queue 'default') | compute\n"
    ) in text
    WorkflowExecution.objects.filter(id=eid).update(
        status="running", locked_by="w1", locked_until=frozen + timedelta(minutes=5)
    )
    text = insights.introspect(eid)
    assert (
        "Now: computing 'greeting' (attempt 1) on worker 'w1', lease until 2024-03-06 12:05:00Z."
    ) in text
    assert (
        "  - greeting: ▶ stale rev 1 (since: name rev 1 → 2) (running: attempt 1 on worker "
        "'w1', lease until 2024-03-06 12:05:00Z) | compute\n"
    ) in text


def test_introspect_a_compute_out_of_retries_shows_its_error(frozen):
    eid = graphs.start(failing)
    graphs.set_value(eid, "x", 1)
    run_until_idle()
    text = insights.introspect(eid)
    assert "Now: nothing to compute; it waits for values to be set.\n" in text
    assert "- Not set:\n  - checked: <not set> | compute\n" in text
    assert text.endswith(
        "- Outstanding:\n"
        f"  - checked: ❌ not set (failed at {NOON}: ValueError: mail server down; 1 attempt in "
        "all; tried again when its upstream changes) | compute\n"
        "      all_of\n"
        "        └─ ✅ x | is set | rev 1\n"
    )


def test_introspect_a_compute_waiting_its_turn_and_one_that_failed_keeping_its_value(frozen):
    eid = graphs.start(twice)
    graphs.set_value(eid, "x", 1)
    run_until_idle()
    graphs.set_value(eid, "x", -1)
    text = insights.introspect(eid)
    assert (
        "  - double: ⏳ stale rev 1 (since: x rev 1 → 2) (queued: attempt 1, waits for a worker "
        "on queue 'default') | compute\n"
    ) in text
    assert (
        "  - triple: 🔄 stale rev 1 (since: x rev 1 → 2) (not yet attempted on these values; "
        "1 attempt before) | compute\n"
    ) in text
    run_until_idle()
    text = insights.introspect(eid)
    assert "  - double: 2 | compute\n    set at 2024-03-06 12:00:00Z | rev 1\n" in text
    assert (
        f"  - triple: ✅ computed | compute | rev 2 | at {NOON} | from x rev 2\n"
        "\n- Outstanding:\n"
        f"  - double: ❌ keeps rev 1 (failed at {NOON}: ValueError: negative; 2 attempts in "
        "all; tried again when its upstream changes) | compute\n"
    ) in text
    assert "    class n_double s_failed\n" in insights.mermaid(eid)


def test_introspect_a_compute_waiting_for_its_retry(frozen):
    eid = graphs.start(flaky)
    graphs.set_value(eid, "x", 1)
    run_until_idle()
    text = insights.introspect(eid)
    assert "Status: pending\n" in text
    assert "Now: 'checked' to compute, retry at 2024-03-06 12:02:00Z: attempt 2.\n" in text
    assert (
        "  - checked: ⏳ not set (retry at 2024-03-06 12:02:00Z: attempt 2; last error: "
        "ValueError: mail server down) | compute\n"
    ) in text


def test_introspect_draws_nested_conditions_and_truncates_long_values(frozen):
    eid = graphs.start(gated)
    graphs.set_value(eid, "a", "x" * 100)
    graphs.set_value(eid, "b", 3)
    run_until_idle()
    text = insights.introspect(eid)
    assert f"  - a: '{'x' * 58}… | input\n" in text
    assert text.endswith(
        "  - verdict: ⬜ not set (not yet attempted) | compute\n"
        "      all_of\n"
        "        ├─ ✅ a | is set | rev 1\n"
        "        └─ any_of\n"
        "            ├─ 🛑 b | unblocked_when(is_big) | rev 1\n"
        "            └─ 🛑 c | is set\n"
    )


def test_introspect_a_cancelled_graph_and_an_unset_input(frozen):
    eid = graphs.start(onboarding)
    graphs.set_value(eid, "name", "Luigi")
    graphs.unset_value(eid, "name")
    durable.cancel(eid, reason="left")
    text = insights.introspect(eid)
    assert "Status: cancelled\n" in text
    assert f"Now: it is cancelled at {NOON} (reason: left); nothing is computed" in text
    assert f"  - name: <not set> | input\n    unset at {NOON} | rev 2\n" in text


def test_introspect_refuses_what_is_not_a_graph_execution():
    with pytest.raises(ExecutionNotFound):
        graph_insights.introspect("00000000-0000-0000-0000-000000000000")


# -- flow analytics ------------------------------------------------------------------------


@pytest.fixture
def dataset(frozen):
    """Three executions of `onboarding`:
    - e1 (created at +0): name at +0, email_address at +10 (greeting computed at +10),
      name changed at +100 (greeting recomputed at +100);
    - e2 (created at +20): name at +50;
    - e3 (created at +60): nothing set, cancelled.
    And one of `failing`, which is not counted."""
    e1 = graphs.start(onboarding)
    graphs.set_value(e1, "name", "Mario")
    advance_clock(10)
    graphs.set_value(e1, "email_address", "mario@example.com")
    run_until_idle()
    advance_clock(10)
    e2 = graphs.start(onboarding)
    advance_clock(30)
    graphs.set_value(e2, "name", "Luigi")
    advance_clock(10)
    e3 = graphs.start(onboarding)
    durable.cancel(e3)
    advance_clock(40)
    graphs.set_value(e1, "name", "Maria")
    run_until_idle()
    graphs.set_value(graphs.start(failing), "x", 1)
    run_until_idle()
    return frozen


def node(name, kind, reached, percent, to_reach, known, ends, ends_all, ends_reached):
    return {
        "node": name,
        "kind": kind,
        "reached_count": reached,
        "reached_percentage": percent,
        "average_seconds_to_reach": to_reach,
        "first_set_known_count": known,
        "ends_here_count": ends,
        "ends_here_percentage_of_all": ends_all,
        "ends_here_percentage_of_reached": ends_reached,
    }


def test_flow_analytics_counts_per_node(dataset, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):
        report = graph_insights.flow_analytics("tests_insights_onboarding")
    assert report == {
        "graph": "tests_insights_onboarding",
        "version": None,
        "analyzed_at": "2024-03-06T12:01:40+00:00",
        "since": None,
        "executions": {"count": 3, "by_status": {"waiting": 2, "cancelled": 1}},
        "nodes": [
            # e1 at its latest change (+100, rev 2), e2 at its first set (+30).
            node("name", "input", 2, 66.7, 65.0, 1, 1, 33.3, 50.0),
            node("email_address", "input", 1, 33.3, 10.0, 1, 0, 0.0, 0.0),
            # e1 ends at greeting: it and name were set at +100; greeting comes later.
            node("greeting", "compute", 1, 33.3, 100.0, 0, 1, 33.3, 100.0),
        ],
    }


def test_flow_analytics_by_version_since_and_through_insights(dataset):
    report = insights.flow_analytics(onboarding, since=dataset + timedelta(seconds=20))
    assert report["version"] == "v1"
    assert report["since"] == "2024-03-06T12:00:20+00:00"
    assert report["executions"] == {"count": 2, "by_status": {"waiting": 1, "cancelled": 1}}
    assert [
        (n["node"], n["reached_count"], n["average_seconds_to_reach"]) for n in report["nodes"]
    ] == [
        ("name", 1, 30.0),
        ("email_address", 0, None),
        ("greeting", 0, None),
    ]
    assert report["nodes"][0]["ends_here_count"] == 1
    by_name = insights.flow_analytics("tests_insights_onboarding", since=timedelta(seconds=81))
    assert by_name["executions"]["count"] == 2  # created at +20 and +60; it is +100 now
    with pytest.raises(UnknownWorkflow):
        graph_insights.flow_analytics("tests_insights_onboarding", version="v9")
    with pytest.raises(UnknownWorkflow):
        insights.flow_analytics("no_such_graph_or_workflow")


def test_flow_analytics_text(dataset):
    text = insights.to_text(insights.flow_analytics("tests_insights_onboarding"))
    assert text == (
        "Graph: 'tests_insights_onboarding'\n"
        "Versions: all\n"
        "Analyzed at: 2024-03-06 12:01:40Z\n"
        "\n"
        "EXECUTION STATS:\n"
        "----------\n"
        "Total executions: 3\n"
        "By status: waiting 2, cancelled 1\n"
        "\n"
        "NODES (3):\n"
        "----------\n"
        "name           input    ████████████████████░░░░░░░░░░  66.7%  reached 2, avg time "
        "to reach +1 min 5 s, ends here 1 (33.3% of all, 50.0% of reached)\n"
        "email_address  input    ██████████░░░░░░░░░░░░░░░░░░░░  33.3%  reached 1, avg time "
        "to reach +10 s, ends here 0 (0.0% of all, 0.0% of reached)\n"
        "greeting       compute  ██████████░░░░░░░░░░░░░░░░░░░░  33.3%  reached 1, avg time "
        "to reach +1 min 40 s, ends here 1 (33.3% of all, 100.0% of reached)\n"
    )


def test_flow_analytics_of_a_graph_with_no_executions():
    report = graph_insights.flow_analytics(gated)
    assert report["executions"] == {"count": 0, "by_status": {}}
    assert [n["reached_percentage"] for n in report["nodes"]] == [0.0] * 4


# -- mermaid -------------------------------------------------------------------------------


def test_mermaid_of_a_graph_draws_dependencies_mutations_and_kinds():
    odd = graphs.Graph(
        'odd "graph" <b> & #1',
        "v1",
        [
            graphs.input("email"),
            graphs.input("level"),
            graphs.compute("welcome", graphs.unblocked_when("level", is_big), make_greeting),
            graphs.mutate("forget_email", ["welcome", "email"], forget, target="email"),
            graphs.schedule_once("reminder", ["welcome"], next_week),
            graphs.archive("done", ["reminder"]),
        ],
    )
    assert insights.mermaid(odd) == (
        "graph TD\n"
        "    subgraph graph_nodes[\"🧩 'odd #34;graph#34; #60;b#62; #38; #35;1', version v1\"]\n"
        '        n_email["email"]\n'
        '        n_level["level"]\n'
        '        n_welcome["welcome<br/>compute: make_greeting"]\n'
        '        n_forget_email["forget_email<br/>mutate: forget"]\n'
        '        n_reminder["reminder<br/>schedule_once: next_week"]\n'
        '        n_done["done<br/>archive"]\n'
        "    end\n"
        '    n_level -->|"unblocked_when(is_big)"| n_welcome\n'
        "    n_welcome --> n_forget_email\n"
        "    n_email --> n_forget_email\n"
        '    n_forget_email -.->|"mutates"| n_email\n'
        "    n_welcome --> n_reminder\n"
        "    n_reminder --> n_done\n"
        "    classDef inputNode fill:#e1f5fe,stroke:#01579b,stroke-width:2px,color:#000000\n"
        "    classDef computeNode fill:#f3e5f5,stroke:#4a148c,stroke-width:2px,color:#000000\n"
        "    classDef scheduleNode fill:#fff3e0,stroke:#e65100,stroke-width:2px,color:#000000\n"
        "    classDef mutateNode fill:#e8f5e8,stroke:#2e7d32,stroke-width:2px,color:#000000\n"
        "    classDef archiveNode fill:#eceff1,stroke:#37474f,stroke-width:2px,color:#000000\n"
        "    class n_email,n_level inputNode\n"
        "    class n_welcome computeNode\n"
        "    class n_forget_email mutateNode\n"
        "    class n_reminder scheduleNode\n"
        "    class n_done archiveNode\n"
    )


def test_mermaid_of_an_execution_colours_nodes_by_state(frozen):
    eid = graphs.start(onboarding)
    graphs.set_value(eid, "name", "Luigi")
    run_until_idle()
    text = insights.mermaid(eid)
    assert text == insights.mermaid(str(eid))
    assert text == insights.mermaid(WorkflowExecution.objects.get(id=eid))
    assert text == (
        "graph TD\n"
        "    subgraph graph_nodes[\"🧩 'tests_insights_onboarding', version v1\"]\n"
        '        n_name["name<br/>rev 1"]\n'
        '        n_email_address["email_address"]\n'
        '        n_greeting["greeting<br/>compute: make_greeting"]\n'
        "    end\n"
        "    n_name --> n_greeting\n"
        "    n_email_address --> n_greeting\n"
        "    classDef s_set fill:#198754,color:#ffffff\n"
        "    class n_name s_set\n"
        "    classDef s_not_set fill:#6c757d,color:#ffffff\n"
        "    class n_email_address,n_greeting s_not_set\n"
    )
    failed = graphs.start(failing)
    graphs.set_value(failed, "x", 1)
    run_until_idle()
    assert "    class n_checked s_failed\n" in insights.mermaid(failed)


def test_mermaid_of_a_graph_name_and_workflows_still_theirs():
    assert insights.mermaid("tests_insights_onboarding") == graph_insights.mermaid(onboarding)
    assert insights.mermaid(onboarding).startswith("graph TD\n    subgraph graph_nodes")
    assert graph_insights.graph_subject("no_such_thing") is None
    with pytest.raises(UnknownWorkflow):
        insights.mermaid("no_such_thing")
    with pytest.raises(ExecutionNotFound):
        insights.mermaid("00000000-0000-0000-0000-000000000000")
