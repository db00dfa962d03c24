"""Identifiers for attempt rows: time-ordered UUIDs (version 7, RFC 9562).

Attempts are the most appended table (one row per step run). A random UUID puts each
new primary-key entry on a random page of the index, so as history grows past memory
every insert reads and dirties a page of its own; one that starts with the time lands
beside the previous one. Execution ids stay random (version 4): people type their
prefixes (`durable_inspect 3f2a`), and executions started in the same second would
share the first nine hex digits.
"""

import os
import time
import uuid

_RANDOM_B = (1 << 62) - 1
_stdlib_uuid7 = getattr(uuid, "uuid7", None)  # Python 3.14+: monotonic within a millisecond


def time_ordered() -> uuid.UUID:
    """A version 7 UUID: 48 bits of Unix time in milliseconds, then 74 random bits."""
    if _stdlib_uuid7 is not None:
        return _stdlib_uuid7()
    milliseconds = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")
    value = (
        (milliseconds & ((1 << 48) - 1)) << 80
        | 0x7 << 76  # version
        | (random >> 68) << 64  # 12 random bits
        | 0b10 << 62  # variant
        | random & _RANDOM_B
    )
    return uuid.UUID(int=value)
