"""A workflow's picture: its compiled graph as nodes, edges and nested blocks, coloured
by what an execution's attempts did, drawn as SVG (the admin) or as Mermaid text.

`model` reads the graph the DSL compiled (`Workflow.graph`: node ids, follows, the
parts of each block and the list each node is in), so the picture shows what the engine
runs, under the ids the timeline and `current_step` use. Both renderers read only the
model, so the admin page and a text export can't disagree. Nothing here imports the
admin.
"""

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

from . import colours, registry
from .dsl import Branch, Decision, Foreach, Parallel, Workflow
from .dsl.control import goto_targets
from .dsl.fanout import ForeachItem
from .models import ExecutionKind, StepExecution, WorkflowExecution

START = "__start__"
END = "__end__"
UNDO = "undo:"  # a compensation node's id is this + the id of the step it undoes
BLOCKS = ("branch", "parallel", "foreach")


@dataclass
class Node:
    """One box of the picture. `id` is the engine's node id; `parent` is the block
    whose part holds it (None: the top level); a block's `parts` are the ids of its
    parts' lists, in order (a branch's empty cases have none)."""

    id: str
    label: str
    kind: str  # start, end, step, decision, branch, parallel, foreach, item, compensation
    parent: str | None = None
    parts: tuple[tuple[str, ...], ...] = ()
    compensation: str | None = None  # the id of the node that undoes this one
    status: str | None = None  # its latest attempt's; None: not run (or no execution)
    detail: str = ""  # a foreach item's counts, "3/4 completed, 1 failed"
    current: bool = False  # the execution's current_step


@dataclass(frozen=True)
class Edge:
    """A move between nodes: `next` (what follows), `case` (a branch's case, labelled
    with its value), `fork` (a block starting its parts), `jump` (a decision's or a
    parallel `into`'s literal goto) or `undo` (a step to its compensation)."""

    source: str
    target: str
    kind: str = "next"
    label: str = ""


@dataclass
class Diagram:
    """The picture's model: nodes in definition order, edges, and the top-level list
    (start marker, top-level nodes, end marker) a renderer walks to draw blocks."""

    workflow: str
    nodes: dict[str, Node]
    edges: list[Edge]
    top: tuple[str, ...]
    execution_status: str | None = None  # None: no execution, statuses unknown


def model(definition: Workflow | str, execution: WorkflowExecution | None = None) -> Diagram:
    """The diagram of a workflow (or its registered name); with an execution, each node
    carries the status of its latest attempt there, members' attempts included."""
    diagram = _Builder(registry.get(definition)).build()
    if execution is not None:
        _colour(diagram, execution)
    return diagram


