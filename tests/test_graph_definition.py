"""Graph definitions: nodes, conditions, checks, ordering and the graph registry."""

from datetime import UTC, datetime, timedelta

import pytest

from django_durable.dsl.retry import Retry
from django_durable.errors import DurableError, UnknownWorkflow, WorkflowDefinitionError
from django_durable.graphs import definition as gd
from django_durable.graphs.definition import (
    UNSET,
    Archive,
    Compute,
    Graph,
    Input,
    Mutate,
    NodeValue,
    ScheduleOnce,
    ScheduleRecurring,
    UnknownNode,
    all_of,
    any_of,
    archive,
    as_condition,
    compute,
    mutate,
    provided,
    schedule_once,
    schedule_recurring,
    unblocked_when,
)
from django_durable.graphs.definition import input as input_node

T0 = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)


def fn(values):
    return 1


def is_set(value, revision=1):
    return NodeValue(value, revision, T0)


@pytest.fixture(autouse=True)
def _empty_registry(monkeypatch):
    monkeypatch.setattr(gd, "_graphs", {})


# --- NodeValue -----------------------------------------------------------------------


def test_node_value_is_set_by_revision():
    assert UNSET == NodeValue()
    assert not UNSET.is_set
    assert UNSET.value is None and UNSET.set_at is None
    assert NodeValue(None, 1, T0).is_set  # a set None is still set
    assert not NodeValue("x", 0).is_set


# --- Constructors --------------------------------------------------------------------


def test_input():
    node = input_node("email")
    assert isinstance(node, Input)
    assert (node.name, node.kind, node.condition, node.upstream) == ("email", "input", None, ())


def test_compute_with_list_retry_dict_and_seconds_timeout():
    node = compute("total", ["x", "y"], fn, retry={"max_attempts": 3}, timeout=2.5)
    assert isinstance(node, Compute)
    assert node.kind == "compute"
    assert node.fn is fn
    assert node.upstream == ("x", "y")
    assert node.condition == all_of(provided("x"), provided("y"))
    assert node.retry == Retry(max_attempts=3)
    assert node.timeout == timedelta(seconds=2.5)


def test_compute_defaults_and_retry_instance():
    policy = Retry(max_attempts=5, backoff="constant")
    node = compute("total", ["x"], fn, retry=policy, timeout=timedelta(minutes=1))
    assert node.retry is policy
    assert node.timeout == timedelta(minutes=1)
    plain = compute("total", ["x"], fn)
    assert plain.retry is None and plain.timeout is None


def test_compute_with_condition():
    condition = unblocked_when("sum", lambda node: node.value > 40)
    node = compute("alert", condition, fn)
    assert node.condition is condition
    assert node.upstream == ("sum",)


def test_compute_with_empty_upstream_always_holds():
    node = compute("seed", [], fn)
    assert node.upstream == ()
    assert node.condition.holds({})


def test_mutate():
    node = mutate("scrub", ["score"], fn, target="ssn", retry={"max_attempts": 2}, timeout=3)
    assert isinstance(node, Mutate)
    assert (node.kind, node.target, node.fn) == ("mutate", "ssn", fn)
    assert node.upstream == ("score",)
    assert node.retry == Retry(max_attempts=2)
    assert node.timeout == timedelta(seconds=3)


def test_schedules_and_archive():
    once = schedule_once("remind", ["email"], fn)
    again = schedule_recurring("weekly", ["email"], fn)
    done = archive("done", ["remind"])
    assert isinstance(once, ScheduleOnce) and once.kind == "schedule_once" and once.fn is fn
    assert isinstance(again, ScheduleRecurring) and again.kind == "schedule_recurring"
    assert again.fn is fn and again.upstream == ("email",)
    assert isinstance(done, Archive) and done.kind == "archive" and done.upstream == ("remind",)
    assert not hasattr(done, "fn")


def test_node_classes_coerce_a_list_upstream():
    node = Compute("total", ["x"], fn)
    assert node.condition == all_of("x")


# --- Node definition errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", None, 3, "1abc", "has space", "dash-name", "a.b", "x" * 201, "ünï\n"]
)
def test_bad_node_names(name):
    with pytest.raises(WorkflowDefinitionError):
        input_node(name)
    with pytest.raises(WorkflowDefinitionError):
        compute(name, ["x"], fn)


