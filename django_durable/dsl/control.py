"""Routing nodes: `branch` runs one list of nodes chosen by a value of the context,
`decision` runs a function that may jump to another node of its list (`goto`).

Both run as attempts of their own, like steps: the function that routes is user code,
so it gets a step's retries, timeout and timeline row, and a failure in it is the
node's failure, never the previous step's.
"""

import ast
import functools
import inspect
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import NoBranchMatched, WorkflowDefinitionError
from .graph import Graph, Unit
from .moves import Goto, Move
from .nodes import Runnable, Step, as_node


class _Default:
    """The key of a branch's fallback case."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()
_CASE_TYPES = (str, int, bool, type(None))


class Branch(Runnable):
    """Run the nodes of the case matching `on(ctx)`, then the node after the branch."""

    def __init__(
        self,
        on: Callable[[dict], Any],
        cases: Mapping[Any, Any],
        *,
        default: Any = None,
        name: str | None = None,
    ) -> None:
        if not callable(on):
            raise WorkflowDefinitionError(f"branch(): on must be a function, not {on!r:.80}.")
        if not isinstance(cases, Mapping) or not cases:
            raise WorkflowDefinitionError("branch(): cases must be a non-empty dict.")
        self.on = on
        self.cases: dict[tuple, list] = {}
        self.labels: dict[tuple, str] = {}
        for key, nodes in cases.items():
            self._add_case(key, nodes)
        if default is not None:
            if _case_key(DEFAULT) in self.cases:
                raise WorkflowDefinitionError("branch(): give the default case once.")
            self._add_case(DEFAULT, default)
        first = next(iter(self.cases.values()))
        self.name = name or f"branch_{first[0].name if first else 'empty'}"

    def _add_case(self, key: Any, nodes: Any) -> None:
        if key is not DEFAULT and not isinstance(key, _CASE_TYPES):
            raise WorkflowDefinitionError(
                f"branch(): case {key!r:.80} is a {type(key).__name__}; cases are str, int, "
                "bool or None values (or DEFAULT)."
            )
        label = "default" if key is DEFAULT else str(key)
        if label in self.labels.values():
            raise WorkflowDefinitionError(
                f"branch(): two cases are both called {label!r}; node ids need them apart."
            )
        listed = list(nodes) if isinstance(nodes, list | tuple) else [nodes]
        self.cases[_case_key(key)] = [as_node("branch", node) for node in listed]
        self.labels[_case_key(key)] = label

    def compile(self, graph: Graph, prefix: str, follow: str | None) -> str:
        node_id = graph.add(prefix + self.name, self, follow)
        graph.parts[node_id] = {
            key: graph.compile(nodes, f"{node_id}/{self.labels[key]}/", follow)
            for key, nodes in self.cases.items()
        }
        return node_id

    def run(self, ctx: dict, unit: Unit) -> Move:
        value = self.on(ctx)
        entries = unit.graph.parts[unit.node_id]
        key = _case_key(value) if isinstance(value, _CASE_TYPES) else None
        if key not in entries:
            key = _case_key(DEFAULT)
        if key not in entries:
            known = ", ".join(repr(label) for label in self.labels.values())
            raise NoBranchMatched(
                f"Branch {unit.node_id!r}: no case for {value!r:.80} (cases: {known}) "
                "and no default."
            )
        return unit.graph.resolve(entries[key], lambda: ctx)


def _case_key(value: Any) -> tuple:
    """Cases match by type and value: `True` is not `1`, `None` is not `"None"`."""
    if value is DEFAULT:
        return ("default", None)
    return (type(value).__name__, value)


def branch(
    on: Callable[[dict], Any],
    cases: Mapping[Any, Any],
    *,
    default: Any = None,
    name: str | None = None,
) -> Branch:
    """Run the nodes of the case whose key equals `on(ctx)` (str, int, bool or None);
    `default` (or the key `DEFAULT`) when none does, else fail with `NoBranchMatched`.
    Each case is a node or a list of nodes; the node after the branch runs next."""
    return Branch(on, cases, default=default, name=name)


@dataclass
class Decision(Step):
    """A step whose function may return `goto("name", ctx)` to jump to a node of its
    own list, forward or back (a loop)."""

    def compile(self, graph: Graph, prefix: str, follow: str | None) -> str:
        node_id = super().compile(graph, prefix, follow)
        known = graph.scopes.get(node_id, {})
        for target in goto_targets(self.fn):
            if target not in known:
                raise WorkflowDefinitionError(
                    f"Workflow {graph.workflow_name!r}: decision {node_id!r} jumps to "
                    f"{target!r}, which is not a node of its list "
                    f"(known: {', '.join(sorted(known))})."
                )
        return node_id

    def run(self, ctx: dict, unit: Unit) -> Any:
        returned = self.fn(ctx)
        if isinstance(returned, Goto):
            return unit.graph.jump(unit.node_id, returned.node_id, returned.context)
        return returned


def decision(fn: Callable[[dict], Any], *, name: str | None = None, **options: Any) -> Decision:
    """A step that returns the next context, or `goto("node", ctx)` to jump to another
    node of the same list. Literal jump targets are checked when the workflow is
    defined; a computed one that names no node fails the step."""
    if isinstance(fn, Step):
        fn = fn.fn
    return Decision(fn=fn, name=name or getattr(fn, "__name__", ""), **options)


@functools.cache
def goto_targets(fn: Callable) -> tuple[str, ...]:
    """The names a function passes to `goto(...)` as string literals, found in its
    source (read once per function: definitions check them, diagrams draw them); none
    when the source cannot be read (a built-in, a REPL definition)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return ()
    targets = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        called = node.func
        called_name = called.id if isinstance(called, ast.Name) else getattr(called, "attr", "")
        first = node.args[0]
        if called_name == "goto" and isinstance(first, ast.Constant):
            if isinstance(first.value, str):
                targets.append(first.value)
    return tuple(targets)
