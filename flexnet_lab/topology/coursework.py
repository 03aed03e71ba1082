"""Load the topology.json of P4 coursework exercises (the form the common P4 tutorials'
run_exercise tooling reads) into a Topology.

Format::

    {"hosts": {"h1": {"ip": "10.0.1.1/24", "mac": "08:00:00:00:01:11",
                      "commands": ["route add default gw 10.0.1.10 dev eth0",
                                   "arp -i eth0 -s 10.0.1.10 08:00:00:00:01:00"]}},
     "switches": {"s1": {"runtime_json": "triangle-topo/s1-runtime.json"},
                  "s2": {"program": "build/other.json"}},
     "links": [["h1", "s1-p1"], ["s1-p2", "s2-p2", "0ms", 10]]}

* Link ends are a host (`h1`, its one interface) or a switch port (`s1-p2`: port 2 —
  port numbers are as the file says). An optional third item is the latency (ms as a
  number, or "5ms"/"1s"/"100us"), a fourth the bandwidth in Mbit/s. A latency other than
  zero is refused: this kernel has no netem.
* Hosts' `commands` run unchanged once the network is up; they call the host's interface
  `eth0`, so in such a lab it is named so. Hosts may be in different subnets (the
  commands set their gateways).
* Every switch runs bmv2 with the exercise's P4 program; `program` names it for one
  switch (a `.p4` source, or a compiled bmv2 JSON), `--p4 prog.p4` for every switch that
  does not name one; otherwise the lab finds it (see lab/p4_programs.py).
* Relative paths resolve as the coursework tools resolve them: against the exercise
  folder, where its Makefile runs (`pod-topo/topology.json` names
  `pod-topo/s1-runtime.json`). The exercise folder is the folder given to
  `flexnet up DIR`; for a topology.json path, the nearer of its folder and that folder's
  parent holding a Makefile or a `.p4` file (else its own folder).

Every problem raises one TopologyError(file, field, message) before anything starts.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from flexnet_lab.errors import TopologyError
from flexnet_lab.inputs import read_json_file, show
from flexnet_lab.topology.loader import (MAX_SWITCH_PORTS, NETEM_MESSAGE, _Ctx, _check_keys,
                                         _check_node_name, _check_unique, _parse_bw,
                                         _parse_ip, _parse_mac)
from flexnet_lab.topology.model import HostSpec, LinkSpec, P4Spec, SwitchSpec, Topology

HOST_INTF = "eth0"
MAX_PORT = 64                     # s1-eth64 still fits an interface name
MAX_COMMANDS = 64
_SWITCH_PORT = re.compile(r"([a-z][a-z0-9]{0,7})-p(\d{1,3})")
_LATENCY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(us|ms|s)?\s*")


def is_coursework(path: str | Path) -> bool:
    """A folder or a `.json` file: the coursework form (YAML is the lab's own)."""
    p = Path(path)
    return p.is_dir() or p.suffix == ".json"


def find_exercise(path: str | Path) -> tuple[Path, Path]:
    """(topology.json, exercise folder) for `flexnet up DIR` or a topology.json path."""
    p = Path(path)
    if p.is_dir():
        direct = p / "topology.json"
        if direct.is_file():
            return direct, p
        found = sorted(p.glob("*/topology.json"))
        if len(found) == 1:
            return found[0], p
        what = ("no topology.json in it or in a subfolder" if not found else
                f"{len(found)} subfolders hold a topology.json "
                f"({', '.join(str(f.parent.name) for f in found[:4])}): name one")
        raise TopologyError(str(p), "<file>", what)
    if not p.is_file():
        raise TopologyError(str(p), "<file>", "no such file")
    folder = p.parent
    for candidate in (folder, folder.parent):
        if (candidate / "Makefile").is_file() or any(candidate.glob("*.p4")):
            return p, candidate
    return p, folder


def load_coursework(path: str | Path, p4: str | None = None) -> Topology:
    """Read and validate a coursework topology.json (or an exercise folder). `p4`: the
    program (`--p4`) of every switch that does not name one."""
    topo_path, base = find_exercise(path)
    ctx = _Ctx(str(topo_path))
    data = read_json_file(str(topo_path), ctx.error)
    override = None
    if p4 is not None:
        override = os.path.abspath(p4)
        if not os.path.isfile(override):
            raise TopologyError(p4, "--p4", "no such file")
        if not override.endswith(".p4"):
            raise TopologyError(p4, "--p4", "expected a P4_16 source file ending in .p4")
    return parse_coursework(data, str(topo_path), str(base.resolve()), override)


def parse_coursework(data: Any, source: str, base: str, p4: str | None = None) -> Topology:
    ctx = _Ctx(source)
    if not isinstance(data, dict):
        raise ctx.error("<root>", f"expected a JSON object, got {type(data).__name__}")
    _check_keys(ctx, data, ("hosts", "switches", "links"), "")
    for key in ("hosts", "switches", "links"):
        if key not in data:
            raise ctx.error(key, "missing")
    hosts = _hosts(ctx, data["hosts"])
    switches = _switches(ctx, data["switches"], base, p4, {h.name for h in hosts})
    links = _links(ctx, data["links"], hosts, switches)
    name = Path(base).name if Path(source).parent.resolve() == Path(base) else \
        f"{Path(base).name}-{Path(source).parent.name}"
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name)[:64] or "exercise"
    return Topology(name, source, hosts, switches, links, host_intf=HOST_INTF)


