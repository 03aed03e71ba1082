"""Two versions of a switch program in one v1model pipeline, chosen per packet by the lab's
version tag (per-packet consistent changes on bmv2, plan/two_phase.py).

bmv2 holds one pipeline at a time, so a two-phase change loads a pipeline generated from
both programs (old, new): the slot a packet runs (from its trusted tag or the stamp, see
compiler/p4.py tag_ingress) is compared with the slot of the new version
(flexnet_control_words[2]), and the control statements of that version run.

What is shared and what is not:
  - a map, action or table identical in both versions (and, for an action, using only
    shared maps; for a table, only shared actions) is emitted once under its own name, so
    its entries and register values are the same object for both versions and carry over
    untouched when the pipeline is loaded, and again when the new version is loaded alone;
  - one that differs, or that the new version adds, is emitted for the new version under
    NEW_PREFIX + name (P4Info `ingress.flexnet_newver__acl`); the old version's keeps its
    name. `names` maps (version, model name) to the P4 name;
  - control statements are aligned (longest common subsequence): a statement both versions
    run at that point, over shared objects only, runs for every packet; the others run
    under `if (flexnet_is_new_version == ...)`;
  - headers and metadata are the union, the parser and the deparser are shared.
What cannot be merged raises DualPipelineError (a typed ProgramError) naming it: a header
or metadata field declared differently, parser states that differ, a shared table that the
two versions apply at different points (P4 applies a table once). The caller then changes
that switch per-device, and the change record says why.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ProgramError
from ..program.model import Op, Program, Stmt
from ..program.validate import check_target, validate
from .p4 import P4_CAPABILITIES, _check_names, _Gen, _Locals, tag_support

NEW_PREFIX = "flexnet_newver__"     # 16 characters: longer than any model name
MAP_OPS = ("count", "map_add", "sketch_add", "rate_limit", "reg_write")


class DualPipelineError(ProgramError):
    """Two programs that one pipeline cannot hold side by side."""


@dataclass(frozen=True)
class DualP4:
    """The generated source and the P4 names of every model object per version."""
    text: str
    tables: dict            # (version "old"/"new", model table) -> P4 name (no control prefix)
    actions: dict           # (version, model action) -> P4 name
    maps: dict              # (version, model map) -> P4 name of the map (map_objects renames)


def generate_dual(old: Program, new: Program) -> DualP4:
    """P4_16 source holding `old` and `new`, the version chosen per packet."""
    for prog in (old, new):
        validate(prog)
        check_target(prog, P4_CAPABILITIES)
        _check_names(prog)
        if not tag_support(prog):
            raise DualPipelineError(f"program {prog.name}", "its parser does not start with an "
                                    "ethernet header (48/48/16 bits): no version tag")
    merged, names = _merge(old, new)
    gen = _DualGen(merged, old, names["new_program"])
    head = [f"/* FlexNet Lab: programs '{old.name}' (old) and '{new.name}' (new) in one v1model "
            "pipeline,",
            " * the version chosen per packet (flexnet_lab/compiler/p4_dual.py). Do not edit. */",
            "#include <core.p4>",
            "#define V1MODEL_VERSION 20180101",
            "#include <v1model.p4>", ""]
    text = "\n".join(head + gen.header_types() + gen.parser() + gen.ingress() + gen.tail()) + "\n"
    return DualP4(text, names["tables"], names["actions"], names["maps"])


# --- merging --------------------------------------------------------------------------------

def _union(kind: str, a: tuple, b: tuple) -> tuple:
    """Objects of both tuples by name, the old order first; one name declared two ways is a
    DualPipelineError."""
    out = list(a)
    have = {x.name: x for x in a}
    for x in b:
        if x.name not in have:
            out.append(x)
        elif have[x.name] != x:
            raise DualPipelineError(f"{kind}.{x.name}", "is declared differently in the two "
                                    "versions; one pipeline cannot hold both")
    return tuple(out)


def _map_refs(ops: tuple[Op, ...]) -> set[str]:
    return {op.args[0] for op in ops if op.name in MAP_OPS and op.args}


def _merge(old: Program, new: Program) -> tuple[Program, dict]:
    if old.parser[0].name != new.parser[0].name:
        raise DualPipelineError("parser", "the two versions start in different states")
    headers = _union("headers", old.headers, new.headers)
    metadata = _union("metadata", old.metadata, new.metadata)
    parser = _union("parser", old.parser, new.parser)
    shared_maps = {m.name for m in new.maps if old.map(m.name) == m}
    shared_actions = {a.name for a in new.actions if old.action(a.name) == a
                      and _map_refs(a.ops) <= shared_maps}
    shared_tables = {t.name for t in new.tables if old.table(t.name) == t
                     and set(t.actions) | {t.default_action} <= shared_actions}
    rn_map = {m.name: m.name if m.name in shared_maps else NEW_PREFIX + m.name for m in new.maps}
    rn_act = {a.name: a.name if a.name in shared_actions else NEW_PREFIX + a.name
              for a in new.actions}
    rn_tab = {t.name: t.name if t.name in shared_tables else NEW_PREFIX + t.name
              for t in new.tables}

    def ops(seq: tuple[Op, ...]) -> tuple[Op, ...]:
        return tuple(replace(op, args=(rn_map[op.args[0]],) + tuple(op.args[1:]))
                     if op.name in MAP_OPS and op.args else op for op in seq)

    new_maps = tuple(replace(m, name=rn_map[m.name]) for m in new.maps)
    new_actions = tuple(replace(a, name=rn_act[a.name], ops=ops(a.ops)) for a in new.actions)
    new_tables = tuple(replace(t, name=rn_tab[t.name],
                               actions=tuple(rn_act[a] for a in t.actions),
                               default_action=rn_act[t.default_action]) for t in new.tables)
    new_control = tuple(Stmt(table=rn_tab[s.table]) if s.table is not None
                        else Stmt(ops=ops(s.ops)) for s in new.control)
    new_r = replace(new, maps=new_maps, actions=new_actions, tables=new_tables,
                    control=new_control)
    merged = Program(
        name=new.name, headers=headers, metadata=metadata, parser=parser,
        maps=old.maps + tuple(m for m in new_maps if m.name not in shared_maps),
        actions=old.actions + tuple(a for a in new_actions if a.name not in shared_actions),
        tables=old.tables + tuple(t for t in new_tables if t.name not in shared_tables),
        control=())
    names = {"tables": {**{("old", t.name): t.name for t in old.tables},
                        **{("new", k): v for k, v in rn_tab.items()}},
             "actions": {**{("old", a.name): a.name for a in old.actions},
                         **{("new", k): v for k, v in rn_act.items()}},
             "maps": {**{("old", m.name): m.name for m in old.maps},
                      **{("new", k): v for k, v in rn_map.items()}},
             "new_program": new_r}
    return merged, names


def align(a: tuple, b: tuple) -> list[tuple[str, object]]:
    """The two statement lists as one: ("both", s), ("old", s), ("new", s) in an order
    that keeps each list's own (longest common subsequence)."""
    n, m = len(a), len(b)
    lcs = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            lcs[i][j] = (lcs[i + 1][j + 1] + 1 if a[i] == b[j]
                         else max(lcs[i + 1][j], lcs[i][j + 1]))
    out, i, j = [], 0, 0
    while i < n and j < m:
        if a[i] == b[j]:
            out.append(("both", a[i]))
            i, j = i + 1, j + 1
        elif lcs[i + 1][j] >= lcs[i][j + 1]:
            out.append(("old", a[i]))
            i += 1
        else:
            out.append(("new", b[j]))
            j += 1
    out += [("old", s) for s in a[i:]] + [("new", s) for s in b[j:]]
    return out


