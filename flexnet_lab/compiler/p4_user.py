"""A user's own P4_16 program (v1model, bmv2): compiled with p4c-bm2-ss or taken prebuilt
(bmv2 JSON + P4Info), its runtime JSON checked against the P4Info and turned into table
entries in P4Runtime terms, and what survives when one program replaces another.

Entries of such a program are the model's Entry with the P4Info's full names
(`MyIngress.ipv4_lpm`, `MyIngress.ipv4_forward`), one match item per key in P4Info order
(exact: int; lpm: (value, prefix length); ternary: (value, mask); range: (low, high); a
key the file leaves out is a don't-care) and the action's parameters in P4Info order.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from ..errors import EnvironmentMissing, P4FileError
from ..inputs import show
from ..program.runtime_json import RawEntry, RuntimeFile
from ..targets.ebpf_datapath import Entry

EXACT, LPM, TERNARY, RANGE, OPTIONAL = 2, 3, 4, 5, 6     # p4info MatchField.MatchType


@dataclass(frozen=True)
class P4Build:
    """A compiled program: P4Info (text form) and bmv2 JSON, as bytes in memory."""
    name: str
    source: str             # the .p4 (or the bmv2 JSON given prebuilt)
    p4info: str
    device_json: bytes
    compile_ms: float = 0.0

    @property
    def digest(self) -> str:
        h = hashlib.sha256(self.device_json)
        h.update(self.p4info.encode())
        return h.hexdigest()


@dataclass(frozen=True)
class UserP4:
    """What the intent holds of a switch running a user's program: where it came from,
    its sha256 (bmv2 JSON + P4Info), the copies in the run folder the lab loads, its
    tables, and the runtime file's defaults and multicast groups (its entries are the
    device intent's entries)."""
    name: str
    source: str
    sha256: str
    p4info_path: str
    json_path: str
    tables: tuple[str, ...] = ()
    defaults: tuple = ()        # ((table, action, (args...)), ...)
    multicast: tuple = ()       # ((group, ((port, instance), ...)), ...)
    runtime: str = ""           # the runtime file its entries came from

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "sha256": self.sha256,
                "p4info_path": self.p4info_path, "json_path": self.json_path,
                "tables": list(self.tables), "runtime": self.runtime,
                "defaults": [[t, a, list(args)] for t, a, args in self.defaults],
                "multicast": [[g, [list(r) for r in reps]] for g, reps in self.multicast]}

    @classmethod
    def from_json(cls, d: dict) -> "UserP4":
        return cls(d["name"], d["source"], d["sha256"], d["p4info_path"], d["json_path"],
                   tuple(d.get("tables", ())),
                   tuple((t, a, tuple(args)) for t, a, args in d.get("defaults", ())),
                   tuple((g, tuple(tuple(r) for r in reps)) for g, reps in d.get("multicast", ())),
                   d.get("runtime", ""))

    def read(self) -> tuple[str, bytes]:
        with open(self.p4info_path) as fi, open(self.json_path, "rb") as fj:
            return fi.read(), fj.read()


