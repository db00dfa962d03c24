"""Racing a cancel against a step that is returning, from two connections."""

import threading

from django.db import connections

import django_durable as durable
from django_durable import engine

# Gates by name: a gated step waits on its gate, so a test decides when it returns.
GATES: dict[str, dict[str, threading.Event]] = {}


def new_gate(name: str) -> dict[str, threading.Event]:
    GATES[name] = {"started": threading.Event(), "release": threading.Event()}
    return GATES[name]


def gated(ctx: dict) -> dict:
    """A step that signals it started, then returns when its gate is released."""
    gate = GATES[ctx["gate"]]
    gate["started"].set()
    gate["release"].wait(10)
    return {**ctx, "result": "kept"}


def cancel_while_it_returns(root_id, claimed, gate, round: int) -> None:
    """Run the claimed execution (its step is `gated`) and cancel `root_id` meanwhile,
    each in a thread of its own: on odd rounds the step is let go as the cancel starts,
    on even ones the cancel goes first. Fails on a deadlock or an error in either."""
    errors = []

    def finish():
        try:
            engine.run_claimed(claimed, worker="w1", queues=None)
        except Exception as exc:  # a deadlock would surface here
            errors.append(exc)
        finally:
            connections.close_all()

    def cancel():
        try:
            gate["started"].wait(10)
            if round % 2:
                gate["release"].set()  # let the step race the cancel
            durable.cancel(root_id, reason="race")
        except Exception as exc:
            errors.append(exc)
        finally:
            gate["release"].set()
            connections.close_all()

    threads = [threading.Thread(target=finish), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "deadlocked"
    assert errors == []
