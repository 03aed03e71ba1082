"""Load and validate topology files.

Format (YAML)::

    name: linear            # optional, defaults to the file stem
    defaults:               # optional
      target: auto          # default switch target: ebpf | bmv2 | auto
      bw: null              # default link bandwidth, Mbit/s (null: unshaped)
    hosts:
      h1: {ip: 10.0.0.1/24, mac: "00:00:00:00:00:01"}   # both optional; `h1:` or `h1: {}` is fine
    switches:
      s1: {target: ebpf}    # optional; also a bare `s1:`
    links:
      - [h1, s1]            # short form
      - {a: s1, b: s2, bw: 100}

Rules:

* Node names match ``[a-z][a-z0-9]{0,7}`` (so ``<name>-eth<N>`` fits the
  kernel's 15-character interface names) and are unique across hosts and
  switches. Duplicate keys in any mapping are rejected.
* A host without ``ip`` gets ``10.0.0.N/24`` and without ``mac`` gets
  ``00:00:00:00:00:NN`` (hex), N being its 1-based position under ``hosts``.
  An ``ip`` without ``/prefix`` gets ``/24``. Quote macs: YAML may read some
  unquoted macs as numbers.
* Each host hangs off exactly one switch; links are unique per node pair, have
  no self-loops, and a switch has at most 30 ports.
* Link ``bw`` is 0.1..1000 Mbit/s (what TCLink shapes); ``delay``, ``loss`` and
  ``jitter`` are rejected because this kernel has no netem qdisc.

Every problem raises one ``TopologyError(source, field, message)``; ``field``
is a dotted path such as ``links[3].bw`` (0-based index), ``hosts.h1.ip`` or
``switches.s9.target``; ``<yaml>`` for syntax errors, ``<root>`` for the
document itself, ``<file>``/``<name>`` when the file cannot be found or read.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexnet_lab.errors import TopologyError
from flexnet_lab.inputs import read_yaml_file, show
from flexnet_lab.topology.model import (TARGETS, HostSpec, LinkSpec, P4Spec, SwitchSpec,
                                        Topology)

MAX_SWITCH_PORTS = 30
MIN_BW_MBIT, MAX_BW_MBIT = 0.1, 1000.0   # what Mininet's TCLink (htb) shapes
NETEM_MESSAGE = (
    "the kernel here has no netem qdisc: delay/loss/jitter cannot be emulated (only bw, via htb)"
)
_NETEM_KEYS = ("delay", "loss", "jitter")
_NODE_NAME = re.compile(r"[a-z][a-z0-9]{0,7}")
_TOPOLOGY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_IP = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3})(?:/(\d{1,2}))?")
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_DEFAULT_PREFIXLEN = 24
_AUTO_NET = "10.0.0."


@dataclass(frozen=True)
class _Ctx:
    """Where the data came from; makes errors."""

    source: str

    def error(self, field: str, message: str) -> TopologyError:
        return TopologyError(self.source, field, message)


# -- public API ----------------------------------------------------------------


def load_topology(path: str | Path) -> Topology:
    """Read, parse and validate the topology file at ``path``."""
    path = Path(path)
    ctx = _Ctx(str(path))
    data = read_yaml_file(str(path), ctx.error)
    return parse_topology(data, str(path), default_name=path.stem)


def parse_topology(data: Any, source: str = "<data>", default_name: str | None = None) -> Topology:
    """Validate already-parsed YAML ``data`` into a Topology.

    ``default_name`` is used when ``data`` has no ``name`` (default: the stem
    of ``source``, or "topology" for "<data>").
    """
    ctx = _Ctx(source)
    if not isinstance(data, dict):
        raise ctx.error("<root>", f"expected a mapping, got {_kind(data)}")
    _check_keys(ctx, data, ("name", "defaults", "hosts", "switches", "links", "capture"), "")
    capture = data.get("capture", False)
    if not isinstance(capture, bool):
        raise ctx.error("capture", f"expected true or false, got {show(capture)}")
    if default_name is None:
        default_name = "topology" if source.startswith("<") else Path(source).stem
    name = _parse_name(ctx, data.get("name", default_name))
    target, bw = _parse_defaults(ctx, data.get("defaults"))
    hosts = _parse_hosts(ctx, data.get("hosts"))
    switches = _parse_switches(ctx, data.get("switches"), target, {h.name for h in hosts})
    links = _parse_links(ctx, data.get("links"), hosts, switches, bw)
    _check_degrees(ctx, hosts, switches, links)
    return Topology(name, source, hosts, switches, links, capture)


def list_topologies(search_dir: str | Path) -> list[str]:
    """Names of the ``*.yaml`` topologies in ``search_dir``, sorted."""
    directory = Path(search_dir)
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def find_topology(name_or_path: str | Path, search_dir: str | Path) -> Path:
    """The file for a path to a ``.yaml``/``.yml`` or a bare name in ``search_dir``.

    A bare name such as "linear" resolves to ``<search_dir>/linear.yaml``.
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1:
        if not candidate.is_file():
            raise TopologyError(str(candidate), "<file>", "no such file")
        return candidate
    match = Path(search_dir) / f"{candidate.name}.yaml"
    if match.is_file():
        return match
    available = ", ".join(list_topologies(search_dir)) or "none"
    raise TopologyError(
        str(name_or_path), "<name>",
        f"unknown topology; available in {search_dir}: {available}",
    )