def _mapping(ctx: _Ctx, value: Any, field: str) -> dict:
    if not isinstance(value, dict) or not value:
        raise ctx.error(field, f"expected a non-empty object, got {show(value)}")
    return value


def _hosts(ctx: _Ctx, value: Any) -> tuple[HostSpec, ...]:
    hosts = []
    for number, (name, options) in enumerate(_mapping(ctx, value, "hosts").items(), start=1):
        field = _check_node_name(ctx, name, "hosts")
        if not isinstance(options, dict):
            raise ctx.error(field, f"expected an object, got {show(options)}")
        _check_keys(ctx, options, ("ip", "mac", "commands"), field)
        if "ip" not in options:
            raise ctx.error(f"{field}.ip", "missing (e.g. \"10.0.1.1/24\")")
        ip, prefixlen = _parse_ip(ctx, options["ip"], number, f"{field}.ip")
        mac = _parse_mac(ctx, options.get("mac"), number, f"{field}.mac")
        commands = options.get("commands", [])
        if not isinstance(commands, list) or len(commands) > MAX_COMMANDS:
            raise ctx.error(f"{field}.commands", f"expected a list of at most {MAX_COMMANDS} "
                            f"command lines, got {show(commands)}")
        for i, cmd in enumerate(commands):
            if not isinstance(cmd, str) or not cmd.strip() or "\n" in cmd or len(cmd) > 1000:
                raise ctx.error(f"{field}.commands[{i}]", "expected one command line, got "
                                f"{show(cmd)}")
        hosts.append(HostSpec(name, ip, prefixlen, mac, tuple(commands)))
    _check_unique(ctx, hosts, "ip")
    _check_unique(ctx, hosts, "mac")
    return tuple(hosts)


