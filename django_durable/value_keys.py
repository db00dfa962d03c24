"""The SQL that compares graph values (`GraphValue.value`, JSON) type by type: the key
they are indexed and compared by (`GraphKey`), and exact comparisons where the key
cannot tell. Apart from `graphs` so that `models` can index on it without importing
the graphs package; `graphs.queries` builds `list_executions` on it (its docstring says
how values compare).
"""

from django.db import NotSupportedError
from django.db.models import FloatField, Func, TextField

TEXT_KEY_LENGTH = 100  # characters of a string that GraphKey keeps

# -- SQL per backend ----------------------------------------------------------------------
# Templates of `{c}`, the value column (jsonb on PostgreSQL, JSON text on SQLite), and
# `{n}`, the node column. A Decimal is `{"__durable__": "decimal", "value": "9.99"}`
# (see codec); its text is checked before it is cast, so a hand-written tag cannot make
# a query fail.

_PG_DECIMAL = (
    "({c} ->> '__durable__' = 'decimal' AND ({c} ->> 'value') "
    "~ '^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]{{1,4}})?$')"
)


def _pg_float(number: str) -> str:
    """float8 of a numeric, clamped and rounded so that the cast never fails; a < b
    implies float(a) <= float(b)."""
    return "(greatest(least(round(" + number + ", 300), 1e300), -1e300))::float8"


def pg_sortable(number: str) -> str:
    """17 hex digits that sort (in collation "C") as the numeric `number` does, through
    its float8: 1 + its bits when it is positive or zero, else 0 + its bits inverted."""
    f = _pg_float(number)
    bits = "(('x' || encode(float8send(" + f + "), 'hex'))::bit(64)::bigint)"
    return (
        "(CASE WHEN " + number + " >= 0 THEN '1' || encode(float8send(" + f + "), 'hex') "
        "ELSE '0' || encode(int8send(~" + bits + "), 'hex') END)"
    )


_PG_KEY = (
    "(({n} || ':' || CASE jsonb_typeof({c}) "
    "WHEN 'boolean' THEN CASE WHEN {c} = 'true'::jsonb THEN 'bt' ELSE 'bf' END "
    "WHEN 'number' THEN 'n' || " + pg_sortable("({c})::numeric") + " "
    f"WHEN 'string' THEN 's' || left({{c}} #>> '{{{{}}}}', {TEXT_KEY_LENGTH}) "
    "WHEN 'object' THEN CASE WHEN " + _PG_DECIMAL + " "
    "THEN 'n' || " + pg_sortable("({c} ->> 'value')::numeric") + " END "
    'END) COLLATE "C")'
)
_PG_NUMBER = (
    "(CASE WHEN jsonb_typeof({c}) = 'number' THEN ({c})::numeric "
    "WHEN " + _PG_DECIMAL + " THEN ({c} ->> 'value')::numeric END)"
)
_PG_TEXT = "(CASE WHEN jsonb_typeof({c}) = 'string' THEN ({c} #>> '{{}}') END) COLLATE \"C\""
_PG_INSTANT = (
    "(CASE WHEN {c} ->> '__durable__' = 'datetime' AND ({c} ->> 'value') "
    "~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}' THEN ({c} ->> 'value')::timestamptz END)"
)

_SQLITE_DECIMAL = (
    "json_extract({c}, '$.__durable__') = 'decimal' AND json_type({c}, '$.value') = 'text' "
    "AND json_extract({c}, '$.value') GLOB '*[0-9]*' "
    "AND json_extract({c}, '$.value') NOT GLOB '*[^0-9eE.+-]*'"
)
_SQLITE_NUMBER = (
    "(CASE WHEN json_type({c}) IN ('integer', 'real') THEN json_extract({c}, '$') "
    f"WHEN {_SQLITE_DECIMAL} THEN CAST(json_extract({{c}}, '$.value') AS REAL) END)"
)
_SQLITE_KEY = (
    "(CASE json_type({c}) WHEN 'integer' THEN json_extract({c}, '$') "
    "WHEN 'real' THEN json_extract({c}, '$') "
    f"WHEN 'text' THEN substr(json_extract({{c}}, '$'), 1, {TEXT_KEY_LENGTH}) "
    "WHEN 'true' THEN x'01' WHEN 'false' THEN x'00' "
    f"WHEN 'object' THEN CASE WHEN {_SQLITE_DECIMAL} "
    "THEN CAST(json_extract({c}, '$.value') AS REAL) END END)"
)
_SQLITE_TEXT = "(CASE WHEN json_type({c}) = 'text' THEN json_extract({c}, '$') END)"
_SQLITE_INSTANT = (
    "(CASE WHEN json_extract({c}, '$.__durable__') = 'datetime' "
    "THEN julianday(json_extract({c}, '$.value')) END)"
)


def backend_of(connection) -> str:
    if connection.vendor not in ("postgresql", "sqlite"):
        raise NotSupportedError(
            f"Graph value queries support PostgreSQL and SQLite, not {connection.vendor}."
        )
    return connection.vendor


class _ValueSQL(Func):
    """An expression of the value column (and the node column, `{n}`), per backend."""

    postgresql = sqlite = ""

    def as_sql(self, compiler, connection, **extra_context):
        template = getattr(self, backend_of(connection))
        names = ("n", "c") if len(self.source_expressions) == 2 else ("c",)
        columns, params = {}, []
        for name, expression in zip(names, self.source_expressions, strict=True):
            sql, column_params = compiler.compile(expression)
            columns[name] = sql
            params += list(column_params) * template.count("{" + name + "}")
        return template.format(**columns), params


class GraphKey(_ValueSQL):
    """The key a GraphValue's value is indexed and compared by: GraphKey("node",
    "value"). See the module docstring; NULL for values of other types."""

    arity = 2
    output_field = TextField()
    postgresql = _PG_KEY
    sqlite = _SQLITE_KEY


class NumberExact(_ValueSQL):
    """A number's or Decimal's exact value (PostgreSQL: numeric; SQLite: REAL or
    INTEGER), NULL for any other value."""

    arity = 1
    output_field = FloatField()
    postgresql = _PG_NUMBER
    sqlite = _SQLITE_NUMBER


class TextExact(_ValueSQL):
    """A string (collation "C" on PostgreSQL), NULL for any other value."""

    arity = 1
    output_field = TextField()
    postgresql = _PG_TEXT
    sqlite = _SQLITE_TEXT


class Instant(_ValueSQL):
    """A datetime as an instant (PostgreSQL: timestamptz; SQLite: a julian day, to the
    millisecond), NULL for any other value."""

    arity = 1
    output_field = FloatField()
    postgresql = _PG_INSTANT
    sqlite = _SQLITE_INSTANT


# -- filters ------------------------------------------------------------------------------
