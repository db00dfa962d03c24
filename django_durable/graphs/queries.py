"""Graph executions found by their values (SPEC §8): `list_executions` filters and sorts
a graph's executions on node values in SQL, one `EXISTS` on `durable_graph_value` per
filter, and loads the values of the page it returns in one more query.

Values compare as Python compares them, type by type, on PostgreSQL and SQLite alike:

- numbers (int, float, and Decimal, which the codec stores as a tagged string) compare
  as numbers with each other: 9 < 10, 10 == Decimal("10.0");
- strings compare with strings by code point (PostgreSQL compares them in collation
  "C", whatever the database's), booleans with booleans (False < True), dates with dates,
  datetimes with datetimes as instants (SQLite: to the millisecond); UUIDs and None
  only for (in)equality;
- a value of another type never matches (`("x", "gt", 1)` does not match an x of "2"),
  except with `ne`, which matches every set value not equal to the one given.

Every operator but `is_not_set` matches only executions where the node is set.

Numbers, strings and booleans are compared through `GraphKey(node, value)`, the
expression GraphValue is meant to be indexed on:

    models.Index(GraphKey("node", "value"), name="durable_graph_value_key")

On PostgreSQL it is one text,
`node:` + a type letter + a payload that sorts as the value does (a number: the bits of
its float8, 17 hex digits; a string: its first TEXT_KEY_LENGTH characters; a boolean:
t or f), in collation "C". Bounded in size whatever the value holds, and holding the
node, so the planner's statistics on it are statistics per node. Where the key alone
cannot tell (two numbers with one float8, strings longer than the key), the exact
value is compared too. On SQLite the key is the value itself, typed (numbers, then
text, then booleans as blobs, as SQLite sorts them), exact but for long strings.

GraphKey and the exact comparisons live in `django_durable.value_keys`, which `models`
imports for the index.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.db.models import (
    BooleanField,
    Expression,
    ExpressionWrapper,
    F,
    Q,
    Value,
)
from django.db.models.functions import NullIf
from django.db.models.lookups import IsNull

from .. import codec
from ..value_keys import (
    TEXT_KEY_LENGTH,
    GraphKey,
    Instant,
    NumberExact,
    TextExact,
    backend_of,
    pg_sortable,
)
from .definition import UnknownNode, all_graphs, get

if TYPE_CHECKING:
    from ..models import WorkflowExecution

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "is_set", "is_not_set")
# Sortable columns of the execution; any other name in `order_by` is a node.
# `updated_at` is when a value of the execution last changed (its latest `set_at`), or
# its creation if none did.
EXECUTION_ORDERS = ("created_at", "started_at", "completed_at", "updated_at")
VALUES_CHUNK = 900  # executions whose values one query loads (SQLite's parameter limit)

_SQL_OPS = {"eq": "=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
# What a comparison of values implies of their keys (keys sort as values do, but two
# values may share a key).
_KEY_OPS = {"eq": "=", "lt": "<=", "lte": "<=", "gt": ">=", "gte": ">="}
_KEYED = ("bool", "number", "text")  # kinds compared through GraphKey
_UNORDERED = ("null", "uuid")  # kinds compared with eq, ne and in only


@dataclass(frozen=True)
class _Operand:
    """A value given to a filter: its kind (how it is compared) and the value."""

    kind: str  # null, bool, number, text, date, datetime, uuid
    value: Any


def _operand(value: Any, node: str, op: str) -> _Operand:
    if value is None:
        kind = "null"
    elif isinstance(value, bool):
        kind = "bool"
    elif isinstance(value, int):
        kind = "number"
    elif isinstance(value, (float, Decimal)):
        finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
        if not finite:
            raise ValueError(f"Filter ({node!r}, {op!r}): {value!r} is not a finite number.")
        kind = "number"
    elif isinstance(value, str):
        try:
            codec.encode(value)
        except Exception as exc:  # ContextNotSerializable: no value can hold it
            raise ValueError(f"Filter ({node!r}, {op!r}): {exc}") from None
        kind = "text"
    elif isinstance(value, datetime):
        kind = "datetime"
    elif isinstance(value, date):
        kind = "date"
    elif isinstance(value, UUID):
        kind = "uuid"
    else:
        raise ValueError(
            f"Filter ({node!r}, {op!r}): cannot compare with {type(value).__name__} "
            f"{value!r:.80}; give None, a bool, int, float, Decimal, str, date, datetime "
            "or UUID."
        )
    if op in _SQL_OPS and op != "eq" and kind in _UNORDERED:
        raise ValueError(
            f"Filter ({node!r}, {op!r}): {value!r:.80} has no order; use eq, ne or in."
        )
    return _Operand(kind, value)


class _Matches(Expression):
    """The row is node `name`'s, with a value that `op` (eq, lt, lte, gt, gte, ne or
    in) matches with the operand(s), compared as the module docstring says."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, node, value, name: str, op: str, operands: tuple[_Operand, ...]):
        super().__init__()
        self.node, self.value = node, value
        self.name, self.op, self.operands = name, op, operands

    def get_source_expressions(self):
        return [self.node, self.value]

    def set_source_expressions(self, exprs):
        self.node, self.value = exprs

    def as_sql(self, compiler, connection):
        vendor = backend_of(connection)
        if self.op in ("eq", "ne", "in"):
            sql, params = self._any_equal(compiler, vendor)
            if self.op == "ne":
                sql = f"NOT COALESCE({sql}, FALSE)"
        else:
            sql, params = self._compare(compiler, vendor, self.op, self.operands[0])
        node, node_params = compiler.compile(self.node)
        keyed = self.op != "ne" and all(operand.kind in _KEYED for operand in self.operands)
        if vendor == "postgresql" and keyed:
            # The key holds the node already: a plain condition on the node would make
            # the planner count its selectivity twice (expect a fifth of the rows with
            # five nodes). Unestimated, it only makes the key be computed for this
            # node's row alone (being cheap, it is checked first).
            guard = _unestimated(f"{node} = %s")
            return f"({sql} AND {guard})", [*params, *node_params, self.name]
        return f"({node} = %s AND {sql})", [*node_params, self.name, *params]

    def _compile(self, expression_class, compiler):
        if expression_class is GraphKey:
            return compiler.compile(GraphKey(self.node, self.value))
        return compiler.compile(expression_class(self.value))

    def _any_equal(self, compiler, vendor) -> tuple[str, list]:
        """One of the operands equals the value (each keyed kind in one IN)."""
        parts, params = [], []
        by_kind: dict[str, list[Any]] = {}
        for operand in self.operands:
            by_kind.setdefault(operand.kind, []).append(operand.value)
        for kind, values in by_kind.items():
            values = list(dict.fromkeys(values))
            if kind in _KEYED:
                op = "eq" if len(values) == 1 else "in"
                sql, more = self._keyed(compiler, vendor, kind, op, values)
                parts.append(sql)
                params += more
                continue
            for value in values:
                sql, more = self._compare(compiler, vendor, "eq", _Operand(kind, value))
                parts.append(sql)
                params += more
        return "(" + " OR ".join(parts) + ")", params

    def _keyed(self, compiler, vendor, kind, op, values) -> tuple[str, list]:
        """Compare the key, within the range of keys of this kind; then the exact value
        where the key alone cannot tell, unestimated: PostgreSQL estimates the rows from
        the key's statistics (a bare comparison of the exact value, which has none,
        makes it expect 200 times too few for an equality)."""
        keys = _KEYS[vendor]
        key, params = self._compile(GraphKey, compiler)
        pieces = [keys.key_of(self.name, kind, value) for value in values]
        bound = ", ".join(piece[0] for piece in pieces)
        params += [param for piece in pieces for param in piece[1]]
        exact = keys.exact(kind, values)
        if op == "in":
            sql = f"{key} IN ({bound})"
        else:
            sql = f"{key} {_SQL_OPS[op] if exact else _KEY_OPS[op]} {bound}"
            lowest, beyond = keys.range(self.name, kind)
            if op in ("gt", "gte") and beyond is not None:
                sql += f" AND {key} < %s"
                params.append(beyond)
            elif op in ("lt", "lte") and lowest is not None:
                sql += f" AND {key} >= %s"
                params.append(lowest)
        if exact:
            return f"({sql})", params
        exact_class, exact_of = keys.exact_values[kind]
        value_sql, value_params = self._compile(exact_class, compiler)
        operands = [exact_of(value) for value in values]
        listed = ", ".join(sql for sql, _ in operands)
        compared = f"IN ({listed})" if op == "in" else f"{_SQL_OPS[op]} {listed}"
        return (
            f"({sql} AND {_unestimated(f'{value_sql} {compared}')})",
            [*params, *value_params, *(param for _, more in operands for param in more)],
        )

    def _compare(self, compiler, vendor, op, operand) -> tuple[str, list]:
        if operand.kind in _KEYED:
            return self._keyed(compiler, vendor, operand.kind, op, [operand.value])
        value = operand.value
        if operand.kind == "datetime":
            instant, params = self._compile(Instant, compiler)
            parameter = "%s::timestamptz" if vendor == "postgresql" else "julianday(%s)"
            return f"{instant} {_SQL_OPS[op]} {parameter}", [*params, value.isoformat()]
        column, column_params = compiler.compile(self.value)
        template, parameter = _TEMPLATES[vendor][operand.kind]
        params = list(column_params) * template.count("{c}")
        if parameter is not None:
            params.append(parameter(value))
        return template.format(c=column, op=_SQL_OPS[op]), params


