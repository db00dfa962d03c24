"""Counting step calls. Step functions live at module level, so their counter does too;
tests/conftest.py clears it before every test."""

from collections import Counter

calls: Counter = Counter()


def count_call(name: str) -> int:
    """Record one call of `name`; returns how many there have been in this test."""
    calls[name] += 1
    return calls[name]
