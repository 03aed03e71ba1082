"""Carry out a change plan on devices: validate and prepare everything first, then commit.

Order of a change, so that bad input changes nothing:
  1. the new program is validated and checked against the device's capabilities;
  2. the planner classifies the change (entries only / pipeline / full swap);
  3. every device prepares (compiles, loads; the kernel verifier runs here), then every
     device that stages (bmv2: the new pipeline saved beside the running one, filled with
     entries and registers) stages — a failure aborts all prepared devices and no device
     has changed;
  4. every device commits (the atomic step), back to back;
  5. clean-up: default actions of kept tables are updated, entries of actions that no
     longer exist are deleted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..compiler.ebpf import CAPABILITIES
from ..errors import DeltaError, FlexNetError, ProgramError, TargetError
from ..program.delta import Delta
from ..program.model import Program, action_id
from ..program.validate import check_target, validate
from .diff import ChangePlan, plan_change


@dataclass
class ChangeRecord:
    """What one change did to one device, with its timing."""
    device: str
    description: str
    kind: str
    at: float = 0.0                  # wall clock when the atomic step ran
    done: float = 0.0                # wall clock when it had run
    compile_ms: float = 0.0
    load_ms: float = 0.0
    swap_ms: float = 0.0
    total_ms: float = 0.0
    plan: ChangePlan | None = None
    entries_deleted: int = 0
    notes: list[str] = field(default_factory=list)
    consistency: str = "per-device"  # the level this device's part of the change achieved
    phases: dict = field(default_factory=dict)   # two-phase: ms of each phase, drain figures
    version: int = 0                 # eBPF: the new version's number (what probes record)

    def to_json(self) -> dict:
        return {"device": self.device, "description": self.description, "kind": self.kind,
                "at": self.at, "compile_ms": round(self.compile_ms, 3),
                "load_ms": round(self.load_ms, 3), "swap_ms": round(self.swap_ms, 4),
                "total_ms": round(self.total_ms, 3), "entries_deleted": self.entries_deleted,
                "plan": self.plan.explain().splitlines() if self.plan else [],
                "notes": self.notes, "consistency": self.consistency, "phases": self.phases,
                "version": self.version}


def capabilities(device) -> set[str]:
    if getattr(device, "kind", "") == "bmv2":
        from ..compiler.p4 import P4_CAPABILITIES
        return set(P4_CAPABILITIES)
    return CAPABILITIES.get(getattr(device, "hook", "tc"), set())


class Checks:
    """Steps 1-2 of one change, remembered: a change that gives 20 switches the same
    program validates it once per capability set and plans it once per old program."""

    def __init__(self) -> None:
        self._valid: set = set()
        self._plans: dict = {}

    def change(self, device, new: Program) -> ChangePlan:
        caps = frozenset(capabilities(device))
        if (new, caps) not in self._valid:
            try:
                validate(new)
                check_target(new, set(caps))
            except ProgramError as exc:
                raise TargetError(device.device, f"cannot run program {new.name}: "
                                  f"{exc}") from exc
            self._valid.add((new, caps))
        key = (device.program, new)
        if key not in self._plans:
            self._plans[key] = plan_change(device.program, new)
        return self._plans[key]


def check_change(device, new: Program, checks: Checks | None = None) -> ChangePlan:
    """Steps 1-2, touching nothing."""
    return (checks or Checks()).change(device, new)


def _released(exc: BaseException, names: list[str]) -> None:
    """Say on the error which devices' prepared versions were let go (the controller's
    message lists them beside what was undone)."""
    if isinstance(exc, FlexNetError) and names:
        exc.released = tuple(exc.released) + tuple(n for n in names if n not in exc.released)


def apply_programs(changes: list[tuple[object, Program, str]],
                   undo: list | None = None, checks: Checks | None = None) -> list[ChangeRecord]:
    """Replace the programs of several devices as one change: all prepare (and stage),
    then all commit back to back. A refusal before the commits changes nothing. For each
    commit, (what, callable) that puts the old program back is appended to `undo`, so a
    caller whose change fails later can undo this part too. changes: (device, new program,
    description)."""
    t0 = time.perf_counter()
    checks = checks or Checks()
    plans = [checks.change(dev, prog) for dev, prog, _ in changes]
    # read before anything is staged: a staged bmv2 pipeline answers for the new program
    saves = [save_for_undo(dev, plan) for (dev, _, _), plan in zip(changes, plans)]
    prepared = []
    try:
        for (dev, prog, _), plan in zip(changes, plans):
            prepared.append(dev.prepare(prog) if plan.kind in ("pipeline", "full_swap")
                            else None)
        for (dev, _, _), prep in zip(changes, prepared):
            if prep is not None:
                dev.stage(prep)
    except BaseException as exc:
        for (dev, _, _), prep in zip(changes, prepared):
            if prep is not None:
                dev.abort(prep)
        _released(exc, [dev.device for (dev, _, _), prep in zip(changes, prepared)
                        if prep is not None])
        raise
    own_undo = [] if undo is None else undo
    records = []
    done = 0
    try:
        for (dev, prog, desc), plan, prep, saved in zip(changes, plans, prepared, saves):
            old = dev.program
            rec = ChangeRecord(dev.device, desc, plan.kind, plan=plan)
            rec.at = time.time()
            if prep is not None:
                rec.swap_ms = dev.commit(prep)
                rec.compile_ms, rec.load_ms = prep.compile_ms, prep.load_ms
                rec.version = getattr(prep, "version", 0)
                rec.notes += getattr(dev, "last_notes", [])
            else:
                dev.adopt(prog)  # entries-only: same pipeline, new defaults below
            done += 1
            rec.done = time.time()
            own_undo.append((f"{dev.device}: {old.name} back",
                             lambda dev=dev, old=old, saved=saved: restore(dev, old, saved)))
            _after_commit(dev, prog, plan, rec)
            records.append(rec)
    except BaseException as exc:
        # the devices not reached (and the one that failed, if its commit did not run)
        # release what they prepared
        let_go = []
        for (dev, _, _), prep in list(zip(changes, prepared))[done:]:
            if prep is not None:
                try:
                    dev.abort(prep)
                    let_go.append(dev.device)
                except Exception:  # best effort: the error being raised matters more
                    pass
        _released(exc, let_go)
        if undo is None:  # nobody else will: put the committed ones back now
            for _, fn in reversed(own_undo):
                fn()
        raise
    total = (time.perf_counter() - t0) * 1e3
    for rec in records:
        rec.total_ms = total
    return records


def save_for_undo(device, plan: ChangePlan) -> dict:
    """What a program change on `device` destroys and a reload of the old program would not
    bring back: entries of tables it removes or changes, entries of actions it removes,
    table defaults (kept tables share their default map with the new version) and the
    contents of maps it removes or changes. Read from the device before the commit."""
    prog = device.program
    gone = set(plan.tables_removed) | set(plan.tables_changed) | set(plan.actions_removed_from)
    return {"entries": {t: device.entries(t) for t in sorted(gone) if prog.table(t)},
            "defaults": {t.name: device.default(t.name) for t in prog.tables},
            "maps": {m: device.read_map(m) for m in (*plan.maps_removed, *plan.maps_changed)
                     if prog.map(m) is not None}}


def restore(device, program: Program, saved: dict) -> None:
    """Undo of a committed change: `program` reloaded, then what save_for_undo kept."""
    reload_program(device, program)
    for table, entries in saved["entries"].items():
        have = {(e.match, e.priority): e for e in device.entries(table)}
        for e in entries:
            cur = have.get((e.match, e.priority))
            if cur != e:
                device.insert(table, e.match, e.action, e.args, e.priority,
                              modify=cur is not None)
    for table, (action, args) in saved["defaults"].items():
        if device.default(table) != (action, tuple(args)):
            device.set_default(table, action, tuple(args))
    for name, values in saved["maps"].items():
        device.restore_map(name, values)


def reload_program(device, program: Program) -> None:
    """Put `program` back on `device` (the way a change is undone)."""
    prep = device.prepare(program)
    device.stage(prep)
    device.commit(prep)


def apply_program(device, new: Program, description: str = "") -> ChangeRecord:
    return apply_programs([(device, new, description or f"load {new.name}")])[0]


def apply_delta(device, delta: Delta, description: str = "") -> tuple[ChangeRecord, Delta]:
    """Apply a delta to a device's running program; returns the record and the inverse."""
    if device.program is None:
        raise TargetError(device.device, "runs no program yet")
    try:
        new, inverse = delta.apply(device.program)
    except FlexNetError as exc:
        if isinstance(exc, DeltaError):
            raise
        raise DeltaError(delta.name or "delta", str(exc)) from exc
    return apply_program(device, new, description or delta.name or "delta"), inverse


def _after_commit(dev, new: Program, plan: ChangePlan, rec: ChangeRecord) -> None:
    for t in new.tables:
        if t.name in plan.tables_kept:
            if dev.default(t.name) != (t.default_action, tuple(t.default_args)):
                dev.set_default(t.name, t.default_action, tuple(t.default_args))
    for table, actions in plan.actions_removed_from.items():
        if new.table(table) is None:
            continue
        gone = {action_id(a) for a in actions}
        for entry in dev.entries(table):
            if entry.action in actions or (entry.action.isdigit() and int(entry.action) in gone):
                try:
                    dev.delete(table, entry.match, entry.priority)
                    rec.entries_deleted += 1
                except TargetError as exc:
                    rec.notes.append(str(exc))
