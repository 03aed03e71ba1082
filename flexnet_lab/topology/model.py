"""Topology model: pure, immutable data (like mininet's Topo), no kernel access.

Port numbering follows Mininet: a switch's ports are 1, 2, 3, ... and a host's
ports 0, 1, ... in the order its links appear in ``Topology.links``; the
interface of port N on node X is ``f"{X}-eth{N}"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Mapping

from flexnet_lab.errors import TopologyError
from flexnet_lab.inputs import show

TARGETS: frozenset[str] = frozenset({"ebpf", "bmv2", "auto"})
"""Switch targets a topology may name; "auto" is resolved before the lab starts."""
BASELINE_TARGETS: frozenset[str] = frozenset({"bridge"})
"""Kinds the lab itself may substitute (benchmarks' Linux-bridge baseline), never in files."""


@dataclass(frozen=True)
class HostSpec:
    """A host: ip (dotted quad, no prefix), prefix length and mac."""

    name: str
    ip: str
    prefixlen: int
    mac: str
    commands: tuple[str, ...] = ()   # run on the host once the lab is up (coursework files)


@dataclass(frozen=True)
class P4Spec:
    """A user's own P4 program on a switch, as files name it (absolute paths; None where a
    file does not name one): the program (`.p4` source, or a bmv2 JSON with its P4Info),
    the runtime JSON with its table entries, and the exercise folder the coursework tools
    resolve relative paths against."""

    program: str | None
    runtime: str | None
    base: str
    source: str            # the file and field that named it, for errors
    p4info: str | None = None   # with a prebuilt bmv2 JSON `program`


@dataclass(frozen=True)
class SwitchSpec:
    """A switch and the target it runs on: "ebpf", "bmv2" or "auto"; `p4`: a program of
    the user's own instead of the lab's infrastructure program (bmv2 only)."""

    name: str
    target: str
    p4: P4Spec | None = None


@dataclass(frozen=True)
class LinkSpec:
    """A link between nodes a and b, shaped to bw Mbit/s (None: unshaped)."""

    a: str
    b: str
    bw: float | None = None
    port_a: int | None = None    # the port number on a (None: the next free one)
    port_b: int | None = None


@dataclass(frozen=True)
class Port:
    """One end of a link, seen from ``node``."""

    node: str
    number: int
    intf: str
    peer_node: str
    peer_number: int
    peer_intf: str


def intf_name(node: str, number: int) -> str:
    """Mininet's interface name for port ``number`` of ``node``."""
    return f"{node}-eth{number}"


@dataclass(frozen=True)
class Topology:
    """Hosts, switches and links of one lab; ``source`` names where it came from."""

    name: str
    source: str
    hosts: tuple[HostSpec, ...]
    switches: tuple[SwitchSpec, ...]
    links: tuple[LinkSpec, ...]
    capture: bool = False   # a pcap per switch port in the run folder (lab/capture.py)
    host_intf: str | None = None   # hosts' interface renamed to this (coursework: eth0)

    # -- lookups ---------------------------------------------------------------

    def node_names(self) -> list[str]:
        """Every node name: hosts first, then switches, each in file order."""
        return [h.name for h in self.hosts] + [s.name for s in self.switches]

    def host(self, name: str) -> HostSpec:
        """The host called ``name``; TopologyError if there is none."""
        for spec in self.hosts:
            if spec.name == name:
                return spec
        raise self._unknown("hosts", name)

    def switch(self, name: str) -> SwitchSpec:
        """The switch called ``name``; TopologyError if there is none."""
        for spec in self.switches:
            if spec.name == name:
                return spec
        raise self._unknown("switches", name)

    def is_host(self, name: str) -> bool:
        """True when ``name`` is a host of this topology."""
        return any(spec.name == name for spec in self.hosts)

    # -- ports -----------------------------------------------------------------

    def ports(self, node: str) -> list[Port]:
        """The ports of ``node``, by number (empty for a node with no links)."""
        if node not in self._port_table:
            raise self._unknown("nodes", node)
        return list(self._port_table[node])

    def port_between(self, a: str, b: str) -> Port:
        """The port on ``a`` that faces ``b``; TopologyError if they are not linked."""
        for port in self.ports(a):
            if port.peer_node == b:
                return port
        raise TopologyError(self.source, "links", f"no link between {a} and {b}")

    def host_link(self, host: str) -> tuple[str, int]:
        """(switch name, switch port number) that ``host`` hangs off."""
        self.host(host)
        ports = self.ports(host)
        if not ports:
            raise TopologyError(self.source, f"hosts.{host}", "host has no link")
        return ports[0].peer_node, ports[0].peer_number

    # -- copies ----------------------------------------------------------------

    def with_targets(self, resolver: Callable[[SwitchSpec], str]) -> Topology:
        """A copy whose switch targets are ``resolver(switch)``."""
        switches = []
        for spec in self.switches:
            target = resolver(spec)
            if target not in TARGETS | BASELINE_TARGETS:
                raise TopologyError(
                    self.source,
                    f"switches.{spec.name}.target",
                    f"resolver returned {show(target)}; expected one of "
                    f"{sorted(TARGETS | BASELINE_TARGETS)}",
                )
            switches.append(dataclasses.replace(spec, target=target))
        return dataclasses.replace(self, switches=tuple(switches))

    # -- internals -------------------------------------------------------------

    @cached_property
    def _port_table(self) -> Mapping[str, tuple[Port, ...]]:
        """Ports of every node, numbered Mininet-style in link order."""
        base = {spec.name: 0 for spec in self.hosts}
        base.update({spec.name: 1 for spec in self.switches})
        next_number = dict(base)
        table: dict[str, list[Port]] = {name: [] for name in base}
        for link in self.links:
            for end in (link.a, link.b):
                if end not in next_number:
                    raise self._unknown("nodes", end)
            na = link.port_a if link.port_a is not None else next_number[link.a]
            nb = link.port_b if link.port_b is not None else next_number[link.b]
            next_number[link.a] = max(next_number[link.a], na + 1)
            next_number[link.b] = max(next_number[link.b], nb + 1)
            ia, ib = intf_name(link.a, na), intf_name(link.b, nb)
            table[link.a].append(Port(link.a, na, ia, link.b, nb, ib))
            table[link.b].append(Port(link.b, nb, ib, link.a, na, ia))
        return {name: tuple(sorted(ports, key=lambda p: p.number))
                for name, ports in table.items()}

    def _unknown(self, kind: str, name: str) -> TopologyError:
        known = {
            "hosts": [h.name for h in self.hosts],
            "switches": [s.name for s in self.switches],
            "nodes": self.node_names(),
        }[kind]
        return TopologyError(
            self.source, kind, f"no {kind[:-1]} named {show(name)}; known: {', '.join(known)}"
        )


def resolve_auto(topology: Topology, have_bmv2: bool) -> Topology:
    """Replace target "auto" by "bmv2" when bmv2 is available, else "ebpf"."""
    auto = "bmv2" if have_bmv2 else "ebpf"
    return topology.with_targets(lambda spec: auto if spec.target == "auto" else spec.target)
