"""Topologies as pure data: model, YAML loader and static routes."""

from flexnet_lab.topology.loader import (
    MAX_SWITCH_PORTS,
    NETEM_MESSAGE,
    find_topology,
    list_topologies,
    load_topology,
    parse_topology,
)
from flexnet_lab.topology.model import (
    TARGETS,
    HostSpec,
    LinkSpec,
    Port,
    SwitchSpec,
    Topology,
    intf_name,
    resolve_auto,
)
from flexnet_lab.topology.routes import Route, compute_routes, path

__all__ = [
    "MAX_SWITCH_PORTS",
    "NETEM_MESSAGE",
    "TARGETS",
    "HostSpec",
    "LinkSpec",
    "Port",
    "Route",
    "SwitchSpec",
    "Topology",
    "compute_routes",
    "find_topology",
    "intf_name",
    "list_topologies",
    "load_topology",
    "parse_topology",
    "path",
    "resolve_auto",
]
