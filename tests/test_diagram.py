"""diagram: one model of a workflow's compiled graph, drawn as SVG and as Mermaid text."""

import re
import xml.etree.ElementTree as ET

import pytest

from django_durable import (
    DEFAULT,
    NonRetryableError,
    branch,
    decision,
    diagram,
    foreach,
    goto,
    parallel,
    starting,
    step,
    workflow,
)
from django_durable.events import send_event
from django_durable.helpers import assign
from django_durable.inputs import provide_input, wait_for_input
from django_durable.models import WorkflowExecution
from django_durable.testing import run_until_idle
from django_durable.waits import wait_for_event

pytestmark = pytest.mark.django_db
SVG = "{http://www.w3.org/2000/svg}"


def noop(ctx):
    return ctx


def receive(ctx):
    return ctx


def check(ctx):
    return ctx


def ship(ctx):
    return ctx


linear = workflow("tests.diagram.linear", [receive, check, ship])


def classify(ctx):
    return ctx


def extract(ctx):
    return ctx


def validate(ctx):
    return ctx


def sign(ctx):
    return ctx


def review_by_hand(ctx):
    return ctx


def store(ctx):
    return ctx


documents = workflow(
    "tests.diagram.documents",
    [
        classify,
        branch(
            lambda ctx: ctx["kind"],
            {"invoice": [extract, validate], "contract": sign, "spam": []},
            default=review_by_hand,
            name="route",
        ),
        store,
    ],
)


def route_by_amount(ctx):
    if ctx["amount"] > 10_000:
        return goto("finance_review", ctx)
    if ctx["amount"] > 100:
        return goto("manager_approval", ctx)
    return ctx


def auto_approve(ctx):
    return goto("pay_out", ctx)


def finance_review(ctx):
    return ctx


def manager_approval(ctx):
    return ctx


def pay_out(ctx):
    return ctx


def bump(ctx):
    return {**ctx, "rounds": ctx.get("rounds", 0) + 1}


def again(ctx):
    return goto("bump", ctx) if ctx["rounds"] < 3 else ctx


expenses = workflow(
    "tests.diagram.expenses",
    [decision(route_by_amount), decision(auto_approve), finance_review, manager_approval, pay_out],
)
looping = workflow("tests.diagram.looping", [bump, decision(again), store])


def legal_review(ctx):
    return {"clauses_ok": True}


def credit_check(ctx):
    if ctx.get("bad_credit"):
        raise NonRetryableError("rating too low")
    return {"rating": "A"}


def audit(ctx):
    return {"audited": True}


review = workflow(
    "tests.diagram.review",
    [
        classify,
        branch(
            lambda ctx: ctx["kind"],
            {
                "contract": parallel(legal_review, credit_check, audit, name="checks"),
                DEFAULT: review_by_hand,
            },
            name="route",
        ),
        store,
    ],
)


def send_one(ctx, address, index):
    if address.endswith("@invalid"):
        raise NonRetryableError(f"no mailbox {address}")
    if ctx.get("hold"):
        wait_for_event("go")
    return f"msg-{index}"


campaign = workflow(
    "tests.diagram.campaign",
    [
        receive,
        foreach("send", lambda ctx: ctx["to"], send_one, concurrency=2, on_error="continue"),
        store,
    ],
)


def book_flight(ctx):
    return assign(ctx, "flight", "LH400")


def cancel_flight(ctx):
    return None


def reserve_seat(ctx, seat, index):
    return seat


def release_seat(ctx, seat, index):
    return None


def charge_card(ctx):
    return ctx


def refund_card(ctx):
    return None


def confirm(ctx):
    if ctx.get("refuse"):
        raise NonRetryableError("the agency refused")
    return ctx


trip = workflow(
    "tests.diagram.trip",
    [
        step(book_flight, compensate="cancel_flight"),
        foreach("seats", lambda ctx: ctx["seats"], step(reserve_seat, compensate=release_seat)),
        step(charge_card, compensate=refund_card),
        confirm,
    ],
    compensations=[cancel_flight],
)


def approve(ctx):
    return assign(ctx, "answer", wait_for_input("ok?", type="approval"))


def wait_for_go(ctx):
    return {"go": wait_for_event("go")}


