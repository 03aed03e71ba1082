"""The controller: decides and pilots what runs on the network the lab realised.

It owns the intent (intent.py) and keeps it in an IntentStore. Every operation — a delta,
a table entry, a host function attached or swapped, an app deployed, removed, migrated or
scaled — is computed first as new device intents (nothing touched; bad input refused here),
written to the store as a pending change, applied to the devices as one transaction
(programs prepared everywhere before any commits; whatever fails, what was applied is
undone), then committed in the store. A change still pending when a controller starts was
cut short by a crash: it is rolled back (its before-state is the intent) and reconciliation
brings the devices there.

Reconciliation compares every device with the intent and repairs what differs: a root
program detached, a tail-call slot holding another program, a pin gone, a pipeline other
than the intended one, table entries missing or extra, a bmv2 process dead."""
from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import replace
from fnmatch import fnmatchcase

from ..errors import (AppError, DeltaError, EntryError, FlexNetError, LabError, ProgramError,
                      TargetError)
from ..plan.execute import ChangeRecord, Checks, reload_program
from ..plan.two_phase import (apply_changes, check_level, rest_trust, tag_switches,
                              weak_record)
from ..program.delta import Delta
from ..program.library import infrastructure
from ..program.model import Program
from ..program.validate import check_entry
from ..targets.ebpf_datapath import Entry
from .apps import AppPlanner
from ..lab.fabric import Fabric
from ..targets.ebpf_hook import HookFunction
from ..compiler.p4_user import UserP4
from . import p4_swap
from .intent import AppRecord, DeviceIntent, Intent, slot_name
from .store import IntentStore
from .target import Target
from .uri import excerpt, parse_uri