class _Builder:
    """Walks the compiled graph list by list: a list is the nodes sharing a scope (the
    names a goto can reach), and a block's parts are the lists its part entries start."""

    def __init__(self, definition: Workflow) -> None:
        self.definition = definition
        self.graph = definition.graph
        self.nodes: dict[str, Node] = {START: Node(START, "start", "start")}
        self.edges: list[Edge] = []
        self.walked: set[int] = set()  # the scopes (lists) already walked, by identity

    def build(self) -> Diagram:
        top = self._list(self.graph.entry_id, None, END)
        self.nodes[END] = Node(END, "end", "end")
        self.edges.insert(0, Edge(START, top[0]))
        return Diagram(self.definition.name, self.nodes, self.edges, (START, *top, END))

    def _list(self, entry: str | None, parent: str | None, after: str) -> tuple[str, ...]:
        """Add the list `entry` starts, whose last node goes on to `after`; () when the
        part is empty (its entry is then a node of a list being walked, or None)."""
        if entry is None:
            return ()
        scope = self.graph.scopes.get(entry)
        if scope is None:  # a foreach item, compiled on its own
            ids: tuple[str, ...] = (entry,)
        elif id(scope) in self.walked:
            return ()
        else:
            self.walked.add(id(scope))
            ids = tuple(scope.values())
        for node_id in ids:
            self._add(node_id, parent, after)
        return ids

    def _add(self, node_id: str, parent: str | None, after: str) -> None:
        node = self.graph.nodes[node_id]
        follow = self.graph.follows[node_id] or after
        self.nodes[node_id] = drawn = Node(node_id, node.name, _kind(node), parent)
        if isinstance(node, Branch):
            drawn.parts = self._cases(node_id, node, follow)
        elif isinstance(node, Parallel | Foreach):
            drawn.parts = self._forks(node_id, node, follow)
        else:
            self.edges.append(Edge(node_id, follow))
        self._jumps(node_id, node)
        self._compensation(drawn)

    def _cases(self, node_id: str, node: Branch, follow: str) -> tuple[tuple[str, ...], ...]:
        parts = []
        for key, entry in self.graph.parts[node_id].items():
            ids = self._list(entry, node_id, follow)
            self.edges.append(Edge(node_id, ids[0] if ids else follow, "case", node.labels[key]))
            if ids:
                parts.append(ids)
        return tuple(parts)

    def _forks(self, node_id: str, node: Any, follow: str) -> tuple[tuple[str, ...], ...]:
        label = "each item" if isinstance(node, Foreach) else ""
        entries = self.graph.parts[node_id].values()
        parts = tuple(self._list(entry, node_id, follow) for entry in entries)
        self.edges += [Edge(node_id, ids[0], "fork", label) for ids in parts]
        return parts

    def _jumps(self, node_id: str, node: Any) -> None:
        """Literal goto targets: checked for decisions when the workflow was defined; a
        parallel's `into` may name anything, so only the nodes of its list are drawn."""
        router = node.fn if isinstance(node, Decision) else None
        router = node.into if isinstance(node, Parallel) else router
        if router is None:
            return
        reachable = self.graph.scopes.get(node_id, {})
        for name in dict.fromkeys(goto_targets(router)):
            if name in reachable:
                self.edges.append(Edge(node_id, reachable[name], "jump", "goto"))

    def _compensation(self, drawn: Node) -> None:
        undo = self.definition.compensation_for(drawn.id)
        if undo is None:
            return
        drawn.compensation = UNDO + drawn.id
        self.nodes[drawn.compensation] = Node(
            drawn.compensation, undo.name, "compensation", drawn.parent
        )
        self.edges.append(Edge(drawn.id, drawn.compensation, "undo", "undo"))


def _kind(node: Any) -> str:
    kinds = ((Decision, "decision"), (ForeachItem, "item"), (Branch, "branch"))
    kinds += ((Parallel, "parallel"), (Foreach, "foreach"))
    return next((kind for cls, kind in kinds if isinstance(node, cls)), "step")


# -- statuses ----------------------------------------------------------------------------

# Which status a foreach's items show as one: work in progress first, then trouble.
_ITEM_PRECEDENCE = ("running", "waiting", "failed", "pending", "cancelled", "completed")


def _colour(diagram: Diagram, execution: WorkflowExecution) -> None:
    """Statuses from three aggregate queries whose rows are bounded by the definition's
    size (nodes times statuses), not by the number of attempts or items."""
    diagram.execution_status = execution.status
    latest = _latest_statuses(execution.root_id)
    for node in diagram.nodes.values():
        node.status = latest.get(node.id)
    items = [node.id for node in diagram.nodes.values() if node.kind == "item"]
    for node_id, counts in _item_counts(execution.root_id, items).items():
        node = diagram.nodes[node_id]
        node.status = next((s for s in _ITEM_PRECEDENCE if s in counts), next(iter(counts)))
        node.detail = _summary(counts)
    if execution.current_step in diagram.nodes:
        diagram.nodes[execution.current_step].current = True


def _latest_statuses(root_id: Any) -> dict[str, str]:
    """The status of each node's latest attempt on the execution's rows and its
    members'; a compensation's under `undo:<the step it undoes>`."""
    rows = (
        StepExecution.objects.filter(execution__root_id=root_id)
        .values("step_name", "is_compensation", "compensation_for", "status")
        .annotate(last=Max("started_at"))
        .order_by("step_name", "status")
    )
    latest: dict[str, tuple[datetime, str]] = {}
    for row in rows:
        node_id = UNDO + row["compensation_for"] if row["is_compensation"] else row["step_name"]
        if node_id not in latest or row["last"] > latest[node_id][0]:
            latest[node_id] = (row["last"], row["status"])
    return {node_id: status for node_id, (_, status) in latest.items()}