def merge(ctx, results):
    return goto("apologize", ctx) if results["credit_check"][0] == "error" else ctx


def apologize(ctx):
    return ctx


joined = workflow(
    "tests.diagram.joined",
    [
        parallel(legal_review, credit_check, into=merge, on_error="complete_all", name="checks"),
        store,
        apologize,
    ],
)
# "a_b" and "a/b" (step b in block a) read the same once made Mermaid ids
clash = workflow(
    "tests.diagram.clash", [step(noop, name="a_b"), parallel(step(check, name="b"), name="a")]
)
approval = workflow("tests.diagram.approval", [approve, ship])
gather = workflow("tests.diagram.gather", [parallel(wait_for_go, legal_review, name="gather")])

SCRIPT = "<script>alert(1)</script>"
hostile = workflow(
    "tests.diagram.hostile",
    [
        step(noop, name=SCRIPT),
        branch(lambda ctx: 1, {"<script>": check, 'say "hi" & #1': ship}, name="pick"),
    ],
)


def run(definition, input):
    execution_id = starting.start(definition, input)
    run_until_idle()
    return WorkflowExecution.objects.get(id=execution_id)


def edges(model, kind=None):
    return {
        (edge.source, edge.target, edge.label)
        for edge in model.edges
        if kind is None or edge.kind == kind
    }


def statuses(model):
    return {node_id: node.status for node_id, node in model.nodes.items()}


def parsed(model):
    return ET.fromstring(diagram.svg(model))


def svg_nodes(root):
    return {g.get("data-node"): g for g in root.iter(f"{SVG}g") if g.get("data-node")}


def shape(group):
    """A node's shape (the front one of an item's stack) or a block's rect."""
    return [child for child in group if child.tag in (f"{SVG}rect", f"{SVG}polygon")][-1]


def box_fill(group):
    return shape(group).get("fill")


def box(group):
    """The bounding box (x, y, right, bottom) of a node's shape or a block's rect."""
    shape_ = shape(group)
    if shape_.tag == f"{SVG}rect":
        x, y = float(shape_.get("x")), float(shape_.get("y"))
        return x, y, x + float(shape_.get("width")), y + float(shape_.get("height"))
    points = [tuple(map(float, p.split(","))) for p in shape_.get("points").split()]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


# -- the model ---------------------------------------------------------------------------


def test_a_linear_workflow_runs_from_start_to_end():
    model = diagram.model(linear)
    assert model.top == ("__start__", "receive", "check", "ship", "__end__")
    assert [node.kind for node in model.nodes.values()] == ["start", "step", "step", "step", "end"]
    assert edges(model) == {
        ("__start__", "receive", ""),
        ("receive", "check", ""),
        ("check", "ship", ""),
        ("ship", "__end__", ""),
    }
    assert set(statuses(model).values()) == {None}
    assert diagram.model("tests.diagram.linear").top == model.top  # by registered name


def test_a_branch_has_its_cases_and_default_inside_its_block():
    model = diagram.model(documents)
    route = model.nodes["route"]
    assert route.kind == "branch"
    assert route.parts == (
        ("route/invoice/extract", "route/invoice/validate"),
        ("route/contract/sign",),
        ("route/default/review_by_hand",),
    )
    assert edges(model, "case") == {
        ("route", "route/invoice/extract", "invoice"),
        ("route", "route/contract/sign", "contract"),
        ("route", "store", "spam"),  # an empty case goes straight on
        ("route", "route/default/review_by_hand", "default"),
    }
    assert {
        model.nodes[i].parent for i in ("route/invoice/validate", "route/default/review_by_hand")
    } == {"route"}
    # every case ends at the node after the branch
    assert {(s, t) for s, t, _ in edges(model, "next") if t == "store"} == {
        ("route/invoice/validate", "store"),
        ("route/contract/sign", "store"),
        ("route/default/review_by_hand", "store"),
    }


def test_decisions_point_at_their_literal_goto_targets():
    model = diagram.model(expenses)
    assert model.nodes["route_by_amount"].kind == "decision"
    assert edges(model, "jump") == {
        ("route_by_amount", "finance_review", "goto"),
        ("route_by_amount", "manager_approval", "goto"),
        ("auto_approve", "pay_out", "goto"),
    }
    assert ("route_by_amount", "auto_approve", "") in edges(model, "next")  # or carry on
    assert edges(diagram.model(looping), "jump") == {("again", "bump", "goto")}  # a loop
    # a parallel's `into` may jump too
    assert edges(diagram.model(joined), "jump") == {("checks", "apologize", "goto")}