# --- compiling --------------------------------------------------------------------------
def compile_p4(path: str) -> P4Build:
    """p4c-bm2-ss on a P4_16 source (from its own folder, so its #includes resolve);
    P4FileError(file, "line N", p4c's message) when p4c refuses it."""
    import time
    p4c = shutil.which("p4c-bm2-ss")
    if p4c is None:
        raise EnvironmentMissing(f"p4c-bm2-ss not found (needed to compile "
                                 f"{os.path.basename(path)}): install p4lang-p4c")
    name = os.path.splitext(os.path.basename(path))[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flexnet-p4c-") as tmp:
        info, js = os.path.join(tmp, f"{name}.p4info.txt"), os.path.join(tmp, f"{name}.json")
        res = subprocess.run([p4c, "--p4v", "16", "--p4runtime-files", info, "-o", js,
                              os.path.abspath(path)], cwd=os.path.dirname(os.path.abspath(path)),
                             capture_output=True, text=True, timeout=300)
        if res.returncode != 0 or not os.path.exists(js):
            raise _p4c_error(path, res.stderr or res.stdout)
        with open(info) as fi, open(js, "rb") as fj:
            return P4Build(name, os.path.abspath(path), fi.read(), fj.read(),
                           (time.perf_counter() - t0) * 1e3)


def _p4c_error(path: str, output: str) -> P4FileError:
    """p4c's first error as `file: line N: message`."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else
                 "p4c-bm2-ss failed without a message")
    m = re.search(r"\((\d+)\)", first)
    msg = re.sub(r"^.*?\(\d+\):?\s*", "", first) if m else first
    i = lines.index(first) if first in lines else -1
    if i >= 0 and i + 1 < len(lines) and not re.search(r"error", lines[i + 1], re.I):
        msg += f" — {lines[i + 1]}"
    return P4FileError(os.path.basename(path), f"line {m.group(1)}" if m else "<p4c>",
                       show(msg, 200).strip("'\""))


def load_prebuilt(json_path: str, p4info_path: str, source: str) -> P4Build:
    """A bmv2 JSON and its P4Info compiled elsewhere (a coursework build/ folder)."""
    for path, what in ((json_path, "bmv2_json"), (p4info_path, "p4info")):
        if not os.path.isfile(path):
            raise P4FileError(source, what, f"no such file: {show(path, 80)}")
    with open(p4info_path) as fi, open(json_path, "rb") as fj:
        info, js = fi.read(), fj.read()
    parse_p4info(info, p4info_path)
    name = os.path.splitext(os.path.basename(json_path))[0]
    return P4Build(name, os.path.abspath(json_path), info, js)


def save(build: P4Build, folder: str, runtime: "Resolved | None" = None) -> UserP4:
    """Copy the build into `folder` under its digest (what the lab loads, and a restarted
    controller finds) and describe it for the intent."""
    os.makedirs(folder, exist_ok=True)
    d = build.digest
    info_path, json_path = os.path.join(folder, f"{d}.p4info.txt"), os.path.join(folder, f"{d}.json")
    for path, data in ((info_path, build.p4info.encode()), (json_path, build.device_json)):
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as fh:
                fh.write(data)
            os.replace(path + ".tmp", path)
    info = P4Info(parse_p4info(build.p4info, build.source))
    return UserP4(build.name, build.source, d, info_path, json_path,
                  tuple(t.preamble.name for t in info.msg.tables),
                  runtime.defaults if runtime else (), runtime.multicast if runtime else (),
                  runtime.source if runtime else "")


# --- the P4Info ---------------------------------------------------------------------------
def parse_p4info(text: str, source: str = "p4info"):
    try:
        from google.protobuf import text_format
        from p4.config.v1 import p4info_pb2
    except ImportError as exc:
        raise EnvironmentMissing("reading a P4Info needs `pip install p4runtime==1.4.1 "
                                 f"protobuf==3.20.3` ({exc})") from exc
    try:
        return text_format.Parse(text, p4info_pb2.P4Info())
    except text_format.ParseError as exc:
        raise P4FileError(source, "p4info", f"not a P4Info in text form: {exc}") from None


class P4Info:
    """Look-ups by name (full name or alias) in a parsed P4Info message."""

    def __init__(self, msg):
        self.msg = msg
        self.tables = {}
        for t in msg.tables:
            self.tables[t.preamble.name] = t
            self.tables.setdefault(t.preamble.alias, t)
        self.actions = {}
        for a in msg.actions:
            self.actions[a.preamble.name] = a
            self.actions.setdefault(a.preamble.alias, a)
        self.by_id = {a.preamble.id: a for a in msg.actions}
        self.table_ids = {t.preamble.id: t for t in msg.tables}

    def table(self, name: str):
        return self.tables.get(name)

    def table_actions(self, t) -> dict[str, object]:
        return {self.by_id[r.id].preamble.name: self.by_id[r.id] for r in t.action_refs
                if r.id in self.by_id}

    def needs_priority(self, t) -> bool:
        return any(mf.match_type in (TERNARY, RANGE, OPTIONAL) for mf in t.match_fields)

    def signature(self, table_name: str):
        """What must survive for a table's entries to be carried: its keys (name, width,
        kind) and its actions (name, parameters)."""
        t = self.tables.get(table_name)
        if t is None:
            return None
        keys = tuple((mf.name, mf.bitwidth, mf.match_type) for mf in t.match_fields)
        return keys, t.size

    def action_signature(self, action_name: str):
        a = self.actions.get(action_name)
        return None if a is None else tuple((p.name, p.bitwidth) for p in a.params)


def dont_care(mf):
    """The match item standing for a key an entry leaves out (what a read returns for an
    omitted field)."""
    if mf.match_type == LPM or mf.match_type == TERNARY:
        return (0, 0)
    if mf.match_type == RANGE:
        return (0, (1 << mf.bitwidth) - 1)
    return None


# --- the runtime file against the P4Info -------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    source: str
    entries: frozenset          # of Entry
    defaults: tuple             # ((table, action, args), ...)
    multicast: tuple
    notes: tuple = field(default=())


def resolve_runtime(rt: RuntimeFile, info: P4Info) -> Resolved:
    """Check every entry of the runtime file against the program and build it;
    P4FileError(runtime file, table_entries[i].FIELD, ...) for the first that does not fit."""
    entries, defaults, seen = [], [], {}
    for raw in rt.entries:
        e = _build(rt.source, raw, info)
        if raw.default:
            defaults.append((e.table, e.action, e.args))
            continue
        key = (e.table, e.match, e.priority)
        if key in seen:
            raise P4FileError(rt.source, raw.field, f"the same match as {seen[key]} in "
                              f"table {e.table}")
        seen[key] = raw.field
        entries.append(e)
    return Resolved(rt.source, frozenset(entries), tuple(defaults), rt.multicast)


def _build(source: str, raw: RawEntry, info: P4Info) -> Entry:
    def err(where: str, message: str) -> P4FileError:
        return P4FileError(source, f"{raw.field}{where}", message)
    t = info.table(raw.table)
    if t is None:
        known = ", ".join(sorted(x.preamble.name for x in info.msg.tables)) or "none"
        raise err(".table", f"no table {show(raw.table)} in the program (tables: "
                  f"{show(known, 120)})")
    actions = info.table_actions(t)
    a = info.actions.get(raw.action)
    if a is None or a.preamble.name not in actions:
        raise err(".action_name", f"{show(raw.action)} is not an action of table "
                  f"{t.preamble.name} (actions: {', '.join(sorted(actions))})")
    ref = next(r for r in t.action_refs if r.id == a.preamble.id)
    if raw.default and ref.scope == 1:      # TABLE_ONLY
        raise err(".action_name", f"{a.preamble.name} cannot be the default of {t.preamble.name}")
    if not raw.default and ref.scope == 2:  # DEFAULT_ONLY
        raise err(".action_name", f"{a.preamble.name} is for the default of "
                  f"{t.preamble.name} only")
    params = dict(raw.params)
    for name in params:
        if name not in [p.name for p in a.params]:
            raise err(f".action_params.{name}", f"{a.preamble.name} has no parameter "
                      f"{show(name)} (parameters: {', '.join(p.name for p in a.params) or 'none'})")
    args = []
    for p in a.params:
        if p.name not in params:
            raise err(f".action_params.{p.name}", f"missing ({a.preamble.name} takes "
                      f"{', '.join(x.name for x in a.params)})")
        if params[p.name] >= 1 << p.bitwidth:
            raise err(f".action_params.{p.name}", f"{params[p.name]} does not fit "
                      f"{p.bitwidth} bits")
        args.append(params[p.name])
    if raw.default:
        return Entry(t.preamble.name, (), a.preamble.name, tuple(args), 0)
    given = dict(raw.match)
    names = [mf.name for mf in t.match_fields]
    for name in given:
        if name not in names:
            raise err(f".match.{name}", f"table {t.preamble.name} has no key {show(name)} "
                      f"(keys: {', '.join(names)})")
    match = []
    for mf in t.match_fields:
        where = f".match.{mf.name}"
        if mf.name not in given:
            if mf.match_type in (EXACT, OPTIONAL):
                raise err(where, f"missing (an exact key of {t.preamble.name})")
            match.append(dont_care(mf))
            continue
        match.append(_match_item(err, where, mf, given[mf.name]))
    prio = raw.priority or 0
    if info.needs_priority(t) and not prio:
        raise err(".priority", f"table {t.preamble.name} has ternary or range keys: "
                  "give each entry a priority (1 or more)")
    if not info.needs_priority(t) and prio:
        raise err(".priority", f"table {t.preamble.name} has exact/lpm keys only: it takes "
                  "no priority")
    return Entry(t.preamble.name, tuple(match), a.preamble.name, tuple(args), prio)


def _match_item(err, where: str, mf, v):
    width, kind = mf.bitwidth, mf.match_type
    full = (1 << width) - 1
    if kind == OPTIONAL:
        raise err(where, "optional match keys are not supported")
    if kind == EXACT:
        if isinstance(v, tuple):
            raise err(where, f"an exact key takes one value, got a pair {show(list(v))}")
        if v > full:
            raise err(where, f"{v} does not fit {width} bits")
        return v
    if not isinstance(v, tuple):
        what = {LPM: "[value, prefix length]", TERNARY: "[value, mask]",
                RANGE: "[low, high]"}.get(kind, "a pair")
        raise err(where, f"an {'lpm' if kind == LPM else 'ternary' if kind == TERNARY else 'range'}"
                  f" key takes {what}, got {show(v)}")
    a, b = v
    if a > full:
        raise err(where, f"{a} does not fit {width} bits")
    if kind == LPM:
        if b > width:
            raise err(where, f"prefix length {b} is longer than the key ({width} bits)")
        mask = full ^ ((1 << (width - b)) - 1) if b else 0
        return (a & mask, b)
    if b > full:
        raise err(where, f"{b} does not fit {width} bits")
    if kind == TERNARY:
        return (a & b, b)
    if kind == RANGE:
        if a > b:
            raise err(where, f"low {a} is above high {b}")
        return (a, b)
    raise err(where, f"match kind {kind} is not supported")


# --- one program replacing another ---------------------------------------------------------
def carried(old: P4Info, new: P4Info, entries) -> tuple[list, dict[str, int], list[str]]:
    """Entries the new program can hold as they are: their table has the same name, keys
    (names, widths, kinds) and their action is in it with the same parameters. Returns
    (kept entries, dropped count per table, the tables whose entries are carried)."""
    kept, dropped, tables = [], {}, []
    for name in sorted({e.table for e in entries} | {t.preamble.name for t in old.msg.tables}):
        same = old.signature(name) is not None and \
            old.signature(name)[0] == (new.signature(name) or (None,))[0]
        if same:
            tables.append(name)
        for e in sorted((e for e in entries if e.table == name), key=repr):
            nt = new.table(name)
            ok = same and e.action in new.table_actions(nt) and \
                old.action_signature(e.action) == new.action_signature(e.action)
            if ok:
                kept.append(e)
            else:
                dropped[name] = dropped.get(name, 0) + 1
    return kept, dropped, tables