def _item_counts(root_id: Any, item_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """How many items of each foreach's latest run are in each status. An item row
    names its node while it runs (`current_step`) and, once ended, by its attempts;
    the items of one run were inserted together, so they share `created_at`."""
    if not item_ids:
        return {}
    first_attempt = StepExecution.objects.filter(
        execution_id=OuterRef("id"), is_compensation=False
    ).values("step_name")[:1]
    items = (
        WorkflowExecution.objects.filter(root_id=root_id, kind=ExecutionKind.ITEM)
        .annotate(node=Coalesce("current_step", Subquery(first_attempt)))
        .filter(node__in=item_ids)
        .order_by()
    )
    runs = Q()
    for node_id, created in (
        items.values("node").annotate(created=Max("created_at")).values_list("node", "created")
    ):
        runs |= Q(node=node_id, created_at=created)
    if not runs:
        return {}
    counts: dict[str, dict[str, int]] = {}
    for node_id, status, n in (
        items.filter(runs)
        .values("node", "status")
        .annotate(n=Count("id"))
        .values_list("node", "status", "n")
    ):
        counts.setdefault(node_id, {})[status] = n
    return counts


def _summary(counts: dict[str, int]) -> str:
    total, failed = sum(counts.values()), counts.get("failed", 0)
    text = f"{counts.get('completed', 0)}/{total} completed"
    return f"{text}, {failed} failed" if failed else text


# -- SVG ---------------------------------------------------------------------------------

WHITE, DARK = "#ffffff", "#212529"
# Fill and text colour per status: the shared colours, and light grey for what did not run.
STATUS_COLOURS: dict[str | None, tuple[str, str]] = {
    **{status: (colour, WHITE) for status, colour in colours.STATUS_COLOURS.items()},
    "skipped": ("#ced4da", DARK),
    "pending": ("#e9ecef", DARK),
    None: ("#e9ecef", DARK),
}
_UNKNOWN = ("#6c757d", WHITE)
_MARKER = ("#343a40", WHITE)  # start and end
_LEGEND = ("completed", "running", "waiting", "failed", None)
_EDGE_STYLE = {  # stroke, dash pattern, arrow marker
    "next": ("#6c757d", "", "durable-arrow"),
    "case": ("#6c757d", "", "durable-arrow"),
    "fork": ("#6c757d", "", "durable-arrow"),
    "jump": ("#6f42c1", "", "durable-arrow-jump"),
    "undo": ("#6c757d", "5 3", "durable-arrow"),
}
CHAR_W, MAX_CHARS = 7.0, 30  # a 12px sans-serif character, on average; longer labels cut
NODE_H, DETAIL_H, MIN_W = 32.0, 14.0, 72.0
ROW_GAP, COL_GAP, UNDO_GAP = 34.0, 28.0, 48.0
PAD, TITLE_H, LANE, MARGIN = 12.0, 20.0, 36.0, 16.0
Point = tuple[float, float]
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def svg(diagram: Diagram) -> str:
    """The diagram as a standalone SVG element (no script, no external asset); every
    text from the definition or the database is escaped, so it is safe to mark_safe."""
    laid = _Layout(diagram).stack(diagram.top)
    width = max(laid.w + 2 * MARGIN, 320.0)
    legend, legend_h = _legend(diagram, width - 2 * MARGIN)
    height = laid.h + 2 * MARGIN + ROW_GAP / 2 + legend_h
    title = _xml(_aria_label(diagram))
    return "".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="durable-diagram" role="img" '
            f'aria-label="{title}" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="system-ui, sans-serif" '
            f'font-size="12"><title>{title}</title>{_MARKERS}',
            f'<g transform="translate({MARGIN:.0f},{MARGIN:.0f})">',
            *(_svg_box(diagram.nodes[node_id], box) for node_id, box in laid.boxes.items()),
            *_svg_edges(diagram, laid),
            *(_svg_node(diagram.nodes[node_id], rect) for node_id, rect in laid.rects.items()),
            f'</g><g class="durable-legend" transform="translate({MARGIN:.0f},'
            f'{laid.h + MARGIN + ROW_GAP / 2:.0f})">{legend}</g></svg>',
        ]
    )


_MARKERS = (
    "<defs>"
    + "".join(
        f'<marker id="{marker}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="{colour}"/></marker>'
        for colour, _, marker in {style[2]: style for style in _EDGE_STYLE.values()}.values()
    )
    + "</defs>"
)