def _unestimated(condition: str) -> str:
    """`condition`, in a form PostgreSQL has no statistics for and so estimates to hold
    for 99.5% of rows (DEFAULT_NOT_UNK_SEL): it leaves the row estimate to the other
    conditions. NULL (unknown) stays false."""
    return f"NULLIF({condition}, FALSE) IS NOT NULL"


def _short(value: str) -> bool:
    """A string shorter than the key's length is its own key: comparing a value's key
    with it compares the value (a longer value's key is its prefix, and sorts as it)."""
    return len(value) < TEXT_KEY_LENGTH


class _PostgresKeys:
    """GraphKey on PostgreSQL: `node:` + type letter (b, n, s) + payload."""

    LETTERS = {"bool": "b", "number": "n", "text": "s"}
    exact_values = {
        "number": (NumberExact, lambda value: ("%s::numeric", [str(value)])),
        "text": (TextExact, lambda value: ("%s", [value])),
    }

    def key_of(self, node: str, kind: str, value) -> tuple[str, list]:
        prefix = f"{node}:{self.LETTERS[kind]}"
        if kind == "bool":
            return "%s", [prefix + ("t" if value else "f")]
        if kind == "text":
            return "%s", [prefix + value[:TEXT_KEY_LENGTH]]
        sortable = pg_sortable("%s::numeric")
        return f"(%s || {sortable})", [prefix, *[str(value)] * sortable.count("%s")]

    def range(self, node: str, kind: str) -> tuple[str, str]:
        """The lowest key of this kind, and the lowest key beyond them."""
        letter = self.LETTERS[kind]
        return f"{node}:{letter}", f"{node}:{chr(ord(letter) + 1)}"

    def exact(self, kind: str, values) -> bool:
        """Whether comparing keys compares the values (float8 keys may be shared)."""
        return kind == "bool" or kind == "text" and all(_short(value) for value in values)