def test_parallel_nests_inside_a_branch_case():
    model = diagram.model(review)
    checks = model.nodes["route/contract/checks"]
    assert (checks.kind, checks.parent) == ("parallel", "route")
    assert checks.parts == (
        ("route/contract/checks/legal_review",),
        ("route/contract/checks/credit_check",),
        ("route/contract/checks/audit",),
    )
    assert {model.nodes[p[0]].parent for p in checks.parts} == {"route/contract/checks"}
    assert edges(model, "fork") == {("route/contract/checks", p[0], "") for p in checks.parts}
    # the branches join and go on after the enclosing branch
    assert {t for s, t, _ in edges(model, "next") if s.startswith("route/contract/checks/")} == {
        "store"
    }


def test_a_foreach_is_one_block_with_its_item_step():
    model = diagram.model(campaign)
    assert model.nodes["send"].kind == "foreach"
    assert model.nodes["send"].parts == (("send/send_one",),)
    assert model.nodes["send/send_one"].kind == "item"
    assert edges(model, "fork") == {("send", "send/send_one", "each item")}
    assert ("send/send_one", "store", "") in edges(model, "next")


def test_compensations_hang_off_their_steps_by_undo_edges():
    model = diagram.model(trip)
    assert edges(model, "undo") == {
        ("book_flight", "undo:book_flight", "undo"),
        ("seats/reserve_seat", "undo:seats/reserve_seat", "undo"),
        ("charge_card", "undo:charge_card", "undo"),
    }
    undo = model.nodes["undo:seats/reserve_seat"]
    assert (undo.kind, undo.label, undo.parent) == ("compensation", "release_seat", "seats")
    assert model.nodes["book_flight"].compensation == "undo:book_flight"
    assert model.nodes["confirm"].compensation is None


# -- statuses from a run -----------------------------------------------------------------


def test_statuses_of_a_completed_run_and_the_path_not_taken():
    execution = run(documents, {"kind": "contract"})
    model = diagram.model(documents, execution)
    assert model.execution_status == "completed"
    assert statuses(model) == {
        "__start__": None,
        "classify": "completed",
        "route": "completed",
        "route/invoice/extract": None,
        "route/invoice/validate": None,
        "route/contract/sign": "completed",
        "route/default/review_by_hand": None,
        "store": "completed",
        "__end__": None,
    }
    assert not any(node.current for node in model.nodes.values())  # it ended


def test_a_failed_parallel_branch_is_red_and_the_execution_sits_on_the_block():
    execution = run(review, {"kind": "contract", "bad_credit": True})
    model = diagram.model(review, execution)
    assert execution.status == "failed"
    assert model.nodes["route/contract/checks/credit_check"].status == "failed"
    assert model.nodes["route/contract/checks"].status == "failed"
    assert model.nodes["store"].status is None
    assert [n.id for n in model.nodes.values() if n.current] == ["route/contract/checks"]


def test_a_step_waiting_for_input_is_current_then_completes():
    execution = run(approval, {})
    model = diagram.model(approval, execution)
    assert (model.nodes["approve"].status, model.nodes["approve"].current) == ("waiting", True)
    assert model.nodes["ship"].status is None

    provide_input(execution.id, "ok?", True)
    run_until_idle()
    execution.refresh_from_db()
    model = diagram.model(approval, execution)
    assert statuses(model)["approve"] == statuses(model)["ship"] == "completed"


def test_a_branch_waiting_for_an_event_shows_on_its_member_row():
    execution = run(gather, {})
    model = diagram.model(gather, execution)
    assert model.nodes["gather/wait_for_go"].status == "waiting"
    assert model.nodes["gather/legal_review"].status == "completed"
    assert (model.nodes["gather"].status, model.nodes["gather"].current) == ("waiting", True)

    send_event(execution.id, "go", {"by": "Ada"})
    run_until_idle()
    execution.refresh_from_db()
    assert set(statuses(diagram.model(gather, execution)).values()) == {None, "completed"}


