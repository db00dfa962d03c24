"""Graphs that real worker processes run in tests/test_graphs.py."""

from django_durable import Retry, graphs


def add(values):
    return values["x"] + values["y"]


sums = graphs.graph(
    "tests_sums",
    "v1",
    [
        graphs.input("x"),
        graphs.input("y"),
        graphs.compute("sum", ["x", "y"], add, retry=Retry(max_attempts=3)),
        graphs.compute(
            "large_value_alert",
            graphs.unblocked_when("sum", lambda node: node.value > 40),
            lambda values: "alert",
        ),
    ],
)