class _SqliteKeys:
    """GraphKey on SQLite: the value, typed; NULL < numbers < text < blobs (booleans)."""

    exact_values = {"text": (TextExact, lambda value: ("%s", [value]))}

    def key_of(self, node: str, kind: str, value) -> tuple[str, list]:
        if kind == "bool":
            return ("x'01'" if value else "x'00'"), []
        if kind == "text":
            return "%s", [value[:TEXT_KEY_LENGTH]]
        if isinstance(value, float) or isinstance(value, int) and -(2**63) <= value < 2**63:
            return "%s", [value]
        return "CAST(%s AS REAL)", [str(value)]  # as a stored Decimal is read

    def range(self, node: str, kind: str) -> tuple[str | None, str | None]:
        return {"number": (None, ""), "text": ("", b""), "bool": (b"", None)}[kind]

    def exact(self, kind: str, values) -> bool:
        return kind != "text" or all(_short(value) for value in values)


_KEYS = {"postgresql": _PostgresKeys(), "sqlite": _SqliteKeys()}

# vendor -> kind -> (template of {c} and {op}, the parameter it takes from the value)
_TEMPLATES = {
    "postgresql": {
        "null": ("({c} IS NULL OR {c} = 'null'::jsonb)", None),
        "date": (
            "({c} ->> '__durable__' = 'date' AND ({c} ->> 'value') COLLATE \"C\" {op} %s)",
            date.isoformat,
        ),
        "uuid": ("({c} ->> '__durable__' = 'uuid' AND {c} ->> 'value' {op} %s)", str),
    },
    "sqlite": {
        "null": ("({c} IS NULL OR json_type({c}) = 'null')", None),
        "date": (
            "(json_extract({c}, '$.__durable__') = 'date' "
            "AND json_extract({c}, '$.value') {op} %s)",
            date.isoformat,
        ),
        "uuid": (
            "(json_extract({c}, '$.__durable__') = 'uuid' "
            "AND json_extract({c}, '$.value') {op} %s)",
            str,
        ),
    },
}


