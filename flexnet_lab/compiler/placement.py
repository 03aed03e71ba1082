"""Placement: put a tenant function on the device that can run it, and say why.

A function (a Program with maps and ops) needs capabilities (ops, match kinds), state
(bytes of maps and tables) and per-packet work (tables + ops). A device offers capabilities
and budgets; what it already runs is subtracted. Devices are tried in the caller's order
(switches first: in-network is preferred); the first that fits wins, and the explanation
names, for every device passed over, the resource that was short.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import FlexNetError
from ..program.model import Action, Key, Map, Program, Table
from .layout import key_words, table_layout


SWITCH_STATE_BUDGET = 64 * 1024        # bytes of tenant state an eBPF switch offers
HOST_STATE_BUDGET = 16 * 1024 * 1024   # bytes a host's eBPF offers
WORK_BUDGET = 512                      # lookups + ops per packet


class PlacementError(FlexNetError):
    """No device can run the function; the message lists what each one lacks."""


def map_bytes(m: Map) -> int:
    if m.kind == "counter":
        return 16 * m.size
    if m.kind == "register":
        return 8 * m.size
    if m.kind == "sketch":
        return 8 * m.size * m.rows
    return (8 * key_words(m) + 16) * m.size


def state_bytes(program: Program) -> int:
    """Memory the program's maps and tables take on an eBPF target."""
    tables = sum((table_layout(program, t).key_size + table_layout(program, t).value_size)
                 * t.size for t in program.tables)
    return sum(map_bytes(m) for m in program.maps) + tables


def per_packet_work(program: Program) -> int:
    """Upper bound of lookups + ops a packet costs (ternary scans count their size)."""
    work = 0
    for stmt in program.control:
        if stmt.table:
            t = program.table(stmt.table)
            lay = table_layout(program, t)
            work += t.size if lay.kind == "ternary" else 1
            work += max((len(program.action(a).ops) for a in t.actions), default=0)
        work += len(stmt.ops)
    return work


def needed_capabilities(program: Program) -> set[str]:
    caps = {op.name for a in program.actions for op in a.ops}
    caps |= {op.name for s in program.control for op in s.ops}
    caps |= {k.kind for t in program.tables for k in t.keys}
    return caps


@dataclass(frozen=True)
class Device:
    """What a device offers to tenant functions."""
    name: str
    kind: str                       # "switch" | "host"
    capabilities: frozenset[str]
    state_budget: int               # bytes for tenant state
    work_budget: int                # lookups + ops per packet
    used_state: int = 0
    used_work: int = 0


@dataclass
class Placement:
    function: str
    device: str | None
    kind: str | None
    reasons: list[str] = field(default_factory=list)

    def explain(self) -> str:
        head = (f"{self.function} -> {self.device} ({self.kind})" if self.device
                else f"{self.function}: no device can run it")
        return "\n".join([head] + [f"  {r}" for r in self.reasons])


def shortfalls(fn: Program, dev: Device) -> list[str]:
    """Why `dev` cannot take `fn` (empty: it can)."""
    out = []
    missing = needed_capabilities(fn) - dev.capabilities
    if missing:
        out.append(f"cannot do {', '.join(sorted(missing))}")
    need, free = state_bytes(fn), dev.state_budget - dev.used_state
    if need > free:
        out.append(f"state: needs {need} B, {free} B free of {dev.state_budget} B")
    work, wfree = per_packet_work(fn), dev.work_budget - dev.used_work
    if work > wfree:
        out.append(f"per-packet work: needs {work}, {wfree} left of {dev.work_budget}")
    return out


def place(fn: Program, devices: list[Device]) -> Placement:
    """The first device in `devices` that can run `fn`, with the reasons."""
    p = Placement(fn.name, None, None)
    for dev in devices:
        short = shortfalls(fn, dev)
        if short:
            p.reasons.append(f"{dev.name} ({dev.kind}) passed over: " + "; ".join(short))
            continue
        p.device, p.kind = dev.name, dev.kind
        p.reasons.append(f"{dev.name} ({dev.kind}) has what it needs: "
                         f"{state_bytes(fn)} B of state of "
                         f"{dev.state_budget - dev.used_state} B free, per-packet work "
                         f"{per_packet_work(fn)} of {dev.work_budget - dev.used_work} left, "
                         f"ops {', '.join(sorted(needed_capabilities(fn)))}")
        return p
    raise PlacementError(p.explain())


def as_switch_delta(fn: Program, before: str = "l3_fwd"):
    """The delta that runs host-style function `fn` inside a switch's pipeline: its maps,
    and its control ops as the default action of a table (no entries: every packet)."""
    from ..program.delta import AddMap, AddTable, Delta
    ops = tuple(op for s in fn.control for op in s.ops if op.args[:1] != ("pkts",))
    action = Action(f"{fn.name[:11]}_do", (), ops)
    table = Table(f"{fn.name[:11]}_fn", (Key("meta.ip_proto", "exact"),), (action.name,),
                  action.name, size=1)
    maps = [m for m in fn.maps if m.name != "pkts"]
    return Delta(tuple(AddMap(m) for m in maps)
                 + (AddTable(table, before=before, actions=(action,)),), name=f"place {fn.name}")