# -- sections ------------------------------------------------------------------


def _parse_name(ctx: _Ctx, value: Any) -> str:
    if not isinstance(value, str) or not _TOPOLOGY_NAME.fullmatch(value):
        raise ctx.error("name", f"expected a name matching {_TOPOLOGY_NAME.pattern}, got {show(value)}")
    return value


def _parse_defaults(ctx: _Ctx, value: Any) -> tuple[str, float | None]:
    section = _optional_mapping(ctx, value, "defaults")
    _check_keys(ctx, section, ("target", "bw"), "defaults")
    target = _parse_target(ctx, section.get("target", "auto"), "defaults.target")
    bw = _parse_bw(ctx, section.get("bw"), "defaults.bw")
    return target, bw


def _parse_hosts(ctx: _Ctx, value: Any) -> tuple[HostSpec, ...]:
    section = _nonempty_mapping(ctx, value, "hosts")
    hosts = []
    for number, (name, options) in enumerate(section.items(), start=1):
        field = _check_node_name(ctx, name, "hosts")
        options = _optional_mapping(ctx, options, field)
        _check_keys(ctx, options, ("ip", "mac"), field)
        ip, prefixlen = _parse_ip(ctx, options.get("ip"), number, f"{field}.ip")
        mac = _parse_mac(ctx, options.get("mac"), number, f"{field}.mac")
        hosts.append(HostSpec(name, ip, prefixlen, mac))
    _check_unique(ctx, hosts, "ip")
    _check_unique(ctx, hosts, "mac")
    _check_one_subnet(ctx, hosts)
    return tuple(hosts)


def _check_one_subnet(ctx: _Ctx, hosts: list[HostSpec]) -> None:
    """Hosts have only their connected route and ARP for every peer directly (the switches
    route /32s), so a host outside another's subnet could never reach it."""
    first = hosts[0]
    net = ipaddress.IPv4Network(f"{first.ip}/{first.prefixlen}", strict=False)
    for host in hosts[1:]:
        own = ipaddress.IPv4Network(f"{host.ip}/{host.prefixlen}", strict=False)
        if ipaddress.IPv4Address(host.ip) not in net or ipaddress.IPv4Address(first.ip) not in own:
            raise ctx.error(
                f"hosts.{host.name}.ip",
                f"{host.ip}/{host.prefixlen} is not in {first.name}'s subnet {net}: hosts have "
                "no gateway (they ARP for each other through the switches), so every host "
                "must be in one subnet, e.g. 10.0.0.N/24")


def _parse_switches(
    ctx: _Ctx, value: Any, default_target: str, host_names: set[str]
) -> tuple[SwitchSpec, ...]:
    section = _nonempty_mapping(ctx, value, "switches")
    switches = []
    for name, options in section.items():
        field = _check_node_name(ctx, name, "switches")
        if name in host_names:
            raise ctx.error(field, f"{show(name)} is already the name of a host")
        options = _optional_mapping(ctx, options, field)
        _check_keys(ctx, options, ("target", "p4", "runtime"), field)
        target = _parse_target(ctx, options.get("target", default_target), f"{field}.target")
        p4 = _parse_p4(ctx, options, field, target)
        switches.append(SwitchSpec(name, "bmv2" if p4 else target, p4))
    return tuple(switches)


