"""graphs.queries.list_executions: filters and sorts on node values in SQL (SQLite and
PostgreSQL alike), pages, leaves out archived executions, loads the page's values."""

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_durable import graphs
from django_durable.errors import UnknownWorkflow
from django_durable.graphs import UnknownNode
from django_durable.graphs.queries import GraphKey, list_executions
from django_durable.models import GraphValue, WorkflowExecution
from django_durable.testing import advance_clock, run_until_idle
from tests.worker_support import IS_POSTGRES

pytestmark = pytest.mark.django_db

GRAPH = "graph_query_tests"


def double(values):
    return values["score"] * 2


def grade(values):
    return "high" if values["score"] >= 10 else "low"


queried = graphs.graph(
    GRAPH,
    "v1",
    [
        graphs.input("score"),
        graphs.input("name"),
        graphs.input("flag"),
        graphs.input("amount"),
        graphs.input("when"),
        graphs.input("day"),
        graphs.input("ident"),
        graphs.input("anything"),
        graphs.compute("doubled", ["score"], double),
        graphs.compute("grade", ["score"], grade),
    ],
)
queried_v2 = graphs.graph(GRAPH, "v2", [graphs.input("score"), graphs.input("extra")])

ID_1 = uuid.UUID("00000000-0000-4000-8000-000000000001")


def make(**values):
    """Start an execution (a second after the previous one), set its inputs, run its
    computes; returns its id."""
    advance_clock(timedelta(seconds=1))
    eid = graphs.start(queried)
    for node, value in values.items():
        graphs.set_value(eid, node, value)
    run_until_idle()
    return eid


def ids(executions):
    return [execution.id for execution in executions]


def found(*filters, **options):
    return set(ids(list_executions(GRAPH, "v1", filter_by=list(filters), **options)))


@pytest.fixture
def numbers():
    """Executions with score 9, 10, 2 and 100 and one without a score, oldest first."""
    return {
        9: make(score=9, name="nine"),
        10: make(score=10, name="ten"),
        2: make(score=2, name="Two"),
        100: make(score=100, name="hundred"),
        None: make(name="none"),
    }


def test_numbers_compare_as_numbers(numbers):
    n = numbers
    assert found(("score", "gt", 9)) == {n[10], n[100]}
    assert found(("score", "gte", 10)) == {n[10], n[100]}
    assert found(("score", "lt", 10)) == {n[9], n[2]}
    assert found(("score", "lte", 9)) == {n[9], n[2]}
    assert found(("score", "eq", 10)) == {n[10]}
    assert found(("score", "eq", 10.0)) == {n[10]}
    assert found(("score", "gt", 9.5)) == {n[10], n[100]}
    assert found(("score", "eq", Decimal("10.00"))) == {n[10]}
    # computed values too (doubled = 18, 20, 4, 200)
    assert found(("doubled", "gt", 18)) == {n[10], n[100]}
    assert found(("doubled", "in", [4, 200, 7])) == {n[2], n[100]}


def test_ne_matches_set_values_that_differ(numbers):
    n = numbers
    assert found(("score", "ne", 10)) == {n[9], n[2], n[100]}  # unset score: not matched
    assert found(("name", "ne", "ten")) == {n[9], n[2], n[100], n[None]}


def test_a_value_of_another_type_does_not_match_a_comparison():
    text = make(score="10")
    flag = make(score=True)
    number = make(score=3)
    assert found(("score", "gt", 1)) == {number}
    assert found(("score", "eq", 1)) == set()  # True is not the number 1 here
    assert found(("score", "eq", "10")) == {text}
    assert found(("score", "gt", "0")) == {text}
    assert found(("score", "eq", True)) == {flag}
    assert found(("score", "ne", 3)) == {text, flag}


def test_strings_compare_by_code_point(numbers):
    n = numbers
    assert found(("name", "eq", "ten")) == {n[10]}
    assert found(("name", "gt", "nine")) == {n[10], n[None]}  # "ten", "none"
    assert found(("name", "lt", "hundred")) == {n[2]}  # "Two": upper case sorts first
    assert found(("name", "gte", "t")) == {n[10]}
    assert found(("name", "in", ["ten", "Two", "zzz"])) == {n[10], n[2]}
    assert found(("grade", "eq", "high")) == {n[10], n[100]}