@dataclass(frozen=True)
class _Rect:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    def moved(self, dx: float, dy: float) -> "_Rect":
        return _Rect(self.x + dx, self.y + dy, self.w, self.h)


@dataclass
class _Laid:
    """A laid-out unit (a node, a list, a block) relative to its top left corner: its
    size, the axis its list lines it up on, each node's and block box's place, and for
    the nodes of a list with jumps, the x of the lane left of it that they take."""

    w: float = 0.0
    h: float = 0.0
    axis: float = 0.0
    rects: dict[str, _Rect] = field(default_factory=dict)
    boxes: dict[str, _Rect] = field(default_factory=dict)
    lanes: dict[str, float] = field(default_factory=dict)

    def take(self, other: "_Laid", dx: float, dy: float) -> None:
        """Hold what `other` holds, moved by (dx, dy)."""
        self.rects.update({key: rect.moved(dx, dy) for key, rect in other.rects.items()})
        self.boxes.update({key: box.moved(dx, dy) for key, box in other.boxes.items()})
        self.lanes.update({key: x + dx for key, x in other.lanes.items()})


class _Layout:
    """Top-down layout: a list stacks its units on one axis, a block draws its header
    over its parts (side by side) in a box, and a list with jumps keeps a lane on its
    left for them, so no edge has to cross a node."""

    def __init__(self, diagram: Diagram) -> None:
        self.diagram = diagram
        self.jumpers = {edge.source for edge in diagram.edges if edge.kind == "jump"}
        self.labels = {(edge.source, edge.target): edge.label for edge in diagram.edges}

    def stack(self, ids: Sequence[str]) -> _Laid:
        units = [self.unit(node_id) for node_id in ids]
        lane = LANE if self.jumpers.intersection(ids) else 0.0
        out = _Laid(axis=lane + max(unit.axis for unit in units))
        for node_id, unit in zip(ids, units, strict=True):
            out.take(unit, out.axis - unit.axis, out.h)
            out.lanes.update({node_id: lane} if lane else {})
            out.h += unit.h + ROW_GAP
            out.w = max(out.w, out.axis - unit.axis + unit.w)
        out.h -= ROW_GAP
        return out

    def unit(self, node_id: str) -> _Laid:
        node = self.diagram.nodes[node_id]
        if node.kind in BLOCKS:
            return self.block(node)
        w, h = _size(node)
        out = _Laid(w=w, h=h, axis=w / 2, rects={node_id: _Rect(0, 0, w, h)})
        if node.compensation:
            undo_w, undo_h = _size(self.diagram.nodes[node.compensation])
            out.rects[node.compensation] = _Rect(w + UNDO_GAP, (h - undo_h) / 2, undo_w, undo_h)
            out.w += UNDO_GAP + undo_w
        return out

    def block(self, node: Node) -> _Laid:
        """The header over its parts (over the axis of a single part), in a box wide
        enough for its title; each part's column as wide as the case label above it."""
        parts = [self.stack(ids) for ids in node.parts]
        labels = [self.labels.get((node.id, ids[0]), "") for ids in node.parts]
        columns = [
            max(p.w, CHAR_W * len(_shown(t)) + 12) for p, t in zip(parts, labels, strict=True)
        ]
        row = sum(columns) + COL_GAP * max(len(parts) - 1, 0)
        row_axis = (columns[0] - parts[0].w) / 2 + parts[0].axis if len(parts) == 1 else row / 2
        header_w, header_h = _size(node)
        left, right = max(header_w / 2, row_axis), max(header_w / 2, row - row_axis)
        w = max(left + right, CHAR_W * len(_shown(_block_title(node)))) + 2 * PAD
        header = _Rect(PAD + left - header_w / 2, TITLE_H, header_w, header_h)
        top = header.bottom + ROW_GAP
        h = (top + max(part.h for part in parts) if parts else header.bottom) + PAD
        out = _Laid(w, h, header.cx, {node.id: header}, {node.id: _Rect(0, 0, w, h)})
        x = header.cx - row_axis
        for part, column in zip(parts, columns, strict=True):
            out.take(part, x + (column - part.w) / 2, top)
            x += column + COL_GAP
        return out


def _size(node: Node) -> tuple[float, float]:
    chars = max(len(_shown(node.label)), len(node.detail))
    return max(MIN_W, CHAR_W * chars + 24), NODE_H + (DETAIL_H if node.detail else 0)


