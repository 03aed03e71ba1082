"""Static shortest-path routes for a topology: pure computation, no kernel access.

Every switch gets a /32 route to every host out of a port on a shortest path
(BFS over the switch graph; hosts are leaves). Equal-cost next hops are spread
over destinations deterministically: candidates are sorted by port number and
the pick is ``(i // stride) % len(candidates)``, where ``i`` is the host's
position in ``topology.hosts`` and ``stride`` the fewest shortest paths from
any candidate onwards. With single-path next hops (leaf-spine) that is plain
``i % n``; in a fat tree the stride gives each tier its own digit of ``i``, so
edge and aggregation switches use all their uplinks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from flexnet_lab.errors import TopologyError
from flexnet_lab.topology.model import Topology

Adjacency = dict[str, list[tuple[int, str]]]
"""switch -> [(port number, neighbouring switch), ...]."""


@dataclass(frozen=True)
class Route:
    """On ``switch``, send packets for ``dst_ip/prefixlen`` out of ``port``."""

    switch: str
    dst_ip: str
    prefixlen: int
    port: int


def compute_routes(topology: Topology) -> dict[str, list[Route]]:
    """Per switch, one /32 route to every host (in host order)."""
    adjacency = _switch_adjacency(topology)
    routes: dict[str, list[Route]] = {spec.name: [] for spec in topology.switches}
    for index, host in enumerate(topology.hosts):
        edge, edge_port = topology.host_link(host.name)
        distance = _distances(adjacency, edge)
        paths = _path_counts(adjacency, distance)
        for spec in topology.switches:
            if spec.name not in distance:
                raise TopologyError(
                    topology.source, "links", f"switch {spec.name} cannot reach host {host.name}"
                )
            port = edge_port if spec.name == edge else _next_port(
                adjacency[spec.name], distance, paths, spec.name, index
            )
            routes[spec.name].append(Route(spec.name, host.ip, 32, port))
    return routes


def path(
    topology: Topology,
    src_host: str,
    dst_host: str,
    routes: dict[str, list[Route]] | None = None,
) -> list[str]:
    """Node names a packet from ``src_host`` to ``dst_host`` traverses, both ends included."""
    routes = compute_routes(topology) if routes is None else routes
    dst_ip = topology.host(dst_host).ip
    if src_host == dst_host:
        return [topology.host(src_host).name]
    nodes = [src_host]
    node, _ = topology.host_link(src_host)
    while not topology.is_host(node):
        if node in nodes:
            raise TopologyError(topology.source, "links", f"routing loop: {' -> '.join(nodes)}")
        nodes.append(node)
        port = _route_port(topology, routes, node, dst_ip)
        node = next(p.peer_node for p in topology.ports(node) if p.number == port)
    nodes.append(node)
    if node != dst_host:
        raise TopologyError(topology.source, "links", f"routes lead to {node}, not {dst_host}")
    return nodes


def _route_port(topology: Topology, routes: dict[str, list[Route]], switch: str, ip: str) -> int:
    for route in routes.get(switch, []):
        if route.dst_ip == ip:
            return route.port
    raise TopologyError(topology.source, "links", f"switch {switch} has no route to {ip}")


def _switch_adjacency(topology: Topology) -> Adjacency:
    """Switch-to-switch links, with the local port number of each."""
    return {
        spec.name: sorted(
            (port.number, port.peer_node)
            for port in topology.ports(spec.name)
            if not topology.is_host(port.peer_node)
        )
        for spec in topology.switches
    }


def _distances(adjacency: Adjacency, origin: str) -> dict[str, int]:
    """Hop counts from ``origin`` to every reachable switch (BFS)."""
    distance = {origin: 0}
    queue = deque([origin])
    while queue:
        current = queue.popleft()
        for _, neighbour in adjacency[current]:
            if neighbour not in distance:
                distance[neighbour] = distance[current] + 1
                queue.append(neighbour)
    return distance


def _path_counts(adjacency: Adjacency, distance: dict[str, int]) -> dict[str, int]:
    """Number of shortest paths from each reachable switch to the BFS origin."""
    counts: dict[str, int] = {}
    for switch in sorted(distance, key=distance.__getitem__):
        closer = [n for _, n in adjacency[switch] if distance.get(n) == distance[switch] - 1]
        counts[switch] = sum(counts[n] for n in closer) if closer else 1
    return counts


def _next_port(
    neighbours: list[tuple[int, str]],
    distance: dict[str, int],
    paths: dict[str, int],
    switch: str,
    index: int,
) -> int:
    """The port of ``switch`` towards destination number ``index`` (see module doc)."""
    candidates = [(port, n) for port, n in neighbours if distance.get(n) == distance[switch] - 1]
    stride = min(paths[n] for _, n in candidates)
    return candidates[(index // stride) % len(candidates)][0]