def test_foreach_items_are_summarised_not_drawn_one_by_one():
    addresses = ["a@x.org", "b@x.org", "gone@invalid", "c@x.org", "d@x.org"]
    execution = run(campaign, {"to": addresses})
    model = diagram.model(campaign, execution)
    item = model.nodes["send/send_one"]
    assert (item.status, item.detail) == ("failed", "4/5 completed, 1 failed")
    assert model.nodes["send"].status == "completed"  # on_error="continue"
    assert len(model.nodes) == len(diagram.model(campaign).nodes)
    assert len(svg_nodes(parsed(model))) == len(model.nodes)
    assert "4/5 completed, 1 failed" in diagram.svg(model)
    declarations = re.findall(r"^\s*n_send_send_one\(", diagram.to_mermaid(model), flags=re.M)
    assert len(declarations) == 1


def test_held_foreach_items_count_before_they_ever_ran():
    execution = run(campaign, {"to": ["a@x.org", "b@x.org", "c@x.org"], "hold": True})
    model = diagram.model(campaign, execution)
    item = model.nodes["send/send_one"]
    # two wait for the event (concurrency=2), the third is held and has no attempt yet
    assert (item.status, item.detail) == ("waiting", "0/3 completed")
    assert (model.nodes["send"].status, model.nodes["send"].current) == ("waiting", True)


def test_a_saga_marks_the_compensations_that_ran():
    execution = run(trip, {"seats": ["1A", "1B"], "refuse": True})
    assert execution.status == "compensated"
    model = diagram.model(trip, execution)
    assert statuses(model)["confirm"] == "failed"
    assert model.nodes["confirm"].current
    assert {
        node_id: status
        for node_id, status in statuses(model).items()
        if node_id.startswith("undo:")
    } == {
        "undo:book_flight": "completed",
        "undo:seats/reserve_seat": "completed",
        "undo:charge_card": "completed",
    }
    assert model.nodes["seats/reserve_seat"].detail == "2/2 completed"

    untouched = diagram.model(trip, run(trip, {"seats": ["2C"]}))
    assert untouched.nodes["undo:book_flight"].status is None  # nothing to undo
    assert untouched.nodes["book_flight"].status == "completed"


# -- SVG ---------------------------------------------------------------------------------


def test_the_svg_is_xml_with_a_node_per_diagram_node():
    execution = run(trip, {"seats": ["1A"], "refuse": True})
    model = diagram.model(trip, execution)
    root = parsed(model)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img" and root.get("class") == "durable-diagram"
    assert root.get("aria-label") == "Diagram of workflow tests.diagram.trip, execution compensated"
    nodes = svg_nodes(root)
    assert set(nodes) == set(model.nodes)
    assert {n: g.get("data-status") for n, g in nodes.items()} == {
        n: node.status or "none" for n, node in model.nodes.items()
    }
    assert nodes["confirm"].get("data-current") == "true"
    fills = {n: box_fill(g) for n, g in nodes.items()}
    assert fills["confirm"] == "#dc3545" and fills["book_flight"] == "#198754"
    assert fills["undo:charge_card"] == "#198754"
    text = diagram.svg(model)
    assert "<script" not in text and "href" not in text  # no script, no external asset
    assert set(re.findall(r"url\(([^)]*)\)", text)) == {"#durable-arrow"}  # its own markers
    legend = " ".join(t.text for t in root.iter(f"{SVG}text") if t.text)
    for entry in ("completed", "failed", "not run", "undo (compensation)", "current step"):
        assert entry in legend