def _shown(text: str) -> str:
    """A label as drawn: cut to MAX_CHARS (the full text is in the node's title)."""
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "\u2026"


def _block_title(node: Node) -> str:
    return f"{node.kind} {node.label}"


def _xml(text: str) -> str:
    """Text escaped for an element or an attribute, without the characters XML 1.0
    can't hold at all (a control character in a case value)."""
    return html.escape(_NOT_XML.sub("\ufffd", text), quote=True)


def _aria_label(diagram: Diagram) -> str:
    label = f"Diagram of workflow {diagram.workflow}"
    status = diagram.execution_status
    return f"{label}, execution {status}" if status else label


def _points(points: Sequence[Point]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _svg_box(node: Node, box: _Rect) -> str:
    return (
        f'<g class="durable-block" data-block="{_xml(node.id)}" data-kind="{node.kind}">'
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" '
        'rx="8" fill="#6c757d" fill-opacity="0.06" stroke="#adb5bd"/>'
        f'<text x="{box.x + 8:.1f}" y="{box.y + 14:.1f}" fill="#495057" font-size="11">'
        f"{_xml(_shown(_block_title(node)))}</text></g>"
    )


def _svg_edges(diagram: Diagram, laid: _Laid) -> list[str]:
    jumps_per_lane: dict[float, int] = {}
    return [_svg_edge(edge, *_route(edge, laid, jumps_per_lane)) for edge in diagram.edges]


def _route(edge: Edge, laid: _Laid, jumps_per_lane: dict[float, int]) -> tuple[list, Point | None]:
    """The corners of an edge and where its label goes: undo edges go right, jumps
    through their list's lane (too narrow for a label: the legend names their colour),
    the rest down, turning half a row above their target (a block's box top)."""
    source, target = laid.rects[edge.source], laid.rects[edge.target]
    if edge.kind == "undo":
        ends = [(source.right, source.cy), (target.x, target.cy)]
        return ends, _middle(*ends)
    if edge.kind == "jump":
        lane = laid.lanes[edge.source]
        taken = jumps_per_lane[lane] = jumps_per_lane.get(lane, 0) + 1
        x = lane - 6.0 * min(taken + 1, 5)  # side by side, up to 5 deep in the lane
        return [(source.x, source.cy), (x, source.cy), (x, target.cy), (target.x, target.cy)], None
    top = laid.boxes[edge.target].y if edge.target in laid.boxes else target.y
    turn = top - ROW_GAP / 2
    box = laid.boxes.get(edge.source)
    if edge.kind == "case" and box is not None and top >= box.bottom:  # an empty case
        side = box.right + COL_GAP / 2
        corners = [(source.right, source.cy), (side, source.cy), (side, turn), (target.cx, turn)]
        return corners + [(target.cx, top)], _middle(*corners[:2])
    corners = [(source.cx, source.bottom), (source.cx, turn), (target.cx, turn), (target.cx, top)]
    if source.cx == target.cx:
        corners = [corners[0], corners[-1]]
    return corners, _middle(*corners[-2:])


def _middle(a: Point, b: Point) -> Point:
    return (a[0] + b[0]) / 2, (a[1] + b[1]) / 2


def _svg_edge(edge: Edge, points: list[Point], label_at: Point | None) -> str:
    stroke, dash, marker = _EDGE_STYLE[edge.kind]
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    line = (
        f'<polyline class="durable-edge" data-kind="{edge.kind}" '
        f'data-source="{_xml(edge.source)}" data-target="{_xml(edge.target)}" '
        f'points="{_points(points)}" fill="none" stroke="{stroke}" stroke-width="1.5"'
        f'{dashes} marker-end="url(#{marker})"/>'
    )
    if not edge.label or label_at is None:
        return line
    x, y = label_at
    return line + (
        f'<text class="durable-edge-label" x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" '
        'font-size="11" fill="#343a40" stroke="#ffffff" stroke-width="3" '
        f'paint-order="stroke">{_xml(_shown(edge.label))}</text>'
    )


def _colours(node: Node) -> tuple[str, str]:
    if node.kind in ("start", "end"):
        return _MARKER
    return STATUS_COLOURS.get(node.status, _UNKNOWN)


def _svg_node(node: Node, rect: _Rect) -> str:
    fill, ink = _colours(node)
    outline = 'stroke="#000000" stroke-width="3"' if node.current else 'stroke="#495057"'
    title = " \u2014 ".join(filter(None, (node.id, node.status, node.detail)))
    label_y = rect.cy + (0 if node.detail else 4)
    texts = [(label_y, 12, node.label)] + ([(label_y + 13, 10, node.detail)] if node.detail else [])
    current = ' data-current="true"' if node.current else ""
    status = _xml(node.status or "none")
    return "".join(
        [
            f'<g class="durable-node" data-node="{_xml(node.id)}" data-status="{status}" '
            f'data-kind="{node.kind}"{current}><title>{_xml(title)}</title>',
            _shape(node, rect, f'fill="{fill}" {outline}'),
            *(
                f'<text x="{rect.cx:.1f}" y="{y:.1f}" text-anchor="middle" font-size="{size}" '
                f'fill="{ink}">{_xml(_shown(text))}</text>'
                for y, size, text in texts
            ),
            "</g>",
        ]
    )


def _shape(node: Node, rect: _Rect, paint: str) -> str:
    """Hexagons route (decisions, branches), pills mark the start and end, a stacked
    box stands for a foreach's many items and a dashed one for a compensation."""
    if node.kind in ("decision", "branch"):
        cut = min(12.0, rect.w / 4)
        corners = [(rect.x + cut, rect.y), (rect.right - cut, rect.y), (rect.right, rect.cy)]
        corners += [(rect.right - cut, rect.bottom), (rect.x + cut, rect.bottom), (rect.x, rect.cy)]
        return f'<polygon points="{_points(corners)}" {paint}/>'
    radius = {"start": rect.h / 2, "end": rect.h / 2, "parallel": 2, "foreach": 2}.get(node.kind, 6)
    dash = ' stroke-dasharray="5 3"' if node.kind == "compensation" else ""
    behind = _rect(rect.moved(4, -4), radius, paint) if node.kind == "item" else ""
    return behind + _rect(rect, radius, paint + dash)


def _rect(rect: _Rect, radius: float, paint: str) -> str:
    return (
        f'<rect x="{rect.x:.1f}" y="{rect.y:.1f}" width="{rect.w:.1f}" height="{rect.h:.1f}" '
        f'rx="{radius:.1f}" {paint}/>'
    )


def _legend(diagram: Diagram, width: float) -> tuple[str, float]:
    """Swatches for the usual statuses and any other present, the edge styles in use,
    and the current step's outline; wrapped to `width`. Returns the SVG and height."""
    present = {node.status for node in diagram.nodes.values() if node.kind not in ("start", "end")}
    statuses = list(_LEGEND) + sorted(s for s in present - set(_LEGEND) if s is not None)
    entries = [(_swatch(STATUS_COLOURS.get(s, _UNKNOWN)[0]), s or "not run") for s in statuses]
    kinds = {edge.kind for edge in diagram.edges}
    entries += [(_sample("jump"), "goto")] if "jump" in kinds else []
    entries += [(_sample("undo"), "undo (compensation)")] if "undo" in kinds else []
    if any(node.current for node in diagram.nodes.values()):
        entries.append((_swatch(WHITE, 'stroke="#000000" stroke-width="3"'), "current step"))
    parts, x, y = [], 0.0, 0.0
    for mark, text in entries:
        size = 22 + CHAR_W * len(text) + 14
        if x and x + size > width:
            x, y = 0.0, y + 20
        parts.append(
            f'<g transform="translate({x:.1f},{y:.1f})">{mark}'
            f'<text x="22" y="11" fill="#343a40">{_xml(text)}</text></g>'
        )
        x += size
    return "".join(parts), y + 20


def _swatch(fill: str, stroke: str = 'stroke="#495057"') -> str:
    return f'<rect x="0" y="0" width="16" height="14" rx="3" fill="{fill}" {stroke}/>'


def _sample(kind: str) -> str:
    stroke, dash, marker = _EDGE_STYLE[kind]
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<polyline points="0,7 16,7" fill="none" stroke="{stroke}" stroke-width="1.5"'
        f'{dashes} marker-end="url(#{marker})"/>'
    )