@dataclass(frozen=True)
class _Filter:
    node: str
    op: str
    operands: tuple[_Operand, ...] = ()

    def condition(self):
        """A condition on executions, or None when nothing can match (`in []`)."""
        from django.db.models import Exists, OuterRef

        from ..models import GraphValue

        if self.op == "in" and not self.operands:
            return None
        rows = GraphValue.objects.filter(execution_id=OuterRef("pk"), is_set=True)
        if self.op in ("is_set", "is_not_set"):
            rows = rows.filter(node=self.node)
            return Exists(rows) if self.op == "is_set" else ~Exists(rows)
        matches = _Matches(F("node"), F("value"), self.node, self.op, self.operands)
        return Exists(rows.filter(matches))


def _parse_filter(entry: Any, check_node) -> _Filter:
    if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
        raise ValueError(
            f"A filter is (node, operator, value), or (node, 'is_set' | 'is_not_set'), "
            f"not {entry!r:.80}."
        )
    node, op = entry[0], entry[1]
    check_node(node)
    if op not in OPERATORS:
        raise ValueError(f"Unknown filter operator {op!r:.40}; use one of: {', '.join(OPERATORS)}.")
    if op in ("is_set", "is_not_set"):
        if len(entry) == 3 and entry[2] is not None:
            raise ValueError(f"Filter ({node!r}, {op!r}) takes no value, not {entry[2]!r:.80}.")
        return _Filter(node, op)
    if len(entry) != 3:
        raise ValueError(f"Filter ({node!r}, {op!r}) needs a value: ({node!r}, {op!r}, value).")
    value = entry[2]
    if op != "in":
        return _Filter(node, op, (_operand(value, node, op),))
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise ValueError(f"Filter ({node!r}, 'in') needs a list of values, not {value!r:.80}.")
    return _Filter(node, op, tuple(_operand(item, node, op) for item in value))


# -- the query ----------------------------------------------------------------------------


def list_executions(
    name: str,
    version: str | None = None,
    *,
    filter_by: list[tuple[str, str, Any]] | None = None,
    order_by: list[str] | str | None = None,
    limit: int | None = 100,
    offset: int = 0,
    include_archived: bool = False,
) -> list["WorkflowExecution"]:
    """Executions of the graph `name` (of every version, or of `version`) whose values
    pass every filter of `filter_by` (`(node, operator, value)`; operators eq, ne, lt,
    lte, gt, gte, in (a list), is_set and is_not_set (no value)), sorted by `order_by`
    (a name or a list: created_at, started_at, completed_at, updated_at, or a node,
    each with `-` for descending; unset values last; newest first by default), `limit`
    of them (None: all) from `offset`. Each has `.values`: {node: value} of its set
    values.

    Archived executions (status completed) are left out unless `include_archived`.
    A node that no registered version of the graph has raises `UnknownNode`, an unknown
    operator `ValueError`, an unknown graph `UnknownWorkflow`.
    """
    from ..models import ExecutionKind, ExecutionStatus, WorkflowExecution

    nodes = _nodes(name, version)

    def check_node(node: Any) -> None:
        if not isinstance(node, str) or node not in nodes:
            wanted = f"{name!r}" + (f" version {version!r}" if version is not None else "")
            raise UnknownNode(
                f"Graph {wanted} has no node {node!r:.80} (nodes: {', '.join(nodes)})."
            )

    filters = [_parse_filter(entry, check_node) for entry in _listed(filter_by, "filter_by")]
    orders = _parse_order(order_by, check_node)
    _check_page(limit, offset)

    # The executions of the graph's name are graphs (and most often of `version`, if
    # given): unestimated (see _unestimated), these conditions do not make PostgreSQL
    # expect their share of the whole table, a tenth of the rows, say.
    ours = Q(kind=ExecutionKind.GRAPH)
    if version is not None:
        ours &= Q(workflow_version=version)
    unestimated = IsNull(NullIf(ExpressionWrapper(ours, BooleanField()), Value(False)), False)
    executions = WorkflowExecution.objects.filter(unestimated, workflow_name=name)
    if not include_archived:
        executions = executions.exclude(status=ExecutionStatus.COMPLETED)
    for one in filters:
        condition = one.condition()
        if condition is None:
            return []
        executions = executions.filter(condition)
    executions = _ordered(executions, orders)
    end = None if limit is None else offset + limit
    page = list(executions[offset:end])
    _attach_values(page, nodes)
    return page