class _DualGen(_Gen):
    """The P4 backend's generator over the merged program; the control is both versions'."""

    def __init__(self, merged: Program, old: Program, new_renamed: Program):
        super().__init__(merged, "switch")
        self.dual = True
        self.old, self.new = old, new_renamed

    def body(self, temps: _Locals) -> list[str]:
        steps = align(self.old.control, self.new.control)
        applied: dict[str, str] = {}
        for who, stmt in steps:
            if stmt.table is not None:
                if stmt.table in applied and applied[stmt.table] != who:
                    raise DualPipelineError(f"tables.{stmt.table}", "the two versions apply "
                                            "this table at different points; P4 applies a "
                                            "table once per pipeline")
                applied[stmt.table] = who
        out: list[str] = []
        k = 0
        while k < len(steps):
            who = steps[k][0]
            run = []
            while k < len(steps) and steps[k][0] == who:
                run.append(steps[k][1])
                k += 1
            lines: list[str] = []
            for stmt in run:
                lines += self.stmt(stmt, temps, f"control ({who} version)")
            if who == "both":
                out += lines
            elif lines:
                flag = "1w1" if who == "new" else "1w0"
                out += [f"if (flexnet_is_new_version == {flag}) {{   /* {who} version only */"]
                out += ["    " + ln for ln in lines] + ["}"]
        return out