# -- Mermaid -----------------------------------------------------------------------------

_MERMAID_SHAPES = {
    "start": ("([", "])"),
    "end": ("([", "])"),
    "decision": ("{", "}"),
    "branch": ("{{", "}}"),
    "parallel": ("[[", "]]"),
    "foreach": ("[[", "]]"),
    "item": ("(", ")"),
}
_MERMAID_ARROWS = {"next": "-->", "case": "-->", "fork": "-->", "jump": "==>", "undo": "-.->"}
# Mermaid's entity codes: a label can't open a tag, end its quotes or start an entity.
_MERMAID_ESCAPES = {"#": "#35;", '"': "#34;", "<": "#60;", ">": "#62;", "&": "#38;", "`": "#96;"}


def to_mermaid(diagram: Diagram) -> str:
    """The diagram as Mermaid `graph TD` text: blocks as subgraphs, compensations on
    dashed edges, and with an execution a class per status (and one for the current
    step)."""
    ids = _mermaid_ids(diagram)
    lines = ["graph TD", *_mermaid_stack(diagram, diagram.top, ids, "    ")]
    lines += [f"    {_mermaid_edge(edge, ids)}" for edge in diagram.edges]
    lines += _mermaid_classes(diagram, ids)
    return "\n".join(lines) + "\n"