def test_long_strings_compare_beyond_the_indexed_prefix():
    prefix = "p" * 150  # longer than TextKey's 100 characters
    a, b = make(name=prefix + "a"), make(name=prefix + "b")
    short = make(name="p" * 100)
    assert found(("name", "eq", prefix + "b")) == {b}
    assert found(("name", "gt", prefix + "a")) == {b}
    assert found(("name", "gte", prefix + "a")) == {a, b}
    assert found(("name", "lt", prefix + "b")) == {a, short}
    assert found(("name", "in", [prefix + "a", "p" * 100])) == {a, short}
    assert found(("name", "ne", prefix + "a")) == {b, short}


def test_booleans():
    yes, no, one = make(flag=True), make(flag=False), make(flag=1)
    assert found(("flag", "eq", True)) == {yes}
    assert found(("flag", "eq", False)) == {no}
    assert found(("flag", "eq", 1)) == {one}
    assert found(("flag", "ne", True)) == {no, one}
    assert found(("flag", "gt", False)) == {yes}
    assert found(("flag", "in", [True, False])) == {yes, no}


def test_decimals_compare_as_numbers_with_numbers():
    small = make(amount=Decimal("9.99"))
    large = make(amount=Decimal("10.01"))
    plain = make(amount=10)
    exact = make(amount=Decimal("1E+2"))
    assert found(("amount", "gt", Decimal("10"))) == {large, exact}
    assert found(("amount", "gt", 10)) == {large, exact}
    assert found(("amount", "lt", 10)) == {small}
    assert found(("amount", "gte", Decimal("10.00"))) == {large, plain, exact}
    assert found(("amount", "eq", Decimal("9.99"))) == {small}
    assert found(("amount", "eq", 100)) == {exact}
    assert found(("amount", "in", [Decimal("9.99"), 10])) == {small, plain}
    assert found(("amount", "ne", 10)) == {small, large, exact}
    assert found(("amount", "lt", 9.995)) == {small}


def test_dates_datetimes_and_uuids():
    noon = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)
    early = make(when=noon, day=date(2024, 3, 6), ident=ID_1)
    # the same instant as noon + 1 h, written with another offset
    later = make(
        when=datetime(2024, 3, 6, 15, 0, tzinfo=timezone(timedelta(hours=2))),
        day=date(2024, 12, 31),
        ident=uuid.uuid4(),
    )
    assert found(("when", "gt", noon)) == {later}
    assert found(("when", "eq", noon + timedelta(hours=1))) == {later}
    assert found(("when", "lte", noon)) == {early}
    assert found(("day", "lt", date(2024, 12, 31))) == {early}
    assert found(("day", "gte", date(2024, 3, 6))) == {early, later}
    assert found(("ident", "eq", ID_1)) == {early}
    assert found(("ident", "ne", ID_1)) == {later}
    assert found(("ident", "in", [ID_1, uuid.uuid4()])) == {early}
    assert found(("day", "eq", datetime(2024, 3, 6, tzinfo=UTC))) == set()


def test_none_is_a_value():
    null, other = make(anything=None), make(anything=[1, 2])
    make()
    assert found(("anything", "eq", None)) == {null}
    assert found(("anything", "ne", None)) == {other}
    assert found(("anything", "in", [None, 5])) == {null}
    assert found(("anything", "is_set")) == {null, other}


def test_is_set_and_is_not_set(numbers):
    n = numbers
    assert found(("score", "is_set")) == {n[9], n[10], n[2], n[100]}
    assert found(("score", "is_set", None)) == {n[9], n[10], n[2], n[100]}
    assert found(("score", "is_not_set")) == {n[None]}
    assert found(("doubled", "is_not_set")) == {n[None]}
    graphs.unset_value(n[9], "score")
    run_until_idle()
    assert found(("score", "is_not_set")) == {n[None], n[9]}
    assert found(("doubled", "is_not_set")) == {n[None], n[9]}  # its compute was unset
    assert found(("score", "eq", 9)) == set()  # an unset row keeps no value


def test_filters_combine_with_and(numbers):
    n = numbers
    assert found(("score", "gt", 5), ("name", "lt", "t")) == {n[9], n[100]}
    assert found(("score", "gt", 5), ("name", "lt", "t"), ("doubled", "lt", 100)) == {n[9]}
    assert found(("score", "gt", 5), ("score", "lt", 50)) == {n[9], n[10]}
    assert found(("score", "gt", 5), ("name", "is_not_set")) == set()
    assert found(("score", "in", [])) == set()


def test_newest_first_by_default(numbers):
    n = numbers
    assert ids(list_executions(GRAPH)) == [n[None], n[100], n[2], n[10], n[9]]
    assert ids(list_executions(GRAPH, order_by="created_at")) == [
        n[9], n[10], n[2], n[100], n[None]
    ]  # fmt: skip
    assert ids(list_executions(GRAPH, order_by=["-created_at"])) == [
        n[None], n[100], n[2], n[10], n[9]
    ]  # fmt: skip


