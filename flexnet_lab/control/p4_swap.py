"""Replacing a switch's own P4 program by another, live (`swap s1 new.p4 [runtime.json]`).

The plan is made before anything is touched: the new program is compiled, the new
runtime file checked against it, and the switch's entries sorted into those the new
program keeps as they are (their table has the same name and keys, their action the same
parameters: carried) and those it cannot hold (dropped); tables not carried take the new
runtime file's entries. An entry of the runtime file for a carried table is added unless
the table already holds that match (then the carried one stays; the record says so).
Defaults and multicast groups come from the new runtime file where it names them, else
from the running program for the tables carried. The switch then does bmv2's hitless
swap (targets/bmv2_p4.py)."""
from __future__ import annotations

import os
import time
from dataclasses import replace

from ..compiler.p4_user import (P4Info, Resolved, carried, compile_p4, parse_p4info,
                                resolve_runtime, save)
from ..errors import LabError
from ..plan.execute import ChangeRecord
from ..program.runtime_json import load_runtime
from .intent import DeviceIntent


def plan_swap(cur: DeviceIntent, program: str, runtime: str | None, folder: str
              ) -> tuple[DeviceIntent, list[str]]:
    """The switch's intent after the swap, and what the record says (carried, dropped,
    from the runtime file)."""
    if not program.endswith(".p4") or not os.path.isfile(program):
        raise LabError(f"swap {cur.name}: {os.path.basename(program)[:60]!r} is not a .p4 "
                       "file")
    build = compile_p4(program)
    new = P4Info(parse_p4info(build.p4info, program))
    rt = (resolve_runtime(load_runtime(runtime, os.path.dirname(os.path.abspath(program))), new)
          if runtime else Resolved("", frozenset(), (), ()))
    with open(cur.p4.p4info_path) as fh:
        old = P4Info(parse_p4info(fh.read(), cur.p4.p4info_path))
    kept, dropped, tables = carried(old, new, cur.entries)
    keep_tables = {t for t in tables if new.table(t) is not None}
    held = {(e.table, e.match, e.priority) for e in kept}
    added, ignored = {}, {}
    entries = set(kept)
    for e in sorted(rt.entries, key=repr):
        if (e.table, e.match, e.priority) in held:
            if e not in entries:
                ignored[e.table] = ignored.get(e.table, 0) + 1
            continue
        entries.add(e)
        added[e.table] = added.get(e.table, 0) + 1
    named = {t for t, _, _ in rt.defaults}
    defaults = rt.defaults + tuple(d for d in cur.p4.defaults
                                   if d[0] in keep_tables and d[0] not in named)
    groups = rt.multicast if runtime and rt.multicast else cur.p4.multicast
    ref = save(build, folder, Resolved(runtime or cur.p4.runtime, frozenset(), defaults, groups))
    notes = [f"compiled {os.path.basename(program)} in {build.compile_ms:.0f} ms"]
    short = lambda t: t.split(".")[-1]    # noqa: E731 - table names as the prompt shows them
    for t in sorted(keep_tables):
        n = sum(1 for e in kept if e.table == t)
        notes.append(f"carried: {n} entries of {short(t)} (same name, keys and actions)")
    for t, n in sorted(dropped.items()):
        why = "it is gone" if new.table(t) is None else "its keys or action changed"
        notes.append(f"dropped: {n} entries of {short(t)} ({why})")
    for t, n in sorted(added.items()):
        notes.append(f"from {os.path.basename(runtime)}: {n} entries of {short(t)}")
    for t, n in sorted(ignored.items()):
        notes.append(f"ignored: {n} entries of {short(t)} in {os.path.basename(runtime)} "
                     "(the carried entry for the same match stays)")
    return replace(cur, p4=ref, entries=frozenset(entries)), notes


def swap_device(h, op: str, name: str, before: DeviceIntent, after: DeviceIntent,
                undo: list) -> ChangeRecord:
    """The hitless swap on the device; its undo puts the old program and entries back."""
    rec = ChangeRecord(name, op, "p4 program swap", at=time.time())
    rec.swap_ms, rec.load_ms = h.swap_p4(after.p4, after.entries)
    rec.done = time.time()
    rec.total_ms = (rec.done - rec.at) * 1e3
    undo.append((f"{name}: {before.p4.name} back",
                 lambda: h.swap_p4(before.p4, before.entries)))
    return rec