def _parse_p4(ctx: _Ctx, options: dict, field: str, target: str) -> P4Spec | None:
    """`p4: prog.p4` (or a compiled bmv2 JSON) and `runtime: s1-runtime.json`: a program
    of the user's own on a bmv2 switch; paths relative to the topology file's folder."""
    if "p4" not in options:
        if "runtime" in options:
            raise ctx.error(f"{field}.runtime", "a runtime file needs the program: add p4: "
                            "path/to/prog.p4")
        return None
    if target == "ebpf":
        raise ctx.error(f"{field}.target", "a switch running its own P4 program (p4:) is a "
                        "bmv2 switch: drop `target: ebpf`")
    base = str(Path(ctx.source).parent.resolve()) if not ctx.source.startswith("<") else "."
    paths = {}
    for key, ends in (("p4", (".p4", ".json")), ("runtime", (".json",))):
        value = options.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.endswith(ends):
            raise ctx.error(f"{field}.{key}", f"expected a path ending in {' or '.join(ends)}, "
                            f"got {show(value)}")
        path = Path(value) if Path(value).is_absolute() else Path(base) / value
        if not path.is_file():
            raise ctx.error(f"{field}.{key}", f"no such file: {show(value)} (relative to "
                            f"{show(base, 80)})")
        paths[key] = str(path.resolve())
    return P4Spec(paths["p4"], paths.get("runtime"), base, f"{ctx.source}: {field}")


def _parse_links(
    ctx: _Ctx,
    value: Any,
    hosts: tuple[HostSpec, ...],
    switches: tuple[SwitchSpec, ...],
    default_bw: float | None,
) -> tuple[LinkSpec, ...]:
    if not isinstance(value, list) or not value:
        raise ctx.error("links", f"expected a non-empty list of links, got {_kind(value)}")
    host_names = {h.name for h in hosts}
    nodes = host_names | {s.name for s in switches}
    first_index: dict[frozenset[str], int] = {}
    links = []
    for index, entry in enumerate(value):
        field = f"links[{index}]"
        link = _parse_link(ctx, entry, field, default_bw)
        for end, node in (("a", link.a), ("b", link.b)):
            if node not in nodes:
                raise ctx.error(f"{field}.{end}", f"unknown node {show(node)}")
        if link.a == link.b:
            raise ctx.error(field, f"self-loop on {link.a}")
        if link.a in host_names and link.b in host_names:
            raise ctx.error(field, f"links host {link.a} to host {link.b}; hosts hang off a switch")
        pair = frozenset((link.a, link.b))
        if pair in first_index:
            raise ctx.error(
                field, f"duplicate link {link.a}-{link.b} (already links[{first_index[pair]}])"
            )
        first_index[pair] = index
        links.append(link)
    return tuple(links)


def _parse_link(ctx: _Ctx, entry: Any, field: str, default_bw: float | None) -> LinkSpec:
    if isinstance(entry, list):
        if len(entry) != 2:
            raise ctx.error(field, f"expected [a, b], got a list of {len(entry)} items")
        a, b = entry
        bw = default_bw
    elif isinstance(entry, dict):
        _check_keys(ctx, entry, ("a", "b", "bw"), field)
        for end in ("a", "b"):
            if end not in entry:
                raise ctx.error(f"{field}.{end}", "missing")
        a, b = entry["a"], entry["b"]
        bw = _parse_bw(ctx, entry["bw"], f"{field}.bw") if "bw" in entry else default_bw
    else:
        raise ctx.error(field, f"expected [a, b] or {{a: .., b: .., bw: ..}}, got {_kind(entry)}")
    for end, node in (("a", a), ("b", b)):
        if not isinstance(node, str):
            raise ctx.error(f"{field}.{end}", f"expected a node name, got {show(node)}")
    return LinkSpec(a, b, bw)


def _check_degrees(
    ctx: _Ctx,
    hosts: tuple[HostSpec, ...],
    switches: tuple[SwitchSpec, ...],
    links: tuple[LinkSpec, ...],
) -> None:
    degree = Counter(end for link in links for end in (link.a, link.b))
    for host in hosts:
        if degree[host.name] != 1:
            raise ctx.error(
                f"hosts.{host.name}",
                f"has {degree[host.name]} links; a host hangs off exactly one switch",
            )
    for switch in switches:
        if degree[switch.name] > MAX_SWITCH_PORTS:
            raise ctx.error(
                f"switches.{switch.name}",
                f"has {degree[switch.name]} ports; at most {MAX_SWITCH_PORTS} are supported",
            )


# -- values --------------------------------------------------------------------


def _parse_target(ctx: _Ctx, value: Any, field: str) -> str:
    if not isinstance(value, str) or value not in TARGETS:
        raise ctx.error(field, f"expected one of {', '.join(sorted(TARGETS))}, got {show(value)}")
    return value


