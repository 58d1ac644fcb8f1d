"""Owns node ordering in graphs with subgraphs (If branches, Loop and Scan bodies).

A converter that inserts nodes (the fp16 converter's Casts) appends them at the end of the
graph they belong to, and a node holding a subgraph reads names from the outer scope that
its own input list does not show. onnxruntime refuses such a graph ("Node input ... is not a
graph input, initializer, or output of a previous node"): silero-vad's fp16 conversion hit
both, and worse: the Casts it adds around an fp32-blocked op inside an If branch land in the
main graph, reading names only the branch defines (see docs/architecture.md, "Compression on
real models"). `repair` moves each such node into the subgraph that defines what it reads, then
puts every graph, the main one and each subgraph, in dependency order, counting the names a
subgraph reads from the outer scope as inputs of the node that holds it.
"""

from __future__ import annotations

import heapq

import onnx


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    found: list[onnx.GraphProto] = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            found.append(attribute.g)
        found.extend(attribute.graphs)
    return found


def outer_reads(graph_proto: onnx.GraphProto) -> set[str]:
    """Names a graph (with its own subgraphs) reads but does not define (pure)."""
    defined = {i.name for i in graph_proto.input} | {i.name for i in graph_proto.initializer}
    defined |= {i.values.name for i in graph_proto.sparse_initializer}
    read: set[str] = set()
    for node in graph_proto.node:
        read.update(name for name in node.input if name)
        for sub in _subgraphs(node):
            read |= outer_reads(sub)
        defined.update(node.output)
    return read - defined


def _dependencies(node: onnx.NodeProto) -> set[str]:
    names = {name for name in node.input if name}
    for sub in _subgraphs(node):
        names |= outer_reads(sub)
    return names


def sort_graph(graph_proto: onnx.GraphProto) -> None:
    """Dependency order for one graph and, recursively, its subgraphs.

    Stable: nodes already in order keep their relative order. Names nothing in this graph
    produces (inputs, initializers, outer-scope names) are ready from the start; a cycle
    (an invalid graph) leaves the remaining nodes in their original order at the end.
    """
    nodes = list(graph_proto.node)
    for node in nodes:
        for sub in _subgraphs(node):
            sort_graph(sub)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    waiting: list[set[int]] = []
    dependents: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        needs = {producer[name] for name in _dependencies(node) if name in producer} - {i}
        waiting.append(needs)
        for j in needs:
            dependents.setdefault(j, []).append(i)
    ready = [i for i, needs in enumerate(waiting) if not needs]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in dependents.get(i, []):
            waiting[k].discard(i)
            if not waiting[k]:
                heapq.heappush(ready, k)
    placed = set(order)
    order.extend(i for i in range(len(nodes)) if i not in placed)
    del graph_proto.node[:]
    graph_proto.node.extend(nodes[i] for i in order)


def sort_all(model: onnx.ModelProto) -> None:
    """Dependency order for the model's graph and every subgraph in it."""
    sort_graph(model.graph)


def _producers(graph_proto: onnx.GraphProto, into: dict[str, onnx.GraphProto]) -> None:
    """Map every name a node produces, in this graph and below, to the graph producing it."""
    for node in graph_proto.node:
        for name in node.output:
            if name:
                into[name] = graph_proto
        for sub in _subgraphs(node):
            _producers(sub, into)


def _descendants(graph_proto: onnx.GraphProto) -> list[onnx.GraphProto]:
    found: list[onnx.GraphProto] = []
    for node in graph_proto.node:
        for sub in _subgraphs(node):
            found.append(sub)
            found.extend(_descendants(sub))
    return found


def _move_misplaced(graph_proto: onnx.GraphProto) -> int:
    """Move this graph's nodes that read a name only a subgraph below produces into it."""
    below = _descendants(graph_proto)
    if not below:
        return 0
    producers: dict[str, onnx.GraphProto] = {}
    for sub in below:
        _producers(sub, producers)
    local = {name for node in graph_proto.node for name in node.output}
    kept: list[onnx.NodeProto] = []
    moved = 0
    for node in graph_proto.node:
        homes = [producers[n] for n in node.input if n and n not in local and n in producers]
        if homes:
            homes[0].node.append(node)
            moved += 1
        else:
            kept.append(node)
    if moved:
        del graph_proto.node[:]
        graph_proto.node.extend(kept)
    return moved


def repair(model: onnx.ModelProto) -> int:
    """Put converter-inserted nodes back in the subgraph they belong to, then sort every graph.

    Returns how many nodes moved. Moving a node can make its readers misplaced in turn (a
    Cast reading a Cast), so graphs are revisited until nothing moves.
    """
    moved = 0
    while True:
        step = sum(_move_misplaced(g) for g in [model.graph, *_descendants(model.graph)])
        moved += step
        if not step:
            break
    sort_all(model)
    return moved