def test_node_name_limit_is_200():
    assert input_node("a" * 200).name == "a" * 200
    with pytest.raises(WorkflowDefinitionError, match="limit is 200"):
        input_node("a" * 201)


def test_node_name_message_says_identifier():
    with pytest.raises(WorkflowDefinitionError, match="identifier"):
        input_node("1abc")


@pytest.mark.parametrize(
    "make",
    [
        lambda: compute("c", ["x"], "not callable"),
        lambda: mutate("m", ["x"], None, target="x"),
        lambda: schedule_once("s", ["x"], 42),
        lambda: schedule_recurring("s", ["x"], object()),
    ],
)
def test_non_callable_fn(make):
    with pytest.raises(WorkflowDefinitionError, match="not callable"):
        make()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retry": {"attempts": 3}},
        {"retry": 3},
        {"retry": {"max_attempts": 0}},
        {"timeout": -1},
        {"timeout": 0},
        {"timeout": "5s"},
    ],
)
def test_bad_retry_or_timeout(kwargs):
    with pytest.raises(WorkflowDefinitionError):
        compute("c", ["x"], fn, **kwargs)
    with pytest.raises(WorkflowDefinitionError):
        mutate("m", ["x"], fn, target="x", **kwargs)


def test_timeout_error_names_the_node():
    with pytest.raises(WorkflowDefinitionError, match="'slow'"):
        compute("slow", ["x"], fn, timeout=-1)


def test_mutate_cannot_target_itself_or_a_bad_name():
    with pytest.raises(WorkflowDefinitionError, match="itself"):
        mutate("m", ["x"], fn, target="m")
    with pytest.raises(WorkflowDefinitionError):
        mutate("m", ["x"], fn, target="")
    with pytest.raises(WorkflowDefinitionError):
        mutate("m", ["x"], fn, target="not-a-name")


@pytest.mark.parametrize("upstream", ["x", None, 3, {"x"}, {"x": 1}, fn])
def test_bad_upstream(upstream):
    with pytest.raises(WorkflowDefinitionError, match="upstream"):
        compute("c", upstream, fn)


def test_a_single_name_upstream_suggests_a_list():
    with pytest.raises(WorkflowDefinitionError, match=r"\['x'\]"):
        archive("done", "x")


def test_upstream_items_must_be_names_or_conditions():
    with pytest.raises(WorkflowDefinitionError):
        compute("c", ["x", 3], fn)
    with pytest.raises(WorkflowDefinitionError):
        compute("c", ["bad name"], fn)


def test_node_without_upstream_and_input_with_upstream():
    with pytest.raises(WorkflowDefinitionError, match="needs an upstream"):
        Compute("c", None, fn)
    with pytest.raises(WorkflowDefinitionError, match="set from outside"):
        Input("i", provided("x"))


# --- Conditions ----------------------------------------------------------------------


def test_provided():
    condition = provided("email")
    assert condition.names() == ("email",)
    assert not condition.holds({})
    assert not condition.holds({"email": UNSET})
    assert condition.holds({"email": is_set("a@b.c")})
    assert condition.explain({}) == [("email", False, "is set")]
    assert condition.explain({"email": is_set("a@b.c")}) == [("email", True, "is set")]


def test_unblocked_when():
    seen = []

    def large(node):
        seen.append(node)
        return node.value > 40

    condition = unblocked_when("sum", large)
    assert condition.names() == ("sum",)
    assert not condition.holds({"sum": is_set(10)})
    assert condition.holds({"sum": is_set(41, revision=3)})
    assert seen == [is_set(10), is_set(41, revision=3)]  # gets the whole NodeValue
    assert condition.explain({"sum": is_set(41)}) == [("sum", True, "unblocked_when(large)")]


def test_unblocked_when_lambda_description():
    condition = unblocked_when("sum", lambda node: True)
    assert condition.explain({"sum": is_set(1)}) == [("sum", True, "unblocked_when(<lambda>)")]


def test_predicate_not_called_when_unset():
    def explode(node):
        raise AssertionError("called")

    condition = unblocked_when("sum", explode)
    assert not condition.holds({})
    assert not condition.holds({"sum": UNSET})
    assert condition.explain({}) == [("sum", False, "unblocked_when(explode)")]


def test_predicate_result_is_made_bool():
    condition = unblocked_when("items", lambda node: node.value)
    assert condition.holds({"items": is_set([1])}) is True
    assert condition.holds({"items": is_set([])}) is False