@pytest.mark.parametrize(
    "definition", [documents, expenses, review, campaign, trip, looping, joined, hostile]
)
def test_nodes_do_not_overlap_and_sit_inside_their_blocks(definition):
    model = diagram.model(definition)
    root = parsed(model)
    nodes = {n: box(g) for n, g in svg_nodes(root).items()}
    blocks = {g.get("data-block"): box(g) for g in root.iter(f"{SVG}g") if g.get("data-block")}
    assert set(blocks) == {n for n, node in model.nodes.items() if node.kind in diagram.BLOCKS}
    names = sorted(nodes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (ax, ay, ar, ab), (bx, by, br, bb) = nodes[a], nodes[b]
            assert ar <= bx or br <= ax or ab <= by or bb <= ay, (a, b)
    for node_id, node in model.nodes.items():
        if node.parent is not None:
            x, y, r, b = nodes[node_id]
            px, py, pr, pb = blocks[node.parent]
            assert px <= x and py <= y and r <= pr and b <= pb, node_id
    # the top-down order: each "next" edge goes down the page
    for source, target, _ in edges(model, "next"):
        assert nodes[source][3] < nodes[target][1], (source, target)


def test_labels_are_escaped_in_the_svg():
    model = diagram.model(hostile)
    text = diagram.svg(model)
    assert "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    root = ET.fromstring(text)
    nodes = svg_nodes(root)
    assert SCRIPT in nodes  # data-node round-trips the id
    assert [t.text for t in nodes[SCRIPT].iter(f"{SVG}text")] == [SCRIPT]
    labels = {t.text for t in root.iter(f"{SVG}text") if t.get("class") == "durable-edge-label"}
    assert {"<script>", 'say "hi" & #1'} <= labels


def test_control_characters_do_not_break_the_xml():
    model = diagram.model(linear)
    model.nodes["check"].label = "bad\x00\x1bname"
    root = parsed(model)  # would raise on a raw control character
    assert [t.text for t in svg_nodes(root)["check"].iter(f"{SVG}text")] == ["bad\ufffd\ufffdname"]


# -- Mermaid -----------------------------------------------------------------------------


def mermaid_ids(text):
    return re.findall(r"^\s*(n_\w+)[\[\(\{]", text, flags=re.M)


MERMAID_EDGE = re.compile(r'^    (n_\w+) (-->|==>|-\.->)(?:\|"[^"]*"\|)? (n_\w+)$')


def test_mermaid_has_subgraphs_sanitised_ids_and_edges():
    model = diagram.model(review)
    text = diagram.to_mermaid(model)
    lines = text.splitlines()
    assert lines[0] == "graph TD"
    assert [line.strip() for line in lines if "subgraph" in line] == [
        'subgraph b_route["branch route"]',
        'subgraph b_route_contract_checks["parallel checks"]',
    ]
    assert sum(line.strip() == "end" for line in lines) == 2
    declared = mermaid_ids(text)
    assert len(set(declared)) == len(declared) == len(model.nodes)
    assert "n_route_contract_checks_credit_check" in declared
    assert '    n_route -->|"contract"| n_route_contract_checks' in lines
    arrows = [MERMAID_EDGE.match(line) for line in lines if MERMAID_EDGE.match(line)]
    assert len(arrows) == len(model.edges)
    assert all({arrow.group(1), arrow.group(3)} <= set(declared) for arrow in arrows)
    assert "classDef" not in text  # no execution: no statuses


def test_mermaid_marks_jumps_compensations_and_statuses():
    assert '    n_again ==>|"goto"| n_bump' in diagram.to_mermaid(diagram.model(looping))
    execution = run(trip, {"seats": ["1A"], "refuse": True})
    text = diagram.to_mermaid(diagram.model(trip, execution))
    assert '    n_book_flight -.->|"undo"| n_undo_book_flight' in text
    assert "    classDef undo stroke-dasharray:5 3" in text
    assert "    classDef s_failed fill:#dc3545,color:#ffffff" in text
    assert "    class n_confirm s_failed" in text
    assert "    class n_confirm current" in text
    completed = re.search(r"^    class (\S+) s_completed$", text, flags=re.M).group(1)
    assert set(completed.split(",")) >= {"n_book_flight", "n_undo_book_flight", "n_charge_card"}


def test_labels_are_escaped_in_mermaid():
    text = diagram.to_mermaid(diagram.model(hostile))
    assert "<script" not in text and "</script" not in text
    assert '["#60;script#62;alert(1)#60;/script#62;"]' in text
    assert '-->|"say #34;hi#34; #38; #35;1"|' in text
    assert 'n__script_alert_1___script_["' in text  # an id of its own, no < or /


def test_mermaid_ids_stay_unique_when_two_node_ids_read_the_same():
    model = diagram.model(clash)
    declared = mermaid_ids(diagram.to_mermaid(model))
    assert sorted(declared) == sorted(["n___start__", "n_a_b", "n_a", "n_a_b_2", "n___end__"])