def _path(ctx: _Ctx, value: Any, field: str, base: str, suffixes: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(field, f"expected a file path, got {show(value)}")
    path = value if os.path.isabs(value) else os.path.join(base, value)
    if not os.path.isfile(path):
        raise ctx.error(field, f"no such file: {show(value)} (relative paths are taken "
                        f"from the exercise folder {show(base, 80)})")
    if not path.endswith(suffixes):
        raise ctx.error(field, f"{show(value)}: expected a file ending in "
                        f"{' or '.join(suffixes)}")
    return os.path.abspath(path)


def _switches(ctx: _Ctx, value: Any, base: str, p4: str | None,
              host_names: set[str]) -> tuple[SwitchSpec, ...]:
    switches = []
    for name, options in _mapping(ctx, value, "switches").items():
        field = _check_node_name(ctx, name, "switches")
        if name in host_names:
            raise ctx.error(field, f"{show(name)} is already the name of a host")
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ctx.error(field, f"expected an object, got {show(options)}")
        if "cli_input" in options:
            raise ctx.error(f"{field}.cli_input", "simple_switch_CLI command files are not "
                            "supported: give the entries as a runtime JSON (runtime_json)")
        _check_keys(ctx, options, ("runtime_json", "program"), field)
        runtime = _path(ctx, options["runtime_json"], f"{field}.runtime_json", base,
                        (".json",)) if "runtime_json" in options else None
        program = _path(ctx, options["program"], f"{field}.program", base,
                        (".p4", ".json")) if "program" in options else p4
        switches.append(SwitchSpec(name, "bmv2", P4Spec(program, runtime, base,
                                                        f"{ctx.source}: {field}")))
    return tuple(switches)


def _end(ctx: _Ctx, value: Any, field: str, hosts: set[str], switches: set[str]
         ) -> tuple[str, int | None]:
    if not isinstance(value, str):
        raise ctx.error(field, f"expected \"h1\" or \"s1-p2\", got {show(value)}")
    if value in hosts:
        return value, None
    m = _SWITCH_PORT.fullmatch(value)
    if m is None:
        if value in switches:
            raise ctx.error(field, f"{show(value)}: name the switch's port, e.g. "
                            f"\"{value}-p1\"")
        raise ctx.error(field, f"{show(value)} is neither a host nor a switch port "
                        "like \"s1-p2\"")
    if m.group(1) not in switches:
        raise ctx.error(field, f"{show(value)}: no switch {show(m.group(1))}")
    port = int(m.group(2))
    if not 1 <= port <= MAX_PORT:
        raise ctx.error(field, f"{show(value)}: port numbers are 1..{MAX_PORT}")
    return m.group(1), port


def _latency_ms(ctx: _Ctx, value: Any, field: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = float(value)
    else:
        m = _LATENCY.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            raise ctx.error(field, f"expected a latency like \"5ms\", got {show(value)}")
        ms = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, None: 1.0}[m.group(2)]
    if ms < 0:
        raise ctx.error(field, f"negative latency {show(value)}")
    return ms


def _links(ctx: _Ctx, value: Any, hosts: tuple[HostSpec, ...],
           switches: tuple[SwitchSpec, ...]) -> tuple[LinkSpec, ...]:
    if not isinstance(value, list) or not value:
        raise ctx.error("links", f"expected a non-empty list of links, got {show(value)}")
    host_names, switch_names = {h.name for h in hosts}, {s.name for s in switches}
    used: dict[tuple[str, int], int] = {}
    host_links: dict[str, int] = {}
    pairs: dict[frozenset, int] = {}
    links = []
    for i, entry in enumerate(value):
        field = f"links[{i}]"
        if not isinstance(entry, list) or not 2 <= len(entry) <= 4:
            raise ctx.error(field, "expected [a, b], [a, b, latency] or "
                            f"[a, b, latency, bandwidth], got {show(entry)}")
        (a, pa), (b, pb) = (_end(ctx, entry[k], f"{field}[{k}]", host_names, switch_names)
                            for k in (0, 1))
        if a == b:
            raise ctx.error(field, f"self-loop on {a}")
        if pa is None and pb is None:
            raise ctx.error(field, f"links host {a} to host {b}; hosts hang off a switch")
        if len(entry) > 2 and _latency_ms(ctx, entry[2], f"{field}[2]") > 0:
            raise ctx.error(f"{field}[2]", NETEM_MESSAGE)
        bw = _parse_bw(ctx, entry[3] or None, f"{field}[3]") if len(entry) > 3 else None
        for node, port, k in ((a, pa, 0), (b, pb, 1)):
            if port is None:
                if node in host_links:
                    raise ctx.error(f"{field}[{k}]", f"host {node} is already linked "
                                    f"(links[{host_links[node]}]); a host hangs off one switch")
                host_links[node] = i
            elif (node, port) in used:
                raise ctx.error(f"{field}[{k}]", f"port {port} of {node} is already used "
                                f"by links[{used[node, port]}]")
            else:
                used[node, port] = i
        pair = frozenset((a, b))
        if pair in pairs:
            raise ctx.error(field, f"a second link {a}-{b} (already links[{pairs[pair]}])")
        pairs[pair] = i
        links.append(LinkSpec(a, b, bw, 0 if pa is None else pa, 0 if pb is None else pb))
    for h in hosts:
        if h.name not in host_links:
            raise ctx.error(f"hosts.{h.name}", "has no link; a host hangs off one switch")
    for s in switches:
        n = sum(1 for node, _ in used if node == s.name)
        if n > MAX_SWITCH_PORTS:
            raise ctx.error(f"switches.{s.name}", f"has {n} ports; at most "
                            f"{MAX_SWITCH_PORTS} are supported")
    return tuple(links)
