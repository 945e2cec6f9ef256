"""The lineage graph of a dataset version, laid out for an inline SVG.

The graph is the version, every version it derives from (its ancestors) and the versions
derived directly from it. Columns are generations: a node sits one column right of its
deepest parent, so every edge points rightwards; within a column nodes keep their creation
order. The template draws the boxes and edges; text goes through autoescaping like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from meguri.store.metadata import DatasetVersion

__all__ = ["Graph", "lineage_graph"]

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 200, 38, 60, 14, 6


@dataclass(frozen=True)
class Node:
    version: DatasetVersion
    x: int
    y: int
    current: bool


@dataclass(frozen=True)
class Edge:
    path: str  # an SVG path from the parent's right side to the child's left side


@dataclass(frozen=True)
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def lineage_graph(
    current: DatasetVersion,
    ancestors: dict[str, DatasetVersion],
    children: list[DatasetVersion],
) -> Graph:
    """Lay out ``ancestors`` (``current`` included, by id) and ``children`` of ``current``."""
    versions = {**ancestors, **{c.id: c for c in children}}
    depth = _depths(versions)
    columns: dict[int, list[DatasetVersion]] = {}
    for version in sorted(versions.values(), key=lambda v: (v.created_at, v.id)):
        columns.setdefault(depth[version.id], []).append(version)
    places = {
        v.id: (PAD + d * (NODE_W + GAP_X), PAD + i * (NODE_H + GAP_Y))
        for d, column in columns.items()
        for i, v in enumerate(column)
    }
    nodes = [Node(versions[i], x, y, i == current.id) for i, (x, y) in places.items()]
    edges = [
        Edge(_curve(places[p], places[v.id]))
        for v in versions.values()
        for p in v.parents
        if p in places
    ]
    width = PAD * 2 + (max(columns) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(len(c) for c in columns.values()) * (NODE_H + GAP_Y) - GAP_Y
    return Graph(nodes, edges, width, height)


def _depths(versions: dict[str, DatasetVersion]) -> dict[str, int]:
    """Each version's generation: 0 without a known parent, else one past its deepest."""
    depth: dict[str, int] = {}

    def visit(version_id: str, trail: frozenset[str]) -> int:
        if version_id not in depth:
            parents = [p for p in versions[version_id].parents if p in versions and p not in trail]
            inner = trail | {version_id}
            depth[version_id] = 1 + max((visit(p, inner) for p in parents), default=-1)
        return depth[version_id]

    for version_id in versions:
        visit(version_id, frozenset())
    return depth


def _curve(parent: tuple[int, int], child: tuple[int, int]) -> str:
    x1, y1 = parent[0] + NODE_W, parent[1] + NODE_H // 2
    x2, y2 = child[0], child[1] + NODE_H // 2
    mid = (x1 + x2) // 2
    return f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"