class Controller:
    """The network's controller. `handles` are the device targets by intent name (switches
    by name, host hooks as HOST:HOOK:DIRECTION); `attach` makes a new host-hook target
    (see devices.Devices)."""

    def __init__(self, fabric: Fabric, store: IntentStore, devices):
        self.fabric = fabric
        self.store = store
        self.devices = devices
        self.intent = Intent()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.apps = AppPlanner(self)

    # --- start ----------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Load the intent (or take the devices' state as the intent on a first start),
        roll back changes cut short, adopt the devices; returns what was done."""
        with self._lock:
            notes = []
            self.intent = self.store.load()
            if not self.intent.devices:
                self.devices.adopt(Intent({n: _initial(n, s)
                                           for n, s in self.fabric.switches.items()
                                           if s.kind in ("ebpf", "bmv2")}))
                first = [self._observed_intent(n, h) for n, h in self.devices.handles.items()]
                self.store.put_devices(first)
                self.intent = self.store.load()
                self.store.log("start", "*", f"first start: intent taken from "
                               f"{len(first)} devices")
                return ["first start"]
            for ch in self.store.pending():
                detail = (f"change #{ch.id} ({ch.op}) was cut short; rolled back to its "
                          "before-state")
                self.store.abort(ch.id, "controller restarted mid-change: rolled back")
                self.store.log("recover", ",".join(sorted(ch.after["devices"])) or "*", detail)
                notes.append(detail)
            self.devices.adopt(self.intent)
            for name in self.devices.orphans:
                self.devices.detach(name)
                detail = "detached a host program no intent holds (a change cut short)"
                self.store.log("recover", name, detail)
                notes.append(f"{name}: {detail}")
            self.devices.orphans.clear()
            self.store.log("start", "*", f"restarted: adopted {len(self.devices.handles)} "
                           f"devices, {len(self.intent.apps)} apps")
            return notes

    def _observed_intent(self, name: str, h: Target) -> DeviceIntent:
        p4 = getattr(h, "p4", None)          # a switch running the user's own P4 program
        if p4 is not None:
            return DeviceIntent(name, h.kind, None, frozenset(
                e for t in p4.tables for e in h.entries(t)), p4=p4)
        prog = h.program
        entries = frozenset(e for t in (prog.tables if prog else ()) for e in h.entries(t.name))
        return DeviceIntent(name, h.kind, prog, entries, _prog_id(h))

    # --- reconciliation -------------------------------------------------------------------
    def start_reconciler(self, interval_s: float = 0.5) -> None:
        def loop():
            while not self._stop.wait(interval_s):
                try:
                    self.reconcile()
                except Exception as exc:  # a pass that fails is logged; the next one retries
                    self.store.log("error", "*", f"reconcile pass failed: {exc}"[:300])
        self._thread = threading.Thread(target=loop, name="reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "Controller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop reconciling and close this process's host-hook handles (the lab's own
        switch handles are the lab's to close). The devices keep running."""
        self.stop()
        with self._lock:
            for name in [n for n, h in self.devices.handles.items() if h.kind == "host"]:
                self.devices.handles.pop(name).release()

    def reconcile(self) -> list[str]:
        """One pass: compare every device with the intent, repair, log each repair."""
        done: list[str] = []
        with self._lock:
            self.passes += 1
            for name, want in list(self.intent.devices.items()):
                try:
                    done += self._reconcile_device(name, want)
                except FlexNetError:
                    # a device that died while this pass read it (a bmv2 process killed
                    # between the liveness check and the read) is found dead now: repair
                    # it in this pass rather than report a failure
                    try:
                        done += self._reconcile_device(name, self.intent.devices[name])
                    except FlexNetError as exc:
                        self.store.log("error", name, f"repair failed: {exc}"[:300])
            done += self._reconcile_trust()
            self.devices.snapshot(self.store, self.intent, self.passes)
        return done

    def _reconcile_trust(self) -> list[str]:
        """No change runs (the lock is held): a switch trusts the version tag only from
        other tag-knowing switches. A change cut short may have left a host's port
        trusted, and a host's forged tag would then select a version in the next change."""
        done: list[str] = []
        switches = tag_switches(self.devices.handles)
        for name, keep in rest_trust(switches, self.fabric).items():
            try:
                dropped = switches[name].trust_only(keep)
            except FlexNetError as exc:
                self.store.log("error", name, f"repair failed: {exc}"[:300])
                continue
            for ifname in dropped:
                msg = f"{ifname} trusted the version tag with no change running: no longer"
                self.store.log("repair", name, msg)
                done.append(f"{name}: {msg}")
        return done

    def _reconcile_device(self, name: str, want: DeviceIntent) -> list[str]:
        h = self.devices.handles.get(name)
        repairs: list[str] = []
        if want.functions:
            return self._reconcile_functions(name, want)
        if want.p4 is not None:
            return self._reconcile_p4(name, want, h)
        if want.program is None:
            return repairs
        if h is None:  # a host hook whose program is gone entirely
            self.devices.attach(name, want.program)
            h = self.devices.handles[name]
            repairs.append(f"attached {want.program.name} again (it was gone)")
            self._set_prog_id(name)
        problems = h.health()
        if problems:
            repairs += h.heal(problems)
            if "dead" in problems:
                repairs += self.devices.restore_registers(name, self.store)
        if want.prog_id and _prog_id(h) != want.prog_id:
            reload_program(h, want.program)
            self._set_prog_id(name)
            repairs.append(f"slot 0 ran another pipeline: {want.program.name} loaded again")
        elif h.program != want.program:
            reload_program(h, want.program)
            self._set_prog_id(name)
            repairs.append(f"program {want.program.name} loaded again")
        return self._reconcile_entries(name, want, h, repairs)

    def _reconcile_functions(self, name: str, want: DeviceIntent) -> list[str]:
        """A host hook running a list of functions: root attached, each slot holding the
        intended function, pins, then the tables of its model functions."""
        h = self.devices.handles.get(name)
        repairs: list[str] = []
        if h is None:
            self.devices.attach_functions(name, want.functions)
            h = self.devices.handles[name]
            repairs.append(f"attached {want.runs} again (it was gone)")
        problems = h.health()
        if problems:
            repairs += h.heal(problems)
        if h.functions != want.functions:
            prep = h.prepare(want.functions)
            h.commit(prep)
            repairs.append(f"functions {want.runs} loaded again")
        return self._reconcile_entries(name, want, h, repairs)

    def _reconcile_p4(self, name: str, want: DeviceIntent, h: Target) -> list[str]:
        """A switch running the user's own P4 program: process alive, that program, its
        entries."""
        repairs: list[str] = []
        problems = h.health()
        if problems:
            repairs += h.heal(problems)
        if h.p4 != want.p4:
            h.load_p4(want.p4)
            repairs.append(f"program {want.p4.name} loaded again")
        return self._reconcile_entries(name, want, h, repairs)

    def _reconcile_entries(self, name: str, want: DeviceIntent, h: Target,
                           repairs: list[str]) -> list[str]:
        tables = list(want.p4.tables) if want.p4 is not None else \
            [t.name for p in _programs_of(want) for t in p.tables]
        for table in tables:
            have = set(h.entries(table))
            wanted = want.table_entries(table)
            for e in sorted(have - wanted, key=repr):
                h.delete(table, e.match, e.priority)
                repairs.append(f"deleted an entry nobody asked for: {table} {_fmt(e)}")
            for e in sorted(wanted - have, key=repr):
                stale = [x for x in have if x.match == e.match and x.priority == e.priority]
                h.insert(table, e.match, e.action, e.args, e.priority, modify=bool(stale))
                repairs.append(f"{'restored' if stale else 're-inserted'} entry {table} {_fmt(e)}")
        for r in repairs:
            self.store.log("repair", name, r)
        return [f"{name}: {r}" for r in repairs]

    def _set_prog_id(self, name: str) -> None:
        want = self.intent.devices[name]
        pid = _prog_id(self.devices.handles[name])
        if pid != want.prog_id:
            self.intent.devices[name] = replace(want, prog_id=pid)
            self.store.put_devices([self.intent.devices[name]])

    # --- the one way a change happens -----------------------------------------------------
    def change(self, op: str, after: dict[str, DeviceIntent | None],
               apps: dict[str, AppRecord | None] | None = None,
               consistency: str = "per-device") -> list[ChangeRecord]:
        """Make `after` the intent of its devices (None: a host hook emptied) and apply it
        as one transaction: all devices or none. consistency: per-device, per-packet or per-flow
        (plan/two_phase.py); each record states the level achieved."""
        check_level(consistency)
        with self._lock:
            before = {n: self.intent.devices.get(n) for n in after}
            apps = apps or {}
            checks = Checks()
            for n, a in after.items():
                if a is not None and a.program is not None:
                    h = self.devices.handles.get(n)
                    if h is not None:
                        checks.change(h, a.program)  # validation + target capabilities
            cid = self.store.begin(op, Intent(before, {u: self.intent.apps.get(u) for u in apps}),
                                   Intent(after, apps))
            try:
                records = self._apply(op, before, after, consistency, checks)
            except FlexNetError as exc:
                self.store.abort(cid, str(exc)[:500])
                raise
            final = {n: (replace(a, prog_id=_prog_id(self.devices.handles[n]),
                                 functions=getattr(self.devices.handles[n], "functions", ()))
                         if a is not None and n in self.devices.handles else a)
                     for n, a in after.items()}
            self.store.commit(cid, Intent(final, apps), "; ".join(r.kind for r in records),
                              event=("change", ",".join(sorted(after)) or "*", f"#{cid} {op}"))
            for n, a in final.items():
                if a is None:
                    self.intent.devices.pop(n, None)
                else:
                    self.intent.devices[n] = a
            for u, rec in apps.items():
                if rec is None:
                    self.intent.apps.pop(u, None)
                else:
                    self.intent.apps[u] = rec
            return records

    def _apply(self, op: str, before: dict, after: dict, consistency: str = "per-device",
               checks: Checks | None = None) -> list[ChangeRecord]:
        undo: list = []
        records: list[ChangeRecord] = []
        try:
            swaps = [(n, a.program) for n, a in after.items() if a is not None
                     and before.get(n) is not None and a.program != before[n].program]
            records += self._swap_programs(op, swaps, undo, consistency, checks)
            if consistency in ("per-packet", "per-flow") and not swaps:
                records.append(weak_record(op, "no program changes, and table entries live "
                                           "in maps both versions share", consistency))
            for n, a in after.items():   # a switch's own P4 program replaced (p4_swap.py)
                if a is not None and a.p4 is not None and before.get(n) is not None and \
                        a.p4 != before[n].p4:
                    records.append(p4_swap.swap_device(self.devices.handles[n], op, n,
                                                       before[n], a, undo))
            for n, a in after.items():
                if a is not None and before.get(n) is not None and \
                        a.functions != before[n].functions:
                    records.append(self._swap_functions(op, n, before[n], a, undo))
            for n, a in after.items():
                if a is not None and before.get(n) is None:
                    if a.functions:
                        self.devices.attach_functions(n, a.functions)
                    else:
                        self.devices.attach(n, a.program)
                    undo.append((f"{n}: detached {a.runs}", lambda n=n: self.devices.detach(n)))
                    records.append(ChangeRecord(n, op, "attach", at=time.time()))
            for n, a in after.items():
                if a is not None:
                    t = time.perf_counter()
                    if self._entries(n, before.get(n), a, undo) and \
                            not any(r.device == n for r in records):
                        ms = (time.perf_counter() - t) * 1e3
                        records.append(ChangeRecord(n, op, "entries_only", at=time.time(),
                                                    done=time.time(), swap_ms=ms, total_ms=ms))
            for n, a in after.items():
                if a is None and before.get(n) is not None:
                    self.devices.detach(n)
                    records.append(ChangeRecord(n, op, "detach", at=time.time()))
        except FlexNetError as exc:
            undone = []
            for what, fn in reversed(undo):
                try:
                    fn()
                    undone.append(what)
                except Exception as exc2:  # keep undoing the rest; say what could not be
                    undone.append(f"{what} FAILED: {exc2}")
            msg = str(exc) + (f" — undone: {'; '.join(undone)}" if undone else
                              " — nothing had been applied")
            if exc.released:
                msg += f"; prepared and released: {', '.join(exc.released)}"
            # the same exception (type, device, verifier log...), its message longer
            exc.args = (msg,)
            if hasattr(exc, "message"):
                exc.message = msg.split(": ", 1)[1] if isinstance(exc, TargetError) and \
                    msg.startswith(f"{exc.device}: ") else msg
            raise
        return records

    def _swap_programs(self, op: str, swaps: list, undo: list,
                       consistency: str = "per-device",
                       checks: Checks | None = None) -> list[ChangeRecord]:
        """Programs of several devices as one change at the consistency level asked
        (plan.two_phase.apply_changes); what was done is in `undo` if a later step fails."""
        if not swaps:
            return []
        return apply_changes([(n, self.devices.handles[n], prog, op) for n, prog in swaps],
                             consistency, self.devices.handles, self.fabric, undo,
                             checks=checks)

    def _swap_functions(self, op: str, name: str, before: DeviceIntent, after: DeviceIntent,
                        undo: list) -> ChangeRecord:
        """A hook's list of functions changed (one replaced, inserted or removed): load
        beside what runs, then one slot write (targets/ebpf_hook.py)."""
        h = self.devices.handles[name]
        prep = h.prepare(after.functions)
        rec = ChangeRecord(name, op, f"functions {prep.op}", at=time.time())
        try:
            rec.swap_ms = h.commit(prep)
        except BaseException:
            h.abort(prep)
            raise
        rec.done = time.time()
        rec.compile_ms, rec.load_ms = prep.compile_ms, prep.load_ms
        rec.notes += h.last_notes

        def back(h=h, fns=before.functions):
            p = h.prepare(fns)
            h.commit(p)
        undo.append((f"{name}: {before.runs} back", back))
        return rec

    def _entries(self, name: str, before: DeviceIntent | None, after: DeviceIntent,
                 undo: list) -> int:
        """Delete and insert what differs; returns how many entries changed."""
        h = self.devices.handles[name]
        old = before.entries if before is not None else frozenset()
        progs = _programs_of(after)
        if after.p4 is not None:
            # a swap of the switch's own P4 program put the after-entries in with it
            old = after.entries if before is None or before.p4 != after.p4 else old
        else:
            # entries whose table or action is gone went with the program change
            actions = _table_actions(progs)
            old = frozenset(e for e in old if e.action in actions.get(e.table, ()))
        for e in sorted(old - after.entries, key=repr):
            h.delete(e.table, e.match, e.priority)
            undo.append((f"{name}: entry {e.table} {_fmt(e)} back",
                         lambda e=e: h.insert(e.table, e.match, e.action, e.args, e.priority)))
        for e in sorted(after.entries - old, key=repr):
            h.insert(e.table, e.match, e.action, e.args, e.priority)
            undo.append((f"{name}: entry {e.table} {_fmt(e)} removed",
                         lambda e=e: h.delete(e.table, e.match, e.priority)))
        return len(old - after.entries) + len(after.entries - old)

    # --- operations on switches and hosts -------------------------------------------------
    def switches(self, pattern: str) -> list[str]:
        names = [n for n, d in self.intent.devices.items() if d.kind in ("ebpf", "bmv2")]
        found = [n for n in names if fnmatchcase(n, pattern)]
        if not found:
            raise LabError(f"no switch matches {excerpt(pattern)} (have {', '.join(sorted(names))})")
        return found

    def device_intent(self, name: str) -> DeviceIntent:
        if name in self.intent.devices:
            return self.intent.devices[name]
        if ":" not in name and name in self.fabric.hosts:
            name = slot_name(name, "xdp", "ingress")
            if name in self.intent.devices:
                return self.intent.devices[name]
        raise LabError(f"no device {excerpt(name)}: a switch, or HOST[:xdp|tc[:ingress|egress]] "
                       "with a program attached")

    def handle(self, name: str) -> Target:
        return self.devices.handles[self.device_intent(name).name]

    def apply_delta(self, pattern: str, delta: Delta, description: str = "",
                    consistency: str = "per-device",
                    ) -> tuple[list[ChangeRecord], dict[str, Delta]]:
        """Apply `delta` to every device `pattern` names (a switch, a pattern of switches,
        or a host hook) as one change. Returns the records and each device's inverse."""
        after, inverses = self.plan_delta(pattern, delta)
        return self.change(description or delta.name or "delta", after,
                           consistency=consistency), inverses

    # plan_*: the device intents an operation would give, nothing applied; `change` makes
    # them real. Several plans merged (disjoint devices) are one transaction.
    def plan_delta(self, pattern: str, delta: Delta
                   ) -> tuple[dict[str, DeviceIntent], dict[str, Delta]]:
        """The intents `delta` gives every device `pattern` names, and each one's inverse."""
        names = (self.switches(pattern) if any(c in pattern for c in "*?[")
                 else [self.device_intent(pattern).name])
        after, inverses, done = {}, {}, {}
        for n in names:
            cur = self.intent.devices[n]
            if cur.program not in done:   # switches running the same program: apply once
                try:
                    done[cur.program] = delta.apply(cur.program)
                except DeltaError:
                    raise
                except FlexNetError as exc:
                    raise DeltaError(delta.name or "delta", str(exc)) from exc
            new, inverses[n] = done[cur.program]
            after[n] = cur.with_program(new)
        return after, inverses

    def swap_p4(self, switch: str, program: str, runtime: str | None = None
                ) -> list[ChangeRecord]:
        """Replace a switch's own P4 program by another under traffic (control/p4_swap.py):
        the record's notes say which entries were carried and which dropped."""
        import os
        cur = self.device_intent(switch)
        if cur.p4 is None:
            raise LabError(f"{cur.name} runs the lab's program {cur.runs}: `swap SWITCH "
                           "new.p4` replaces a P4 program of the user's own (deltas change "
                           "the lab's)")
        after, notes = p4_swap.plan_swap(cur, program, runtime,
                                         os.path.join(self.fabric.run_dir, "p4"))
        records = self.change(f"{cur.name}: {cur.p4.name} -> {after.p4.name}",
                              {cur.name: after})
        for r in records:
            r.notes[:0] = notes
        self.store.log("change", cur.name, "; ".join(notes)[:500])
        return records

    def apply_inverses(self, inverses: dict[str, Delta], description: str = "undo",
                       consistency: str = "per-device"):
        return self.change(description, self.plan_inverses(inverses), consistency=consistency)

    def plan_inverses(self, inverses: dict[str, Delta]) -> dict[str, DeviceIntent]:
        """The intents each device's inverse delta gives it."""
        after, done = {}, {}
        for n, inv in inverses.items():
            cur = self.intent.devices[n]
            if (cur.program, inv) not in done:   # the same program, the same inverse: once
                done[(cur.program, inv)] = inv.apply(cur.program)[0]
            after[n] = cur.with_program(done[(cur.program, inv)])
        return after

    def insert_entry(self, pattern: str, table: str, match: tuple, action: str,
                     args: tuple = (), priority: int = 0,
                     consistency: str = "per-device") -> list[ChangeRecord]:
        """Insert one entry on every switch `pattern` names: on all of them or none."""
        return self.change(f"entry {table} {action}",
                           self.plan_entry(pattern, table, match, action, args, priority),
                           consistency=consistency)

    def plan_entry(self, pattern: str, table: str, match: tuple, action: str,
                   args: tuple = (), priority: int = 0) -> dict[str, DeviceIntent]:
        """The intents of every device `pattern` names with one more entry."""
        names = self.switches(pattern) if any(c in pattern for c in "*?[") else \
            [self.device_intent(pattern).name]
        after = {}
        for n in names:
            cur = self.intent.devices[n]
            prog = _entry_program(_programs_of(cur), table) or cur.program
            if prog is None:
                raise TargetError(n, f"no function on this hook has a table {excerpt(table)}")
            e = _checked_entry(n, prog, table, match, action, args, priority)
            if any(x.table == table and x.match == e.match and x.priority == e.priority
                   for x in cur.entries):
                raise TargetError(n, f"table {table}: an entry for {_fmt(e)} exists")
            after[n] = replace(cur, entries=cur.entries | {e})
        return after

    def delete_entry(self, pattern: str, table: str, match: tuple, priority: int = 0):
        names = self.switches(pattern) if any(c in pattern for c in "*?[") else \
            [self.device_intent(pattern).name]
        after = {}
        for n in names:
            cur = self.intent.devices[n]
            m = _match(match)
            gone = {x for x in cur.entries if x.table == table and x.match == m
                    and x.priority == priority}
            if not gone:
                raise TargetError(n, f"table {table}: no entry {excerpt(str(match))}")
            after[n] = replace(cur, entries=cur.entries - gone)
        return self.change(f"delete entry {table}", after)

    def attach(self, host: str, program: Program, hook: str = "xdp",
               direction: str = "ingress") -> list[ChangeRecord]:
        name = self._slot(host, hook, direction)
        cur = self.intent.devices.get(name)
        if cur is not None and cur.functions:   # a list of functions: this one goes last
            return self.attach_functions(host, [HookFunction(program.name, program)], hook,
                                         direction)
        if cur is not None:
            raise LabError(f"{host} already runs {cur.runs} on "
                           f"{hook}/{direction}: swap it instead (or detach it and attach "
                           "a list of functions A,B)")
        self.devices.check_host_program(name, program)
        return self.change(f"attach {program.name} to {name}",
                           {name: DeviceIntent(name, "host", program)})

    def swap(self, host: str, program: Program, hook: str = "xdp",
             direction: str = "ingress", consistency: str = "per-device") -> list[ChangeRecord]:
        name = self._slot(host, hook, direction)
        cur = self.intent.devices.get(name)
        if cur is not None and cur.functions:
            return self.swap_function(host, HookFunction(program.name, program), hook,
                                      direction)
        return self.change(f"{name}: {cur.program.name if cur else '-'} -> {program.name}",
                           self.plan_swap(host, program, hook, direction),
                           consistency=consistency)

    def plan_swap(self, host: str, program: Program, hook: str = "xdp",
                  direction: str = "ingress") -> dict[str, DeviceIntent]:
        """The intent of a host hook running `program` instead (a hook running a list of
        functions: the function of the same name, or the only one, replaced)."""
        name = self._slot(host, hook, direction)
        cur = self.intent.devices.get(name)
        if cur is not None and cur.functions:
            return self._plan_function_swap(host, HookFunction(program.name, program), hook,
                                            direction)[1]
        if cur is None:
            raise LabError(f"{host} has no program on {hook}/{direction}: attach one first")
        return {name: cur.with_program(program)}

    def detach(self, host: str, hook: str = "xdp", direction: str = "ingress"):
        name = self._slot(host, hook, direction)
        if name not in self.intent.devices:
            raise LabError(f"{host} has no program on {hook}/{direction}")
        return self.change(f"detach {name}", {name: None})

    # --- host hooks running a list of functions (ELF objects, model programs) -------------
    def object_function(self, host: str, path: str, hook: str = "xdp",
                        direction: str = "ingress", section: str | None = None) -> HookFunction:
        """An ELF object checked for the hook (loaded once; ObjectError names file and
        field) and kept in the run folder; nothing is attached."""
        return self.devices.object_function(self._slot(host, hook, direction), path, section)

    def attach_functions(self, host: str, functions: list[HookFunction], hook: str = "xdp",
                         direction: str = "ingress", at: int | None = None
                         ) -> list[ChangeRecord]:
        """Put functions on a host hook: on an empty hook the list in its order; on a hook
        running functions, one more at position `at` (default: last)."""
        name = self._slot(host, hook, direction)
        cur = self.intent.devices.get(name)
        if cur is not None and not cur.functions:
            raise LabError(f"{host} runs {cur.runs} on {hook}/{direction} as a single "
                           "program: detach it first, then attach functions in order")
        have = list(cur.functions) if cur else []
        if cur is not None and len(functions) != 1:
            raise LabError(f"{host} {hook}/{direction} runs {cur.runs}: add one function "
                           "at a time")
        for f in functions:
            if f.program is not None:
                self.devices.check_host_program(name, f.program)
        pos = len(have) if at is None else at
        if not 0 <= pos <= len(have):
            raise LabError(f"position {at} out of range 0..{len(have)}")
        new = have[:pos] + list(functions) + have[pos:]
        names = [f.name for f in new]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise LabError(f"{host} {hook}/{direction} would run {dup[0]} twice "
                           "(swap it, or attach a copy under another file name)")
        after = DeviceIntent(name, "host", None, cur.entries if cur else frozenset(),
                             functions=tuple(new))
        return self.change(f"attach {', '.join(f.name for f in functions)} to {name}",
                           {name: after})

    def swap_function(self, host: str, fn: HookFunction, hook: str = "xdp",
                      direction: str = "ingress", replaces: str | None = None
                      ) -> list[ChangeRecord]:
        """Replace one function of a hook's list (named by `replaces`; by default the one
        of the same name, or the only one)."""
        label, after = self._plan_function_swap(host, fn, hook, direction, replaces)
        return self.change(label, after)

    def _plan_function_swap(self, host: str, fn: HookFunction, hook: str, direction: str,
                            replaces: str | None = None) -> tuple[str, dict]:
        name = self._slot(host, hook, direction)
        cur = self.intent.devices.get(name)
        if cur is None or not cur.functions:
            raise LabError(f"{host} runs no functions on {hook}/{direction}: attach first")
        names = [f.name for f in cur.functions]
        target = replaces or (fn.name if fn.name in names else
                              names[0] if len(names) == 1 else None)
        if target not in names:
            raise LabError(f"{host} {hook}/{direction} runs {cur.runs}: say which function "
                           f"{fn.name} replaces (--fn NAME)")
        i = names.index(target)
        if fn.name != target and fn.name in names:
            raise LabError(f"{host} {hook}/{direction} already runs {fn.name}")
        if fn.program is not None:
            self.devices.check_host_program(name, fn.program)
        new = cur.functions[:i] + (fn,) + cur.functions[i + 1:]
        progs = _programs_of(replace(cur, functions=new))
        keep = frozenset(e for e in cur.entries if _entry_program(progs, e.table) is not None)
        return f"{name}: {target} -> {fn.name}", {name: replace(cur, functions=new,
                                                               entries=keep)}

    def detach_function(self, host: str, fn_name: str, hook: str = "xdp",
                        direction: str = "ingress") -> list[ChangeRecord]:
        """Take one function off a hook's list (the last one: the hook is emptied)."""
        name = self._slot(host, hook, direction)
        cur = self.intent.devices.get(name)
        names = [f.name for f in cur.functions] if cur else []
        if fn_name not in names:
            raise LabError(f"{host} {hook}/{direction} runs no function {excerpt(fn_name)}")
        if len(names) == 1:
            return self.change(f"detach {name}", {name: None})
        new = tuple(f for f in cur.functions if f.name != fn_name)
        progs = _programs_of(replace(cur, functions=new))
        keep = frozenset(e for e in cur.entries if _entry_program(progs, e.table) is not None)
        return self.change(f"{name}: remove {fn_name}",
                           {name: replace(cur, functions=new, entries=keep)})

    def _slot(self, host: str, hook: str, direction: str) -> str:
        if host not in self.fabric.hosts:
            raise LabError(f"no host {excerpt(host)}")
        if hook not in ("xdp", "tc") or direction not in ("ingress", "egress") or \
                (hook == "xdp" and direction != "ingress"):
            raise LabError(f"hook {excerpt(hook)}/{excerpt(direction)}: use xdp, tc ingress "
                           "or tc egress")
        return slot_name(host, hook, direction)

    # --- reading the devices --------------------------------------------------------------
    def describe(self, name: str) -> dict:
        """A device's program, parser, tables with entry counts read from the device."""
        di = self.device_intent(name)
        h = self.devices.handles[di.name]
        if di.p4 is not None:
            return h.describe()
        if di.functions:
            return {"device": di.name, "kind": di.kind, "program": di.runs, "parser": [],
                    "functions": [f.describe() for f in h.functions],
                    "tables": [{"name": t.name, "keys": [f"{k.field}:{k.kind}" for k in t.keys],
                                "actions": list(t.actions), "default": t.default_action,
                                "size": t.size, "entries": len(h.entries(t.name))}
                               for p in _programs_of(di) for t in p.tables],
                    "maps": h.map_names()}
        prog = h.program
        return {"device": di.name, "kind": di.kind, "program": prog.name,
                "parser": [s.name for s in prog.parser],
                "tables": [{"name": t.name, "keys": [f"{k.field}:{k.kind}" for k in t.keys],
                            "actions": list(t.actions), "default": t.default_action,
                            "size": t.size, "entries": len(h.entries(t.name))}
                           for t in prog.tables],
                "maps": [m.name for m in prog.maps]}

    def entries(self, name: str, table: str) -> list[Entry]:
        h = self.handle(name)
        if self.device_intent(name).p4 is None and \
                _entry_program(_programs_of(self.device_intent(name)), table) is None:
            raise TargetError(name, f"no table {excerpt(table)}")
        return h.entries(table)

    def read_map(self, name: str, map_name: str):
        return self.handle(name).read_map(map_name)

    def counters(self, name: str) -> dict:
        h = self.handle(name)
        if h.kind not in ("ebpf", "bmv2"):
            raise TargetError(name, "counters are per switch port")
        return h.port_counters()

    def host_programs(self) -> dict[str, str]:
        return {n: d.runs for n, d in self.intent.devices.items()
                if d.kind == "host" and (d.program is not None or d.functions)}

    def status(self) -> dict:
        return {"run": self.fabric.run, "devices": len(self.intent.devices),
                "apps": sorted(self.intent.apps), "passes": self.passes,
                "host_programs": self.host_programs(),
                "last_events": [e.to_json() for e in self.store.events(limit=10)]}

    def events(self, since: int = 0, limit: int = 200) -> list[dict]:
        return [e.to_json() for e in self.store.events(since, limit)]

    # --- apps -----------------------------------------------------------------------------
    def deploy(self, uri: str, spec: dict) -> dict:
        return self.apps.deploy(parse_uri(uri), spec)

    def remove(self, uri: str) -> dict:
        return self.apps.remove(parse_uri(uri))

    def show(self, uri: str) -> dict:
        return self.apps.show(parse_uri(uri))

    def list_apps(self) -> list[dict]:
        return [{"uri": u, "devices": list(a.devices), "kind": a.spec.get("kind", "function")}
                for u, a in sorted(self.intent.apps.items())]

    def migrate(self, uri: str, to: str) -> dict:
        return self.apps.migrate(parse_uri(uri), to)

    def scale(self, uri: str, to: int) -> dict:
        return self.apps.scale(parse_uri(uri), to)

    def app(self, uri) -> AppRecord:
        rec = self.intent.apps.get(str(uri))
        if rec is None:
            raise AppError(str(uri), "no such app (flexnet app list shows the deployed ones)")
        return rec


