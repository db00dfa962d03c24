"""Graphs of durable values (the Journey model, SPEC §8): named values set from outside
(`input`) or computed by the workers (`compute`) as soon as their upstream condition
holds, and again whenever an upstream value changes. A graph execution is a
`WorkflowExecution` of kind `graph`; each compute is an attempt, claimed, leased,
fenced and retried like a workflow step.

    from django_durable import graphs

    sums = graphs.graph("sums", "v1", [
        graphs.input("x"),
        graphs.input("y"),
        graphs.compute("sum", ["x", "y"], lambda values: values["x"] + values["y"]),
    ])
    eid = sums.start()
    graphs.set_value(eid, "x", 12)
    graphs.set_value(eid, "y", 2)
    graphs.get_value(eid, "sum", wait=timedelta(seconds=5))   # 14, once a worker computed it

The definitions (`definition`) import without Django; the rest needs the app registry.
"""

from ..lazy import attributes
from .definition import (
    Graph,
    NodeValue,
    UnknownNode,
    all_of,
    any_of,
    archive,
    compute,
    graph,
    input,
    mutate,
    schedule_once,
    schedule_recurring,
    unblocked_when,
)

_RUNTIME = ("start", "set_value", "unset_value", "get_value", "values", "load")
_QUERIES = ("list_executions",)

__all__ = [
    "Graph",
    "NodeValue",
    "UnknownNode",
    "all_of",
    "any_of",
    "archive",
    "compute",
    "graph",
    "input",
    "mutate",
    "schedule_once",
    "schedule_recurring",
    "unblocked_when",
    *_RUNTIME,
    *_QUERIES,
]


__getattr__ = attributes(
    __name__, {**dict.fromkeys(_RUNTIME, "runtime"), **dict.fromkeys(_QUERIES, "queries")}
)