def _nodes(name: str, version: str | None) -> dict[str, int]:
    """The nodes of the graph's registered versions (of `version` only, if given), in
    definition order, newest version first: UnknownWorkflow if there is none."""
    if version is not None:
        graphs = [get(name, version)]
    else:
        get(name)  # UnknownWorkflow
        graphs = [g for g in reversed(all_graphs()) if g.name == name]
    nodes: dict[str, int] = {}
    for g in graphs:
        for node in g.order:
            nodes.setdefault(node, len(nodes))
    return nodes


def _listed(value: Any, what: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{what} must be a list, not {value!r:.80}.")
    return list(value)


def _check_page(limit: Any, offset: Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, not {limit!r:.40}.")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an integer of at least 0, not {offset!r:.40}.")


def _parse_order(order_by: Any, check_node) -> list[tuple[str, bool]]:
    """[(name, descending)], created_at descending when none is given."""
    names = [order_by] if isinstance(order_by, str) else _listed(order_by, "order_by")
    orders = []
    for entry in names:
        if not isinstance(entry, str) or entry in ("", "-"):
            raise ValueError(f"order_by takes names, not {entry!r:.80}.")
        descending = entry.startswith("-")
        field = entry[1:] if descending else entry
        if field not in EXECUTION_ORDERS:
            check_node(field)
        orders.append((field, descending))
    return orders or [("created_at", True)]


def _ordered(executions, orders: list[tuple[str, bool]]):
    """Sort by `orders`, each with NULLs (unset values) last, then newest first."""
    from django.db.models import FilteredRelation, Max, OuterRef, Subquery
    from django.db.models.functions import Coalesce

    from ..models import GraphValue

    terms = []
    for index, (field, descending) in enumerate(orders):
        if field == "updated_at":
            latest = (
                GraphValue.objects.filter(execution_id=OuterRef("pk"))
                .order_by()
                .values("execution_id")
                .annotate(latest=Max("set_at"))
                .values("latest")
            )
            expressions = [Coalesce(Subquery(latest), F("created_at"))]
        elif field in EXECUTION_ORDERS:
            expressions = [F(field)]
        else:
            alias = f"_order_{index}"
            executions = executions.alias(
                **{
                    alias: FilteredRelation(
                        "graph_values",
                        condition=Q(graph_values__node=field, graph_values__is_set=True),
                    )
                }
            )
            value = F(f"{alias}__value")
            # Numbers first (Decimals among them), then datetimes, then strings, then
            # the rest (booleans, dates, ...) as the backend orders JSON.
            expressions = [NumberExact(value), Instant(value), TextExact(value), value]
        for expression in expressions:
            ordering = expression.desc if descending else expression.asc
            # created_at is never NULL: sorted plainly, it matches durable_exec_workflow.
            terms.append(ordering() if field == "created_at" else ordering(nulls_last=True))
    if not any(field == "created_at" for field, _ in orders):
        terms.append(F("created_at").desc())
    last_descending = next((d for f, d in orders if f == "created_at"), True)
    terms.append(F("id").desc() if last_descending else F("id").asc())
    return executions.order_by(*terms)


def _attach_values(page: list, nodes: dict[str, int]) -> None:
    """Set `.values` ({node: value} of the set values) on each execution of the page,
    in definition order, loaded in one query per VALUES_CHUNK executions."""
    from ..models import GraphValue

    found: dict[Any, list[tuple[str, Any]]] = {execution.id: [] for execution in page}
    ids = list(found)
    for start in range(0, len(ids), VALUES_CHUNK):
        rows = GraphValue.objects.filter(
            execution_id__in=ids[start : start + VALUES_CHUNK], is_set=True
        ).values_list("execution_id", "node", "value")
        for execution_id, node, value in rows:
            found[execution_id].append((node, value))
    last = len(nodes)
    for execution in page:
        ordered = sorted(found[execution.id], key=lambda row: (nodes.get(row[0], last), row[0]))
        execution.values = dict(ordered)