def _prog_id(h: Target) -> int:
    fn = getattr(type(h), "running_prog_id", None)  # eBPF only: bmv2 has no kernel id
    return fn(h) if fn else 0


def _initial(name: str, desc) -> DeviceIntent:
    """A switch's intent on a first start: the lab's program, or the user's own P4 program
    the lab booted it with (fabric.json says which)."""
    if desc.p4:
        return DeviceIntent(name, desc.kind, None, p4=UserP4.from_json(desc.p4))
    return DeviceIntent(name, desc.kind, infrastructure())


def _programs_of(di: DeviceIntent) -> list[Program]:
    """The model programs a device runs: its program, or its model functions in order."""
    if di.functions:
        return [f.program for f in di.functions if f.program is not None]
    return [di.program] if di.program is not None else []


def _table_actions(programs: list[Program]) -> dict[str, tuple[str, ...]]:
    """Each table of these programs -> its actions (the first program holding the table,
    as _entry_program finds it)."""
    out: dict[str, tuple[str, ...]] = {}
    for p in programs:
        for t in p.tables:
            out.setdefault(t.name, t.actions)
    return out


def _entry_program(programs: list[Program], table: str) -> Program | None:
    return next((p for p in programs if p.table(table) is not None), None)


def _match(match) -> tuple:
    return tuple(tuple(m) if isinstance(m, (list, tuple)) else m for m in match)


