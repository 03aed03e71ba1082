"""FlexBPF-lite: a logical datapath program as plain, immutable data.

A Program is headers, a parser (named states, acyclic), key/value maps (the only state,
each bounded), actions (lists of primitive ops from a fixed set), match/action tables and a
control sequence. Every element is frozen and compared by value, so a delta and its inverse
can be checked for identity and a planner can diff two programs.

Field references are strings: "<header>.<field>", "meta.<name>" (user metadata) or
"std.<name>" (standard metadata: ingress_port, egress_port, pkt_len).
Action op arguments: an int constant, "$param" (the entry's action data) or a field ref.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

MATCH_KINDS = ("exact", "lpm", "ternary")
MAP_KINDS = ("counter", "register", "hash", "sketch", "meter")
STD_FIELDS = {"ingress_port": 16, "egress_port": 16, "pkt_len": 32}

# op name -> (number of arguments, what it needs of a target)
OPS = {
    "forward": 1,      # forward(port)
    "drop": 0,         # drop()
    "nop": 0,          # nop()
    "set": 2,          # set(field, value)
    "push_vlan": 1,    # push_vlan(vid)
    "pop_vlan": 0,     # pop_vlan()
    "count": 2,        # count(counter_map, index)
    "map_add": 2,      # map_add(hash_map, key_field): packets/bytes per key
    "sketch_add": 2,   # sketch_add(sketch_map, key_field): count-min update
    "rate_limit": 2,   # rate_limit(meter_map, key_field): token bucket per key, drop when empty
    "reg_write": 3,    # reg_write(register_map, index, value)
}


@dataclass(frozen=True)
class Field:
    name: str
    bits: int


@dataclass(frozen=True)
class Header:
    """A header type; one instance of it per packet, named like the type."""
    name: str
    fields: tuple[Field, ...]

    @property
    def bits(self) -> int:
        return sum(f.bits for f in self.fields)

    @property
    def size(self) -> int:
        return self.bits // 8

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def offset(self, name: str) -> int:
        """Bit offset of a field from the header's start."""
        off = 0
        for f in self.fields:
            if f.name == name:
                return off
            off += f.bits
        raise KeyError(name)


@dataclass(frozen=True)
class Transition:
    """select(fields) { values: state; ... default: state }. Terminal states: accept, reject."""
    select: tuple[str, ...] = ()
    cases: tuple[tuple[tuple[int, ...], str], ...] = ()
    default: str = "accept"

    def targets(self) -> list[str]:
        return [s for _, s in self.cases] + [self.default]


@dataclass(frozen=True)
class ParserState:
    name: str
    extract: str | None = None                     # header extracted on entry
    sets: tuple[tuple[str, str], ...] = ()         # (meta.x, source field) after extract
    transition: Transition = field(default_factory=Transition)


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple = ()


@dataclass(frozen=True)
class Action:
    name: str
    params: tuple[tuple[str, int], ...] = ()       # (name, bits), at most 4, each <= 64 bits
    ops: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Key:
    field: str
    kind: str = "exact"


@dataclass(frozen=True)
class Table:
    name: str
    keys: tuple[Key, ...]
    actions: tuple[str, ...]
    default_action: str
    default_args: tuple[int, ...] = ()
    size: int = 256


@dataclass(frozen=True)
class Map:
    """Bounded state. counter: size slots of (packets, bytes) by index; register: size u64
    slots; hash: (packets, bytes) per key value, at most size keys; sketch: rows x size
    count-min; meter: token bucket per key value (rate bytes/s, burst bytes), size keys."""
    name: str
    kind: str
    size: int
    key_bits: int = 32
    rows: int = 0
    rate: int = 0
    burst: int = 0


@dataclass(frozen=True)
class Stmt:
    """One step of the control: apply a table, or run ops unconditionally."""
    table: str | None = None
    ops: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Program:
    name: str
    headers: tuple[Header, ...] = ()
    metadata: tuple[Field, ...] = ()
    parser: tuple[ParserState, ...] = ()           # the first state is the start state
    maps: tuple[Map, ...] = ()
    actions: tuple[Action, ...] = ()
    tables: tuple[Table, ...] = ()
    control: tuple[Stmt, ...] = ()

    def __hash__(self) -> int:
        # programs key the caches of a change (20 switches, one program): hashing the
        # whole tree every time costs more than the work the caches save
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.name, self.headers, self.metadata, self.parser, self.maps,
                      self.actions, self.tables, self.control))
            object.__setattr__(self, "_hash", h)
        return h

    # --- lookups ---------------------------------------------------------------------
    def header(self, name: str) -> Header | None:
        return _find(self.headers, name)

    def state(self, name: str) -> ParserState | None:
        return _find(self.parser, name)

    def map(self, name: str) -> Map | None:
        return _find(self.maps, name)

    def action(self, name: str) -> Action | None:
        return _find(self.actions, name)

    def table(self, name: str) -> Table | None:
        return _find(self.tables, name)

    def field_bits(self, ref: str) -> int | None:
        """Width of a field reference, or None when it names nothing."""
        scope, _, name = ref.partition(".")
        if scope == "std":
            return STD_FIELDS.get(name)
        if scope == "meta":
            f = _find(self.metadata, name)
            return f.bits if f else None
        hdr = self.header(scope)
        f = hdr.field(name) if hdr else None
        return f.bits if f else None

    def with_(self, **changes) -> "Program":
        return replace(self, **changes)


def _find(items: Iterable, name: str):
    return next((x for x in items if x.name == name), None)


def action_id(name: str) -> int:
    """Stable id of an action: entries keep meaning when other actions come and go."""
    h = 2166136261
    for ch in name.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h or 1