def test_order_by_a_node_value(numbers):
    n = numbers
    assert ids(list_executions(GRAPH, order_by="score")) == [n[2], n[9], n[10], n[100], n[None]]
    assert ids(list_executions(GRAPH, order_by="-score")) == [n[100], n[10], n[9], n[2], n[None]]
    assert ids(list_executions(GRAPH, order_by="name")) == [n[2], n[100], n[9], n[None], n[10]]
    # a second key breaks ties; unset values are last in both directions
    tie = make(score=10, name="a")
    assert ids(list_executions(GRAPH, order_by=["-score", "name"]))[:3] == [n[100], tie, n[10]]
    assert ids(list_executions(GRAPH, order_by=["-score", "-name"]))[:3] == [n[100], n[10], tie]


def test_order_by_mixes_numbers_and_decimals():
    a, b, c = make(amount=Decimal("9.5")), make(amount=10), make(amount=Decimal("10.25"))
    d = make(amount=2)
    assert ids(list_executions(GRAPH, order_by="amount"))[:4] == [d, a, b, c]
    assert ids(list_executions(GRAPH, order_by="-amount"))[:4] == [c, b, a, d]


def test_order_by_updated_at(numbers):
    n = numbers
    advance_clock(timedelta(seconds=5))
    graphs.set_value(n[9], "name", "nine again")
    assert ids(list_executions(GRAPH, order_by="-updated_at"))[0] == n[9]
    assert ids(list_executions(GRAPH, order_by="updated_at"))[-1] == n[9]


def test_limit_and_offset(numbers):
    n = numbers
    everything = [n[None], n[100], n[2], n[10], n[9]]
    assert ids(list_executions(GRAPH, limit=2)) == everything[:2]
    assert ids(list_executions(GRAPH, limit=2, offset=2)) == everything[2:4]
    assert ids(list_executions(GRAPH, limit=2, offset=4)) == everything[4:]
    assert ids(list_executions(GRAPH, limit=None, offset=1)) == everything[1:]
    assert ids(list_executions(GRAPH, offset=10)) == []
    by_score = list_executions(GRAPH, filter_by=[("score", "gt", 0)], order_by="score", limit=2)
    assert ids(by_score) == [n[2], n[9]]


def test_archived_executions_are_left_out_unless_asked_for(numbers):
    n = numbers
    WorkflowExecution.objects.filter(id=n[10]).update(status="completed")
    assert n[10] not in found(("score", "gt", 0))
    assert found(("score", "gt", 0), include_archived=True) == {n[9], n[10], n[2], n[100]}
    assert len(list_executions(GRAPH)) == 4
    assert len(list_executions(GRAPH, include_archived=True)) == 5


def test_versions_and_other_graphs(numbers):
    other = graphs.start(queried_v2)
    graphs.set_value(other, "score", 10)
    assert set(ids(list_executions(GRAPH, filter_by=[("score", "eq", 10)]))) == {
        numbers[10],
        other,
    }
    assert ids(list_executions(GRAPH, "v2")) == [other]
    assert ids(list_executions(GRAPH, "v2", filter_by=[("extra", "is_not_set")])) == [other]
    assert ids(list_executions(GRAPH, filter_by=[("extra", "is_set")])) == []
    assert ids(list_executions("tests_sums")) == []


def test_values_of_the_page_come_in_one_query(numbers):
    n = numbers
    with CaptureQueriesContext(connection) as queries:
        page = list_executions(GRAPH, order_by="score", limit=3)
    assert len(queries) == 2
    assert ids(page) == [n[2], n[9], n[10]]
    assert page[0].values == {"score": 2, "name": "Two", "doubled": 4, "grade": "low"}
    assert list(page[0].values) == ["score", "name", "doubled", "grade"]  # definition order
    typed = make(amount=Decimal("1.50"), when=datetime(2024, 1, 2, tzinfo=UTC), anything=None)
    (execution,) = list_executions(GRAPH, filter_by=[("amount", "is_set")])
    assert execution.id == typed
    assert execution.values == {
        "amount": Decimal("1.50"),
        "when": datetime(2024, 1, 2, tzinfo=UTC),
        "anything": None,
    }


def test_the_values_of_a_large_page_load_in_chunks(monkeypatch):
    from django_durable.graphs import queries

    monkeypatch.setattr(queries, "VALUES_CHUNK", 2)
    made = [make(score=i) for i in range(5)]
    page = list_executions(GRAPH, order_by="score", limit=None)
    assert [execution.values["score"] for execution in page] == [0, 1, 2, 3, 4]
    assert ids(page) == made