def test_predicate_exception_propagates_from_holds_but_not_explain():
    def broken(node):
        raise ValueError("boom")

    condition = unblocked_when("sum", broken)
    with pytest.raises(ValueError, match="boom"):
        condition.holds({"sum": is_set(1)})
    [(name, holds, description)] = condition.explain({"sum": is_set(1)})
    assert (name, holds) == ("sum", False)
    assert "ValueError: boom" in description


def test_unblocked_when_needs_a_callable():
    with pytest.raises(WorkflowDefinitionError, match="not callable"):
        unblocked_when("sum", 40)


def test_all_of():
    condition = all_of("x", provided("y"), ["z"])
    assert condition.names() == ("x", "y", "z")
    assert not condition.holds({"x": is_set(1), "y": is_set(2)})
    assert condition.holds({"x": is_set(1), "y": is_set(2), "z": is_set(3)})
    assert condition.explain({"y": is_set(2)}) == [
        ("x", False, "is set"),
        ("y", True, "is set"),
        ("z", False, "is set"),
    ]


def test_any_of():
    condition = any_of("email", unblocked_when("phone", lambda node: len(node.value) > 3))
    assert condition.names() == ("email", "phone")
    assert not condition.holds({})
    assert not condition.holds({"phone": is_set("12")})
    assert condition.holds({"phone": is_set("12345")})
    assert condition.holds({"email": is_set("a@b.c")})
    assert condition.explain({"phone": is_set("12345")}) == [
        ("email", False, "is set"),
        ("phone", True, "unblocked_when(<lambda>)"),
    ]


def test_nested_conditions_and_names_without_duplicates():
    condition = all_of(
        "x", any_of("y", unblocked_when("x", lambda node: node.value > 1)), ["z", "x"]
    )
    assert condition.names() == ("x", "y", "z")
    values = {"x": is_set(2), "z": is_set(0)}
    assert condition.holds(values)  # any_of holds through the predicate on x
    assert not condition.holds({"x": is_set(1), "z": is_set(0)})  # neither y nor x > 1
    assert condition.explain(values) == [
        ("x", True, "is set"),
        ("y", False, "is set"),
        ("x", True, "unblocked_when(<lambda>)"),
        ("z", True, "is set"),
        ("x", True, "is set"),
    ]


def test_combinator_errors():
    with pytest.raises(WorkflowDefinitionError):
        any_of()
    with pytest.raises(WorkflowDefinitionError):
        all_of("x", 3)
    with pytest.raises(WorkflowDefinitionError):
        any_of(None)
    with pytest.raises(WorkflowDefinitionError):
        provided("not a name")


def test_as_condition():
    condition = provided("x")
    assert as_condition(condition) is condition
    assert as_condition(["x", "y"]) == all_of(provided("x"), provided("y"))
    assert as_condition(("x",)).holds({"x": is_set(1)})
    with pytest.raises(WorkflowDefinitionError):
        as_condition("x")
    with pytest.raises(WorkflowDefinitionError):
        as_condition(42)


# --- Graphs --------------------------------------------------------------------------


def sums_nodes():
    return [
        input_node("x"),
        input_node("y"),
        compute("sum", ["x", "y"], lambda v: v["x"] + v["y"]),
        compute("alert", unblocked_when("sum", lambda n: n.value > 40), fn),
    ]


def test_graph_attributes():
    g = Graph("sums", "v1", sums_nodes(), description="adds")
    assert (g.name, g.version, g.description) == ("sums", "v1", "adds")
    assert list(g.nodes) == ["x", "y", "sum", "alert"]
    assert g.order == ("x", "y", "sum", "alert")
    assert g.node("sum").kind == "compute"
    assert g.computed() == ("sum", "alert")
    assert g.inputs() == ("x", "y")
    assert g.downstream("x") == ("sum", "alert")
    assert g.downstream("alert") == ()
    assert g.origin.startswith("tests.test_graph_definition:")


def test_graph_start_defers_to_the_runtime(monkeypatch):
    from django_durable.graphs import definition, runtime

    assert definition._starter is runtime.start  # registered when the app loads
    started = []
    monkeypatch.setattr(definition, "_starter", lambda graph: started.append(graph) or "eid")
    g = Graph("sums", "v1", sums_nodes())
    assert g.start() == "eid"
    assert started == [g]


