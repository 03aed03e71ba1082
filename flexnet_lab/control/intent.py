"""The network's intent: what every device should run, as plain data that the store keeps.

A device is a switch (`l1`) or a host's hook (`h8:xdp:ingress`). Its intent is the program
(base program with every delta applied; tables' defaults are part of it), the table entries
the controller put in, and, on eBPF, the kernel id of the pipeline that carries that
program (how a restarted controller tells whether the device runs it). An app is a named
program element deployed on some devices."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..compiler.p4_user import UserP4
from ..program.model import Program
from ..program.yaml_form import program_from_dict, program_to_dict
from ..targets.ebpf_datapath import Entry
from ..targets.ebpf_hook import HookFunction


def entry_to_json(e: Entry) -> dict:
    return {"table": e.table, "match": [list(m) if isinstance(m, tuple) else m for m in e.match],
            "action": e.action, "args": list(e.args), "priority": e.priority}


def entry_from_json(d: dict) -> Entry:
    return Entry(d["table"], tuple(tuple(m) if isinstance(m, list) else m for m in d["match"]),
                 d["action"], tuple(d.get("args", ())), int(d.get("priority", 0)))


def slot_name(host: str, hook: str, direction: str) -> str:
    return f"{host}:{hook}:{direction}"


def split_slot(name: str) -> tuple[str, str, str]:
    host, hook, direction = (name.split(":") + ["xdp", "ingress"])[:3]
    return host, hook or "xdp", direction or "ingress"


@dataclass(frozen=True)
class DeviceIntent:
    """What one device should run. program None and no functions: a host hook with
    nothing attached. A host hook runs either one model program (`program`) or an
    ordered list of functions (`functions`: ELF objects and/or model programs, first
    sees the packet first; see targets/ebpf_hook.py), never both."""
    name: str
    kind: str                                # ebpf | bmv2 | host
    program: Program | None
    entries: frozenset = frozenset()         # of Entry
    prog_id: int = 0                         # eBPF: kernel id of the pipeline carrying it
    functions: tuple[HookFunction, ...] = () # host hook: the functions, in order
    # a bmv2 switch running a P4 program of the user's own (program None): the program by
    # its sha256 and files; entries are then in P4Runtime terms (the P4Info's names)
    p4: UserP4 | None = None

    @property
    def runs(self) -> str:
        """What runs, for listings: the program's name or the functions' in order."""
        if self.p4 is not None:
            return f"{self.p4.name} (P4, sha256 {self.p4.sha256[:12]})"
        if self.functions:
            return " -> ".join(f.name for f in self.functions)
        return self.program.name if self.program else "(nothing)"

    def table_entries(self, table: str) -> set:
        return {e for e in self.entries if e.table == table}

    def with_program(self, program: Program | None) -> "DeviceIntent":
        """The intent after a program change: entries of tables or actions that are gone
        go with them."""
        if program is None:
            return replace(self, program=None, entries=frozenset())
        keep = frozenset(e for e in self.entries if program.table(e.table) is not None
                         and e.action in program.table(e.table).actions)
        return replace(self, program=program, entries=keep)

    def to_json(self, memo: dict | None = None) -> dict:
        """memo: program -> its dict, shared by the devices of one write (20 switches
        running one program serialise it once)."""
        memo = {} if memo is None else memo
        if self.program is not None and self.program not in memo:
            memo[self.program] = program_to_dict(self.program)
        return {"name": self.name, "kind": self.kind, "prog_id": self.prog_id,
                "program": memo[self.program] if self.program else None,
                "functions": [f.to_json() for f in self.functions],
                "p4": self.p4.to_json() if self.p4 else None,
                "entries": sorted((entry_to_json(e) for e in self.entries),
                                  key=repr)}

    @classmethod
    def from_json(cls, d: dict) -> "DeviceIntent":
        prog = program_from_dict(d["program"], f"store:{d['name']}") if d.get("program") else None
        return cls(d["name"], d["kind"], prog, frozenset(entry_from_json(e) for e in d["entries"]),
                   int(d.get("prog_id", 0)),
                   tuple(HookFunction.from_json(f) for f in d.get("functions", ())),
                   UserP4.from_json(d["p4"]) if d.get("p4") else None)


@dataclass(frozen=True)
class AppRecord:
    """A deployed app: where it runs and what it put there."""
    uri: str
    spec: dict                               # the deploy request, as given
    devices: tuple[str, ...] = ()            # where it runs (switches or host hooks)
    tables: tuple[str, ...] = ()             # on switches: what it added
    actions: tuple[str, ...] = ()
    maps: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()            # the placer's explanation
    state_bytes: int = 0
    work: int = 0
    deployed: float = 0.0

    def to_json(self) -> dict:
        return {"uri": self.uri, "spec": self.spec, "devices": list(self.devices),
                "tables": list(self.tables), "actions": list(self.actions),
                "maps": list(self.maps), "reasons": list(self.reasons),
                "state_bytes": self.state_bytes, "work": self.work, "deployed": self.deployed}

    @classmethod
    def from_json(cls, d: dict) -> "AppRecord":
        return cls(d["uri"], d["spec"], tuple(d["devices"]), tuple(d["tables"]),
                   tuple(d["actions"]), tuple(d["maps"]), tuple(d["reasons"]),
                   int(d["state_bytes"]), int(d["work"]), float(d["deployed"]))


@dataclass
class Intent:
    """The whole network's intent: devices by name, apps by URI."""
    devices: dict[str, DeviceIntent] = field(default_factory=dict)
    apps: dict[str, AppRecord] = field(default_factory=dict)