def _parse_bw(ctx: _Ctx, value: Any, field: str) -> float | None:
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ctx.error(field, f"expected a positive number of Mbit/s, got {show(value)}")
    if not MIN_BW_MBIT <= value <= MAX_BW_MBIT:
        # Mininet's TCLink ignores a bw outside 0..1000 with only a warning: the link would
        # come up unshaped; below 0.1 Mbit/s one full frame takes over 0.1 s to send
        raise ctx.error(field, f"{show(value)} Mbit/s cannot be shaped here: "
                        f"{MIN_BW_MBIT:g}..{MAX_BW_MBIT:g} Mbit/s (Mininet's TCLink)")
    return float(value)


def _parse_ip(ctx: _Ctx, value: Any, number: int, field: str) -> tuple[str, int]:
    if value is None:
        if number > 254:
            raise ctx.error(field, "cannot auto-assign 10.0.0.N/24 beyond 254 hosts; set ip")
        return f"{_AUTO_NET}{number}", _DEFAULT_PREFIXLEN
    match = _IP.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ctx.error(field, f"expected an address like 10.0.0.1/24, got {show(value)}")
    try:
        address = ipaddress.IPv4Address(match.group(1))
    except ValueError as exc:
        raise ctx.error(field, f"bad address {show(value)}: {exc}") from exc
    prefixlen = int(match.group(2)) if match.group(2) else _DEFAULT_PREFIXLEN
    if not 1 <= prefixlen <= 32:
        raise ctx.error(field, f"prefix length must be 1..32, got {prefixlen}")
    _check_host_address(ctx, address, prefixlen, field)
    return str(address), prefixlen


def _check_host_address(
    ctx: _Ctx, address: ipaddress.IPv4Address, prefixlen: int, field: str
) -> None:
    if address.is_unspecified or address.is_loopback or address.is_multicast or address.is_reserved:
        raise ctx.error(field, f"{address} cannot be a host address")
    network = ipaddress.IPv4Network(f"{address}/{prefixlen}", strict=False)
    if prefixlen <= 30 and address in (network.network_address, network.broadcast_address):
        raise ctx.error(field, f"{address} is the network or broadcast address of {network}")


def _parse_mac(ctx: _Ctx, value: Any, number: int, field: str) -> str:
    if value is None:
        return ":".join(f"{octet:02x}" for octet in number.to_bytes(6, "big"))
    if not isinstance(value, str):
        raise ctx.error(field, f"expected a quoted mac like \"00:00:00:00:00:01\", got {show(value)}")
    mac = value.lower()
    if not _MAC.fullmatch(mac):
        raise ctx.error(field, f"expected a mac like 00:00:00:00:00:01, got {show(value)}")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise ctx.error(field, f"{value} is not a unicast mac")
    return mac


# -- helpers -------------------------------------------------------------------


def _check_unique(ctx: _Ctx, hosts: list[HostSpec], attribute: str) -> None:
    owner: dict[str, str] = {}
    for host in hosts:
        value = getattr(host, attribute)
        if value in owner:
            raise ctx.error(
                f"hosts.{host.name}.{attribute}",
                f"{value} is already used by {owner[value]} (unset values are auto-assigned "
                "from the host's position)",
            )
        owner[value] = host.name


def _check_node_name(ctx: _Ctx, name: Any, section: str) -> str:
    field = f"{section}.{name}"
    if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
        raise ctx.error(
            field,
            f"bad node name {show(name)}: must match {_NODE_NAME.pattern} "
            "(interface names must fit 15 characters)",
        )
    return field


def _check_keys(ctx: _Ctx, mapping: dict, allowed: tuple[str, ...], prefix: str) -> None:
    for key in mapping:
        if key in allowed:
            continue
        field = f"{prefix}.{key}" if prefix else str(key)
        if key in _NETEM_KEYS and (prefix == "defaults" or prefix.startswith("links[")):
            raise ctx.error(field, NETEM_MESSAGE)
        raise ctx.error(field, f"unknown key {show(key)}; allowed: {', '.join(allowed)}")


def _optional_mapping(ctx: _Ctx, value: Any, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ctx.error(field, f"expected a mapping, got {_kind(value)}")
    return value


def _nonempty_mapping(ctx: _Ctx, value: Any, field: str) -> dict:
    mapping = _optional_mapping(ctx, value, field)
    if not mapping:
        raise ctx.error(field, "at least one entry is required")
    return mapping


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
