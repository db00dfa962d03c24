"""Graphs that real worker processes run in tests/test_graphs.py."""

import os
import time
from pathlib import Path

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


def slow_times_ten(values):
    """Marks that it started (a file per process), then waits for the test's go."""
    directory = Path(values["dir"])
    with open(directory / f"started-{os.getpid()}", "a") as mark:
        mark.write("ran\n")
    give_up = time.monotonic() + 60
    while not (directory / "go").exists() and time.monotonic() < give_up:
        time.sleep(0.05)
    return values["x"] * 10


slow = graphs.graph(
    "tests_slow",
    "v1",
    [
        graphs.input("x"),
        graphs.input("dir"),
        graphs.compute("times_ten", ["x", "dir"], slow_times_ten),
    ],
)