def test_errors():
    with pytest.raises(UnknownWorkflow):
        list_executions("no_such_graph")
    with pytest.raises(UnknownWorkflow):
        list_executions(GRAPH, "v9")
    with pytest.raises(UnknownNode, match="no node 'nope'"):
        list_executions(GRAPH, filter_by=[("nope", "eq", 1)])
    with pytest.raises(UnknownNode):
        list_executions(GRAPH, order_by="-nope")
    with pytest.raises(UnknownNode):
        list_executions(GRAPH, "v1", filter_by=[("extra", "is_set")])  # a v2 node only
    with pytest.raises(ValueError, match="eq, ne, lt, lte, gt, gte, in, is_set, is_not_set"):
        list_executions(GRAPH, filter_by=[("score", "like", 1)])
    bad_filters = [
        ("score", "gt"),  # no value
        ("score",),
        "score",
        ("score", "is_set", 1),
        ("score", "in", 5),
        ("score", "in", "abc"),
        ("score", "gt", None),
        ("ident", "lt", ID_1),
        ("score", "eq", [1]),
        ("score", "eq", {"a": 1}),
        ("score", "gt", float("nan")),
        ("score", "gt", Decimal("Infinity")),
        ("name", "eq", "nul\x00"),
    ]
    for bad in bad_filters:
        with pytest.raises(ValueError):
            list_executions(GRAPH, filter_by=[bad])
    for page in ({"limit": 0}, {"limit": -1}, {"limit": "5"}, {"offset": -1}, {"offset": 1.5}):
        with pytest.raises(ValueError):
            list_executions(GRAPH, **page)
    with pytest.raises(ValueError):
        list_executions(GRAPH, order_by=[""])
    with pytest.raises(ValueError):
        list_executions(GRAPH, filter_by=("score", "eq", 1))  # a filter, not a list of them


def test_rows_of_unset_nodes_are_not_values():
    eid = make(score=4)
    graphs.unset_value(eid, "score")
    run_until_idle()
    assert GraphValue.objects.filter(execution_id=eid, node="score").exists()
    (execution,) = list_executions(GRAPH)
    assert execution.values == {}


def test_numbers_beyond_a_float():
    big, bigger = make(score=2**53), make(score=2**53 + 1)  # one float8 for both
    huge = make(score=10**20)
    assert found(("score", "eq", 2**53 + 1)) == {bigger}
    assert found(("score", "gt", 2**53)) == {bigger, huge}
    assert found(("score", "in", [2**53, 5])) == {big}
    assert found(("score", "gt", 10**19)) == {huge}


@pytest.mark.skipif(not IS_POSTGRES, reason="SQLite reads numbers as 64-bit floats")
def test_numbers_beyond_float_range_compare_exactly_on_postgres():
    huge, tiny = make(score=10**400), make(score=Decimal("1E-400"))
    more = make(score=10**400 + 1)
    assert found(("score", "gt", 10**399)) == {huge, more}
    assert found(("score", "gt", 10**400)) == {more}
    assert found(("score", "gt", 0)) == {huge, more, tiny}
    assert found(("score", "lt", Decimal("1E-399"))) == {tiny}
    assert ids(list_executions(GRAPH, order_by="-score")) == [more, huge, tiny]


def test_index_keys_sort_as_their_values_and_are_null_for_other_types():
    numbers = [-(10**400), -2.5, -1, Decimal("-0.5"), 0, Decimal("1E-400"), 0.25, 1, 7, 10**400]
    made = [make(score=number, name=f"n{index:02}") for index, number in enumerate(numbers)]
    rows = GraphValue.objects.filter(node="score").annotate(key=GraphKey("node", "value"))
    by_key = [row.execution_id for row in rows.order_by("key")]
    if IS_POSTGRES:
        assert by_key == made
    else:  # SQLite reads numbers as 64-bit floats: the huge ones are infinite, tiny ones 0
        assert set(by_key[1:-1]) == set(made[1:-1])
    eid = make(name="x" * 150, flag=True, anything=None, day=date(2024, 1, 1))
    keys = dict(
        GraphValue.objects.filter(execution_id=eid)
        .annotate(key=GraphKey("node", "value"))
        .values_list("node", "key")
    )
    if IS_POSTGRES:
        assert keys == {
            "name": "name:s" + "x" * 100,
            "flag": "flag:bt",
            "anything": None,
            "day": None,
        }
    else:
        assert keys == {"name": "x" * 100, "flag": b"\x01", "anything": None, "day": None}