def _fmt(e: Entry) -> str:
    parts = []
    for m in e.match:
        if isinstance(m, tuple) and m[1] <= 32 and m[0] < 1 << 32 and m[0] > 255:
            parts.append(f"{ipaddress.IPv4Address(m[0])}/{m[1]}")
        else:
            parts.append(str(m))
    return f"[{', '.join(parts)}] -> {e.action}({', '.join(map(str, e.args))})"


def _checked_entry(device: str, prog: Program, table: str, match, action: str, args,
                   priority: int) -> Entry:
    """An entry checked against the program before anything is touched (the checks a
    device makes on insert)."""
    try:
        check_entry(prog, table, match, action, args, priority)
    except ProgramError as exc:
        raise EntryError(device, str(table)[:40], excerpt(str(match)), str(exc)) from None
    return Entry(table, _match(match), action, tuple(int(a) for a in args), int(priority))


def controller_for(lab, store_path: str | None = None, reconcile_s: float | None = None
                   ) -> Controller:
    """A controller in this process over a running lab's own device handles (scenarios,
    benchmarks, tests). The intent goes to the run folder's intent.db unless told."""
    import os

    from .devices import Devices
    from .store import SqliteStore
    fabric = lab.fabric()
    handles = {n: sw for n, sw in lab.switches.items() if sw.kind in ("ebpf", "bmv2")}
    store = SqliteStore(store_path or os.path.join(fabric.run_dir, "intent.db"))
    ctl = Controller(fabric, store, Devices(fabric, lab.compiler, lab.bpf, handles))
    ctl.start()
    if reconcile_s:
        ctl.start_reconciler(reconcile_s)
    return ctl