def test_graph_accepts_a_tuple_of_nodes():
    g = Graph("g", "v1", tuple(sums_nodes()))
    assert len(g.nodes) == 4


def test_order_is_topological_with_ties_in_definition_order():
    g = Graph(
        "g",
        "v1",
        [
            compute("d", ["c", "a"], fn),
            compute("c", ["b"], fn),
            input_node("b"),
            compute("e", ["a"], fn),
            input_node("a"),
            compute("f", [], fn),
        ],
    )
    assert list(g.nodes) == ["d", "c", "b", "e", "a", "f"]
    # b, a and f are ready at once; b goes first and frees c, which is defined before a;
    # then a frees d and e, both defined before f.
    assert g.order == ("b", "c", "a", "d", "e", "f")
    for name in g.order:
        for up in g.node(name).upstream:
            assert g.order.index(up) < g.order.index(name)


def test_downstream_is_transitive_and_in_order():
    g = Graph(
        "g",
        "v1",
        [
            input_node("a"),
            input_node("b"),
            compute("c", any_of("a", "b"), fn),
            compute("d", ["c"], fn),
            compute("e", ["b"], fn),
            compute("f", all_of("e", unblocked_when("d", lambda n: True)), fn),
            archive("g", ["f"]),
        ],
    )
    assert g.downstream("a") == ("c", "d", "f", "g")
    assert g.downstream("b") == ("c", "d", "e", "f", "g")
    assert g.downstream("e") == ("f", "g")
    assert g.downstream("g") == ()
    assert g.computed() == ("c", "d", "e", "f", "g")


def test_mutate_target_is_not_an_ordering_edge():
    g = Graph(
        "credit",
        "v1",
        [
            input_node("ssn"),
            compute("score", ["ssn"], fn),
            mutate("scrub", ["score"], lambda v: None, target="ssn"),
        ],
    )
    assert g.order == ("ssn", "score", "scrub")
    assert g.downstream("ssn") == ("score", "scrub")
    assert g.downstream("scrub") == ()


def test_unknown_node():
    g = Graph("sums", "v1", sums_nodes())
    with pytest.raises(UnknownNode, match="no node 'nope'") as caught:
        g.node("nope")
    assert isinstance(caught.value, DurableError)
    assert isinstance(caught.value, KeyError)
    assert str(caught.value).startswith("Graph 'sums'")  # not KeyError's quoted repr
    with pytest.raises(UnknownNode):
        g.downstream("nope")


# --- Graph definition errors ---------------------------------------------------------


@pytest.mark.parametrize("name", ["", None, 1, "x" * 201])
def test_bad_graph_name(name):
    with pytest.raises(WorkflowDefinitionError):
        Graph(name, "v1", [input_node("x")])


@pytest.mark.parametrize("version", ["", None, 1, "v" * 51])
def test_bad_graph_version(version):
    with pytest.raises(WorkflowDefinitionError, match="version"):
        Graph("g", version, [input_node("x")])


def test_graph_name_may_be_any_short_string():
    assert Graph("Onboarding flow", "2024-01", [input_node("x")]).name == "Onboarding flow"


def test_graph_with_no_nodes():
    with pytest.raises(WorkflowDefinitionError, match="'empty'.*no nodes"):
        Graph("empty", "v1", [])


@pytest.mark.parametrize("nodes", [None, "x", input_node("x"), ["x"], [input_node("x"), fn]])
def test_graph_nodes_must_be_nodes(nodes):
    with pytest.raises(WorkflowDefinitionError):
        Graph("g", "v1", nodes)


def test_bad_description():
    with pytest.raises(WorkflowDefinitionError, match="description"):
        Graph("g", "v1", [input_node("x")], description=None)


def test_duplicate_node_names():
    with pytest.raises(WorkflowDefinitionError, match="'g'.*'x'"):
        Graph("g", "v1", [input_node("x"), compute("x", [], fn)])


def test_unknown_upstream():
    with pytest.raises(WorkflowDefinitionError, match="'total' depends on 'z'.*not a node"):
        Graph("g", "v1", [input_node("x"), compute("total", ["x", "z"], fn)])


def test_unknown_upstream_inside_a_condition():
    with pytest.raises(WorkflowDefinitionError, match="'z'"):
        Graph(
            "g",
            "v1",
            [input_node("x"), compute("c", any_of("x", unblocked_when("z", bool)), fn)],
        )