def _mermaid_ids(diagram: Diagram) -> dict[str, str]:
    """Node ids Mermaid accepts: letters, digits and `_`, prefixed so none is a
    keyword (`end`), numbered where two node ids would read the same."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for node_id in diagram.nodes:
        base = "n_" + re.sub(r"\W", "_", node_id, flags=re.ASCII)
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        ids[node_id] = candidate
        taken.add(candidate)
    return ids


def _mermaid_text(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(char, char) for char in " ".join(text.split()))


def _mermaid_stack(diagram: Diagram, node_ids: Sequence[str], ids: dict, indent: str) -> list:
    lines = []
    for node_id in node_ids:
        node = diagram.nodes[node_id]
        if node.kind not in BLOCKS:
            lines.append(indent + _mermaid_node(node, ids))
            if node.compensation:
                lines.append(indent + _mermaid_node(diagram.nodes[node.compensation], ids))
            continue
        title = _mermaid_text(_block_title(node))
        lines += [f'{indent}subgraph b{ids[node_id][1:]}["{title}"]']
        lines += [f"{indent}    {_mermaid_node(node, ids)}"]
        for part in node.parts:
            lines += _mermaid_stack(diagram, part, ids, indent + "    ")
        lines.append(f"{indent}end")
    return lines


def _mermaid_node(node: Node, ids: dict[str, str]) -> str:
    opening, closing = _MERMAID_SHAPES.get(node.kind, ("[", "]"))
    text = _mermaid_text(node.label)
    text += f"<br/>{_mermaid_text(node.detail)}" if node.detail else ""
    return f'{ids[node.id]}{opening}"{text}"{closing}'


def _mermaid_edge(edge: Edge, ids: dict[str, str]) -> str:
    label = f'|"{_mermaid_text(edge.label)}"|' if edge.label else ""
    return f"{ids[edge.source]} {_MERMAID_ARROWS[edge.kind]}{label} {ids[edge.target]}"


def _mermaid_classes(diagram: Diagram, ids: dict[str, str]) -> list[str]:
    nodes = [node for node in diagram.nodes.values() if node.kind not in ("start", "end")]
    lines = []
    undo = [ids[node.id] for node in nodes if node.kind == "compensation"]
    if undo:
        lines += ["    classDef undo stroke-dasharray:5 3", f"    class {','.join(undo)} undo"]
    if diagram.execution_status is None:
        return lines
    by_status: dict[str | None, list[str]] = {}
    for node in nodes:
        by_status.setdefault(node.status, []).append(ids[node.id])
    for status, members in by_status.items():
        name = "s_" + re.sub(r"\W", "_", status or "not_run", flags=re.ASCII)
        fill, ink = STATUS_COLOURS.get(status, _UNKNOWN)
        lines += [f"    classDef {name} fill:{fill},color:{ink}"]
        lines += [f"    class {','.join(members)} {name}"]
    current = [ids[node.id] for node in nodes if node.current]
    if current:
        lines += [
            "    classDef current stroke:#000,stroke-width:3px",
            f"    class {current[0]} current",
        ]
    return lines