def test_self_dependency():
    with pytest.raises(WorkflowDefinitionError, match="'loop' depends on itself"):
        Graph("g", "v1", [input_node("x"), compute("loop", ["x", "loop"], fn)])


def test_two_node_cycle():
    with pytest.raises(WorkflowDefinitionError, match="'g'.*cycle: a -> b -> a"):
        Graph("g", "v1", [compute("a", ["b"], fn), compute("b", ["a"], fn)])


def test_longer_cycle_is_named_in_flow_order():
    with pytest.raises(WorkflowDefinitionError) as caught:
        Graph(
            "g",
            "v1",
            [
                input_node("x"),
                compute("after", ["c"], fn),  # downstream of the cycle, not in it
                compute("a", ["x", "c"], fn),
                compute("b", ["a"], fn),
                compute("c", ["b"], fn),
            ],
        )
    message = str(caught.value)
    cycle = message.split("cycle: ")[1].rstrip(".").split(" -> ")
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["a", "b", "c"]
    assert "after" not in cycle and "x" not in cycle
    # each arrow goes from a node to one that depends on it
    nodes = {"a": ["x", "c"], "b": ["a"], "c": ["b"]}
    for up, down in zip(cycle, cycle[1:], strict=False):
        assert up in nodes[down]


def test_mutate_target_must_be_in_the_graph():
    with pytest.raises(WorkflowDefinitionError, match="'scrub' targets 'ssn'"):
        Graph("g", "v1", [input_node("x"), mutate("scrub", ["x"], fn, target="ssn")])


# --- Registry ------------------------------------------------------------------------


def define(version="v1", nodes=None):
    """Always the same origin: this line."""
    return gd.graph("reg", version, nodes or [input_node("x")])


def test_graph_registers_with_the_callers_origin():
    g = gd.graph("sums", "v1", sums_nodes())
    assert gd.get("sums", "v1") is g
    assert gd.get("sums") is g
    module, line = g.origin.rsplit(":", 1)
    assert module == "tests.test_graph_definition"
    assert int(line) > 0
    assert gd.all_graphs() == [g]


def test_same_origin_replaces():
    first = define()
    second = define(nodes=[input_node("y")])
    assert first.origin == second.origin
    assert gd.get("reg", "v1") is second
    assert gd.all_graphs() == [second]


def test_other_origin_conflicts():
    first = define()
    with pytest.raises(WorkflowDefinitionError, match=f"already defined at {first.origin}"):
        gd.graph("reg", "v1", [input_node("x")])
    assert gd.get("reg", "v1") is first


def test_other_version_does_not_conflict_and_latest_wins():
    v1 = define("v1")
    v2 = gd.graph("reg", "v2", [input_node("x")])
    assert gd.get("reg") is v2
    assert gd.get("reg", "v1") is v1
    v1_again = define("v1")  # re-registered (autoreload): now the most recent
    assert gd.get("reg") is v1_again
    assert gd.all_graphs() == [v2, v1_again]


def test_unknown_graph():
    define("v1")
    with pytest.raises(UnknownWorkflow, match="'nope'"):
        gd.get("nope")
    with pytest.raises(UnknownWorkflow, match="versions of 'reg': v1"):
        gd.get("reg", "v9")


def test_unregister():
    define("v1")
    v2 = gd.graph("reg", "v2", [input_node("x")])
    gd.unregister("reg", "v2")
    assert gd.get("reg").version == "v1"
    assert v2 not in gd.all_graphs()
    gd.unregister("reg", "v2")  # already gone: no error
    gd.unregister("reg", "v1")
    with pytest.raises(UnknownWorkflow):
        gd.get("reg")


def test_register_directly_built_graph():
    g = Graph("direct", "v1", [input_node("x")])
    gd.register(g)
    assert gd.get("direct") is g


def test_all_graphs_sorted_by_name():
    b = gd.graph("b", "v1", [input_node("x")])
    a = gd.graph("a", "v1", [input_node("x")])
    assert gd.all_graphs() == [a, b]


def test_a_bad_graph_is_not_registered():
    with pytest.raises(WorkflowDefinitionError):
        gd.graph("bad", "v1", [compute("c", ["missing"], fn)])
    with pytest.raises(UnknownWorkflow):
        gd.get("bad")
