"""A scenario as data, and everything about it that can be checked before a lab starts.

`load_scenario` reads the file and types and range-checks every value where it is read
(times, rates, ports, lengths, names); `dry_run` checks the scenario against its topology
and the program models of the whole timeline (deltas applied in order, swaps, entries with
their actions and arities, target capabilities, expectations on maps); `check_results_dir`
makes sure the verdict can be written. Every problem is one ScenarioError naming the file
and the field; nothing on the machine changes until all three have passed.
"""
from __future__ import annotations

import os
import re
import dataclasses
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any, NoReturn

from ..errors import FlexNetError, ProgramError, ScenarioError
from ..inputs import read_yaml_file, show
from ..program import library
from ..program.delta import Delta, delta_from_dict, load_delta
from ..program.model import Program
from ..program.validate import check_entry, check_target, validate
from ..plan.two_phase import LEVELS
from .traffic import FlowSpec

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")   # also a results folder name
HOOKS = ("xdp", "tc")
DIRECTIONS = ("ingress", "egress")
MAX_DURATION_S = 600
RATE_BPS = (1_000, 10_000_000_000)         # 1 kbit/s .. 10 Gbit/s
UDP_LENGTH = (32, 1472)                    # iperf3 payload; 1472 + 28 fills a 1500 MTU
RATE_MBIT = (1, 10_000)                    # the rate limiter's token rate
SCENARIO_KEYS = ("name", "description", "topology", "targets", "setup", "traffic",
                 "probes", "changes", "expect", "capture")
CHANGE_KINDS = ("delta", "undo", "swap", "entry")
PART_KEYS = ("switch", "host", "delta", "undo", "swap", "hook", "direction", "rate_mbit",
             "entry", "consistency")
MAX_PARTS = 64
PROBE_PPS = (10, 10_000)                   # per pair: what one Python sender keeps up
PROBE_TOTAL_PPS = 40_000                   # all pairs: more would crowd out the traffic
                                           # they measure on the lab's cores
MAX_PROBE_PAIRS = 16
ORACLE_CHECKS = ("mixed", "mixed_at_least", "lost")   # figures of the oracle, per change
COUNT_MAX = 10**9


# --- the scenario as data -------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    at: float
    kind: str                     # delta | undo | swap | entry | group
    device: str                   # switch name or pattern, or a host
    delta: Delta | None = None
    undo: int | None = None
    program: str | None = None
    hook: str = "xdp"
    direction: str = "ingress"
    params: tuple = ()
    entry: tuple = ()
    on_host: bool = False
    delta_source: str = ""        # the delta's file, or where it is inline
    consistency: str = "per-device"   # per-device | per-packet | per-flow (plan/two_phase.py)
    expect: tuple = ()            # oracle expectations: sorted (key, value) pairs
    parts: tuple = ()             # group: its parts (Changes of the other kinds), applied
                                  # as one controller change at one level

    def describe(self) -> str:
        if self.kind == "group":
            return " + ".join(p.describe() for p in self.parts)
        if self.kind == "delta":
            return f"{self.device}: delta {self.delta.name or '(unnamed)'}"
        if self.kind == "undo":
            return f"{self.device}: undo change #{self.undo}"
        if self.kind == "entry":
            return f"{self.device}: entry {dict(self.entry).get('table')}"
        return f"{self.device}: swap to {self.program}"


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    topology: str
    setup: tuple[dict, ...]
    flows: tuple[FlowSpec, ...]
    duration: float
    baseline_s: float
    changes: tuple[Change, ...]
    expect: tuple[dict, ...]
    targets: tuple[tuple[str, str], ...] = ()     # (switch name or pattern, target)
    capture: bool = False                         # a pcap per switch port, under results/
    probes: "Probes | None" = None                # the consistency oracle's probe streams

    def topology_for(self, topo):
        """The topology with this scenario's switch targets; `auto` becomes ebpf, since
        scenario rates are set for it (a scenario that wants bmv2 says so in targets)."""
        def target(spec) -> str:
            for pattern, t in self.targets:
                if fnmatchcase(spec.name, pattern):
                    return t
            return "ebpf" if spec.target == "auto" else spec.target
        for pattern, _ in self.targets:
            if not any(fnmatchcase(s.name, pattern) for s in topo.switches):
                raise ScenarioError(self.source, f"targets.{pattern}",
                                    f"no switch of {topo.name} matches")
        topo = topo.with_targets(target)
        return dataclasses.replace(topo, capture=True) if self.capture else topo


@dataclass(frozen=True)
class Probes:
    """The consistency oracle's probe streams (verify/oracle.py): (src, dst) host pairs,
    each sending `pps` probes a second for the whole traffic."""
    pairs: tuple[tuple[str, str], ...]
    pps: float = 2000


def is_pattern(device: str) -> bool:
    return any(ch in device for ch in "*?[")


# --- typed reading ---------------------------------------------------------------------
class _Reader:
    """Reads one file's values, each typed and range-checked; errors name the field."""

    def __init__(self, src: str):
        self.src = src

    def fail(self, where: str, message: str) -> NoReturn:
        raise ScenarioError(self.src, where, message)

    def mapping(self, value: Any, where: str, optional: bool = True) -> dict:
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {_kind(value)}")
        return value

    def list(self, value: Any, where: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {_kind(value)}")
        return value

    def keys(self, d: dict, allowed: tuple, where: str, required: tuple = ()) -> None:
        def at(key) -> str:
            if not isinstance(key, str):
                return where or "<root>"
            return f"{where}.{show(key, 40)[1:-1]}" if where else show(key, 40)[1:-1]
        for key in d:
            if key not in allowed:
                self.fail(at(key), f"unknown key {show(key)}; allowed: {', '.join(allowed)}")
        for key in required:
            if key not in d:
                self.fail(at(key), "missing")

    def number(self, d: dict, key: str, where: str, lo: float, hi: float,
               default: Any = None, integer: bool = False) -> Any:
        value = d.get(key, default)
        field = f"{where}.{key}" if where else key
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if integer and ok and not isinstance(value, int):
            ok = False
        if not ok or value != value:  # NaN
            self.fail(field, f"expected {'an integer' if integer else 'a number'}, "
                      f"got {show(value)}")
        if not lo <= value <= hi:
            self.fail(field, f"{show(value)} is out of range {lo:g}..{hi:g}")
        return value

    def string(self, d: dict, key: str, where: str, choices: tuple = (),
               pattern: re.Pattern | None = None, default: Any = None) -> str:
        value = d.get(key, default)
        field = f"{where}.{key}" if where else key
        if not isinstance(value, str) or not value:
            self.fail(field, f"expected a name, got {show(value)}")
        if choices and value not in choices:
            self.fail(field, f"{show(value)}: one of {', '.join(choices)}")
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(field, f"{show(value)}: must match {pattern.pattern}")
        return value

    def rate(self, d: dict, key: str, where: str, default: Any) -> int:
        """bits/s: a number, or text like 200M / 1.5G / 64K."""
        value = d.get(key, default)
        field = f"{where}.{key}"
        if isinstance(value, bool):
            self.fail(field, f"not a rate: {show(value)} (e.g. 200M)")
        if isinstance(value, (int, float)):
            bps = float(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*[KMGkmg]?\s*", value):
            s = value.strip().upper()
            mult = {"K": 1e3, "M": 1e6, "G": 1e9}.get(s[-1:], 1)
            bps = float(s.rstrip("KMG").strip()) * mult
        else:
            self.fail(field, f"not a rate: {show(value)} (e.g. 200M)")
        if bps == 0 and default == 0:
            return 0                      # TCP without a rate: as fast as it goes
        if not RATE_BPS[0] <= bps <= RATE_BPS[1]:
            self.fail(field, f"{show(value)} is out of range 1K..10G bit/s")
        return int(bps)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def load_scenario(path: str) -> Scenario:
    data = read_yaml_file(path, lambda field, message: ScenarioError(path, field, message))
    return parse_scenario(data, path)


def parse_scenario(data: Any, src: str) -> Scenario:
    r = _Reader(src)
    if not isinstance(data, dict):
        r.fail("<root>", f"a scenario is a mapping, got {_kind(data)}")
    r.keys(data, SCENARIO_KEYS, "", required=("topology",))
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", os.path.splitext(os.path.basename(src))[0]) or "scenario"
    name = r.string(data, "name", "", pattern=NAME, default=stem) if "name" in data else stem
    if "description" in data and not isinstance(data["description"], str):
        r.fail("description", f"expected text, got {_kind(data['description'])}")
    topology = r.string(data, "topology", "")
    targets = r.mapping(data.get("targets"), "targets")
    for pattern in targets:
        if not isinstance(pattern, str):
            r.fail("targets", f"a switch name or pattern, got {show(pattern)}")
        r.string(targets, pattern, "targets", choices=("ebpf", "bmv2"))
    base = os.path.dirname(os.path.abspath(src))
    setup = tuple(_setup_step(r, s, f"setup[{i}]")
                  for i, s in enumerate(r.list(data.get("setup"), "setup")))
    traffic = r.mapping(data.get("traffic"), "traffic")
    r.keys(traffic, ("duration", "baseline", "flows"), "traffic")
    duration = float(r.number(traffic, "duration", "traffic", 1, MAX_DURATION_S, default=10))
    baseline_s = float(r.number(traffic, "baseline", "traffic", 1, duration, default=min(2, duration)))
    flows = _flows(r, r.list(traffic.get("flows"), "traffic.flows"), duration)
    changes = tuple(_change(r, c, i, base)
                    for i, c in enumerate(r.list(data.get("changes"), "changes")))
    _check_timeline(r, changes, duration)
    expect = tuple(_expectation(r, e, f"expect[{i}]", {f.name for f in flows})
                   for i, e in enumerate(r.list(data.get("expect"), "expect")))
    capture = data.get("capture", False)
    if not isinstance(capture, bool):
        r.fail("capture", f"expected true or false, got {show(capture)}")
    probes = _probes(r, data["probes"]) if "probes" in data else None
    _check_oracle_expectations(r, changes, expect, probes)
    return Scenario(name, src, topology, setup, tuple(flows), duration, baseline_s, changes,
                    expect, tuple((k, v) for k, v in targets.items()), capture, probes)


def _probes(r: _Reader, value: Any) -> Probes:
    p = r.mapping(value, "probes", optional=False)
    r.keys(p, ("pairs", "pps"), "probes", required=("pairs",))
    items = r.list(p["pairs"], "probes.pairs")
    if not items:
        r.fail("probes.pairs", "needs at least one [src, dst] pair of hosts")
    if len(items) > MAX_PROBE_PAIRS:
        r.fail("probes.pairs", f"{len(items)} pairs; at most {MAX_PROBE_PAIRS}")
    pairs = []
    for i, pair in enumerate(items):
        where = f"probes.pairs[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            r.fail(where, f"a pair of hosts [src, dst], got {show(pair)}")
        for k, host in enumerate(pair):
            if not isinstance(host, str) or not host:
                r.fail(f"{where}[{k}]", f"expected a host name, got {show(host)}")
        src, dst = pair
        if src == dst:
            r.fail(where, f"a probe from {src} to itself never crosses the network")
        if (src, dst) in pairs:
            r.fail(where, f"{src} -> {dst} is already probed (probes.pairs[{pairs.index((src, dst))}])")
        pairs.append((src, dst))
    pps = float(r.number(p, "pps", "probes", *PROBE_PPS, default=2000))
    if pps * len(pairs) > PROBE_TOTAL_PPS:
        r.fail("probes.pps", f"{pps:g} probes/s on {len(pairs)} pairs is more than "
               f"{PROBE_TOTAL_PPS} probes/s in all (they would crowd out the traffic)")
    return Probes(tuple(pairs), pps)


def _oracle_expect(r: _Reader, e: Any, where: str, level_required: bool) -> dict:
    """{consistency: LEVEL, mixed: N, mixed_at_least: N, lost: N}: the level the change
    records achieved, and its probes from the oracle (mixed and lost at most N, mixed at
    least N)."""
    e = r.mapping(e, where, optional=False)
    r.keys(e, ("consistency",) + ORACLE_CHECKS, where,
           required=("consistency",) if level_required else ())
    if not e:
        r.fail(where, "expects nothing: give consistency, mixed, mixed_at_least or lost")
    out = {}
    if "consistency" in e:
        out["consistency"] = r.string(e, "consistency", where, LEVELS)
    for key in ORACLE_CHECKS:
        if key in e:
            out[key] = int(r.number(e, key, where, 0, COUNT_MAX, integer=True))
    if out.get("mixed_at_least", 0) > out.get("mixed", COUNT_MAX):
        r.fail(f"{where}.mixed_at_least", f"{out['mixed_at_least']} is more than "
               f"mixed: {out['mixed']} (at most)")
    return out


def _check_oracle_expectations(r: _Reader, changes: tuple, expect: tuple,
                               probes: "Probes | None") -> None:
    """Expectations on the oracle need its probes; a level expected must be one a change
    asks for (a change never achieves more than it asks)."""
    wants = [(f"changes[{i}].expect", c.consistency, dict(c.expect))
             for i, c in enumerate(changes) if c.expect]
    wants += [(f"expect[{i}]", None, e) for i, e in enumerate(expect) if "consistency" in e]
    for where, asked, e in wants:
        if any(k in e for k in ORACLE_CHECKS) and probes is None:
            r.fail(where, "the oracle's figures need probes: add a top-level "
                   "`probes: {pairs: [[h1, h8]], pps: 2000}`")
        level = e.get("consistency")
        if asked is not None and level in ("per-packet", "per-flow") and asked != level:
            r.fail(f"{where}.consistency", f"expects {level}, but the change asks for "
                   f"{asked} (add `consistency: {level}` to the change)")
        if asked is None and not any(c.consistency == level for c in changes):
            r.fail(f"{where}.consistency", f"no change of the timeline asks for {level}")


def _setup_step(r: _Reader, step: Any, where: str) -> dict:
    step = r.mapping(step, where, optional=False)
    r.keys(step, ("host", "attach", "hook", "direction"), where, required=("host", "attach"))
    out = {"host": r.string(step, "host", where), "attach": r.string(step, "attach", where),
           "hook": r.string(step, "hook", where, HOOKS, default="xdp"),
           "direction": r.string(step, "direction", where, DIRECTIONS, default="ingress")}
    if out["hook"] == "xdp" and out["direction"] != "ingress":
        r.fail(f"{where}.direction", "XDP runs on ingress only (use hook: tc for egress)")
    return out


def _flows(r: _Reader, items: list, duration: float) -> list[FlowSpec]:
    flows, names, ports = [], set(), {}
    for i, f in enumerate(items):
        where = f"traffic.flows[{i}]"
        f = r.mapping(f, where, optional=False)
        r.keys(f, ("name", "src", "dst", "proto", "rate", "port", "length"), where,
               required=("src", "dst"))
        name = r.string(f, "name", where, pattern=NAME, default=f"flow{i}")
        if name in names:
            r.fail(f"{where}.name", f"{show(name)} is already the name of another flow")
        names.add(name)
        src, dst = r.string(f, "src", where), r.string(f, "dst", where)
        if src == dst:
            r.fail(f"{where}.dst", f"a flow from {src} to itself never crosses the network")
        proto = r.string(f, "proto", where, ("udp", "tcp"), default="udp")
        rate = r.rate(f, "rate", where, "100M" if proto == "udp" else 0)
        port = r.number(f, "port", where, 1024, 65535, default=5201 + i, integer=True)
        if (dst, port) in ports:
            r.fail(f"{where}.port", f"{dst} already serves flow {ports[(dst, port)]} on "
                   f"port {port}")
        ports[(dst, port)] = name
        if "length" in f and proto != "udp":
            r.fail(f"{where}.length", "a datagram length is for UDP flows")
        length = r.number(f, "length", where, *UDP_LENGTH, default=1200, integer=True)
        flows.append(FlowSpec(name, src, dst, proto, rate, duration, port, length))
    return flows


def _change(r: _Reader, c: Any, i: int, base: str) -> Change:
    where = f"changes[{i}]"
    c = r.mapping(c, where, optional=False)
    if "parts" in c:
        return _group(r, c, where, base)
    r.keys(c, ("at", "switch", "host", "delta", "undo", "swap", "hook", "direction",
               "rate_mbit", "entry", "consistency", "expect", "parts"), where,
           required=("at",))
    at = float(r.number(c, "at", where, 0, MAX_DURATION_S))
    expect = _oracle_expect(r, c["expect"], f"{where}.expect", False) if "expect" in c else {}
    return replace(_part(r, c, where, at, base), expect=tuple(sorted(expect.items())))


def _group(r: _Reader, c: dict, where: str, base: str) -> Change:
    """{at, consistency?, expect?, parts: [...]}: several changes, each of the form of a
    change without `at` and `expect`, made as one controller change: one transaction at
    one consistency level, judged by the oracle as one change."""
    for key in c:
        if key in PART_KEYS and key != "consistency":
            r.fail(f"{where}.{key}", "belongs in a part: a change with `parts` names each "
                   "device and what changes there in its parts")
    r.keys(c, ("at", "parts", "consistency", "expect"), where, required=("at",))
    at = float(r.number(c, "at", where, 0, MAX_DURATION_S))
    items = r.list(c["parts"], f"{where}.parts")
    if not items:
        r.fail(f"{where}.parts", "is empty: a grouped change needs at least one part")
    if len(items) > MAX_PARTS:
        r.fail(f"{where}.parts", f"{len(items)} parts; at most {MAX_PARTS}")
    level = r.string(c, "consistency", where, LEVELS) if "consistency" in c else None
    parts, asked = [], None      # asked: (the first level a part states, its index)
    for k, item in enumerate(items):
        pw = f"{where}.parts[{k}]"
        item = r.mapping(item, pw, optional=False)
        for key, why in (("at", "a part has no time of its own: the change's `at` applies "
                                "to all its parts"),
                         ("expect", f"expectations go on the change ({where}.expect): the "
                                    "oracle judges the parts as one change"),
                         ("parts", "parts do not nest")):
            if key in item:
                r.fail(f"{pw}.{key}", why)
        r.keys(item, PART_KEYS, pw)
        part = _part(r, item, pw, at, base)
        if "consistency" in item:
            if level is not None and part.consistency != level:
                r.fail(f"{pw}.consistency", f"{part.consistency} conflicts with the change's "
                       f"{level}: one transaction has one level")
            if asked is not None and part.consistency != asked[0]:
                r.fail(f"{pw}.consistency", f"{part.consistency}, but parts[{asked[1]}] asks "
                       f"{asked[0]}: one transaction has one level (give `consistency` "
                       "once, on the change)")
            asked = asked or (part.consistency, k)
        parts.append(part)
    level = level or (asked[0] if asked else "per-device")
    parts = tuple(replace(p, consistency=level) for p in parts)
    expect = _oracle_expect(r, c["expect"], f"{where}.expect", False) if "expect" in c else {}
    return Change(at, "group", ",".join(p.device for p in parts), consistency=level,
                  expect=tuple(sorted(expect.items())), parts=parts)


def _part(r: _Reader, c: dict, where: str, at: float, base: str) -> Change:
    """One device (or switch pattern) and what changes there: a change without its time
    and expectations, or one part of a grouped change."""
    if ("switch" in c) == ("host" in c):
        r.fail(where, "names one `switch` (or switch pattern) or one `host`")
    on_host = "host" in c
    device = r.string(c, "host" if on_host else "switch", where)
    if on_host and is_pattern(device):
        r.fail(f"{where}.host", "a host is named exactly (patterns select switches)")
    kinds = [k for k in CHANGE_KINDS if k in c]
    if len(kinds) != 1:
        r.fail(where, f"needs exactly one of {', '.join(CHANGE_KINDS)}"
               + (f", got {', '.join(kinds)}" if kinds else ""))
    kind = kinds[0]
    for key, allowed in (("rate_mbit", ("swap",)), ("hook", ("swap", "entry")),
                         ("direction", ("swap", "entry"))):
        if key in c and (kind not in allowed or (kind == "entry" and not on_host)):
            r.fail(f"{where}.{key}", f"not used by a{'n' if kind[0] in 'aeiou' else ''} "
                   f"{kind} change on a {'host' if on_host else 'switch'}")
    hook = r.string(c, "hook", where, HOOKS, default="xdp")
    direction = r.string(c, "direction", where, DIRECTIONS, default="ingress")
    if hook == "xdp" and direction != "ingress":
        r.fail(f"{where}.direction", "XDP runs on ingress only (use hook: tc for egress)")
    level = r.string(c, "consistency", where, LEVELS, default="per-device")
    return replace(_change_kind(r, c, where, kind, at, device, on_host, hook, direction, base),
                   consistency=level)


def _change_kind(r: _Reader, c: dict, where: str, kind: str, at: float, device: str,
                 on_host: bool, hook: str, direction: str, base: str) -> Change:
    if kind == "delta":
        d = c["delta"]
        try:
            if isinstance(d, str):
                source = os.path.join(base, d)
                delta = load_delta(source)
            elif isinstance(d, dict):
                source = "inline"
                delta = delta_from_dict(d, f"{r.src}: {where}.delta")
            else:
                r.fail(f"{where}.delta", f"a delta file or an inline delta, got {_kind(d)}")
        except ScenarioError:
            raise
        except FlexNetError as exc:
            raise ScenarioError(r.src, f"{where}.delta", str(exc)) from None
        return Change(at, "delta", device, delta=delta, on_host=on_host, delta_source=source)
    if kind == "undo":
        undo = r.number(c, "undo", where, 0, 10**6, integer=True)
        return Change(at, "undo", device, undo=int(undo), on_host=on_host)
    if kind == "swap":
        if not on_host:
            r.fail(f"{where}.swap", "a swap replaces a host's program: name a `host`")
        program = r.string(c, "swap", where)
        params = ()
        if "rate_mbit" in c:
            if program != "rate_limiter":
                r.fail(f"{where}.rate_mbit", "only the rate_limiter takes a rate")
            params = (("rate_mbit", r.number(c, "rate_mbit", where, *RATE_MBIT)),)
        return Change(at, "swap", device, program=program, hook=hook, direction=direction,
                      params=params, on_host=True)
    e = r.mapping(c["entry"], f"{where}.entry", optional=False)
    r.keys(e, ("table", "match", "action", "args", "priority"), f"{where}.entry",
           required=("table", "match", "action"))
    table = r.string(e, "table", f"{where}.entry")
    action = r.string(e, "action", f"{where}.entry")
    match = r.list(e["match"], f"{where}.entry.match")
    args = r.list(e.get("args"), f"{where}.entry.args")
    priority = r.number(e, "priority", f"{where}.entry", 0, (1 << 31) - 1, default=0,
                        integer=True)
    entry = {"table": table, "match": tuple(tuple(m) if isinstance(m, list) else m
                                            for m in match),
             "action": action, "args": tuple(args), "priority": priority}
    return Change(at, "entry", device, hook=hook, direction=direction,
                  entry=tuple(sorted(entry.items())), on_host=on_host)


def _check_timeline(r: _Reader, changes: tuple[Change, ...], duration: float) -> None:
    for i, c in enumerate(changes):
        if not 0 <= c.at < duration:
            r.fail(f"changes[{i}].at", f"{c.at:g} is not within the traffic's 0..{duration:g} s")
        if i and c.at < changes[i - 1].at:
            r.fail(f"changes[{i}].at", f"{c.at:g} s comes before changes[{i - 1}] "
                   f"({changes[i - 1].at:g} s): changes run in list order, list them by time")
        for where, u in ([(f"changes[{i}].parts[{k}]", p) for k, p in enumerate(c.parts)]
                         or [(f"changes[{i}]", c)]):
            if u.kind == "undo" and not (u.undo < i and _undoable(changes[u.undo], u.device)):
                r.fail(f"{where}.undo", "must name an earlier delta change on the same "
                       "switch (or switch pattern), or an earlier change with a delta part "
                       "on it")


def _undoable(change: Change, device: str) -> bool:
    """An undo on `device` can name this change: a delta there, or a group with one."""
    return _delta_part(change, device) is not None


def _delta_part(change: Change, device: str) -> Change | None:
    """The delta on `device` (a switch or pattern) of a change or of its parts."""
    return next((p for p in change.parts or (change,)
                 if p.kind == "delta" and p.device == device), None)


def _expectation(r: _Reader, e: Any, where: str, flows: set[str]) -> dict:
    e = r.mapping(e, where, optional=False)
    if "flow" in e:
        r.keys(e, ("flow", "zero_loss", "lost_at_least"), where)
        name = r.string(e, "flow", where)
        if name not in flows:
            r.fail(f"{where}.flow", f"no flow {show(name)} in traffic.flows")
        if ("zero_loss" in e) == ("lost_at_least" in e):
            r.fail(where, "a flow expectation is zero_loss: true or lost_at_least: FRACTION")
        if "zero_loss" in e and e["zero_loss"] is not True:
            r.fail(f"{where}.zero_loss", f"expected true, got {show(e['zero_loss'])}")
        if "lost_at_least" in e:
            r.number(e, "lost_at_least", where, 0.0, 1.0)
        return dict(e)
    if "consistency" in e:
        out = _oracle_expect(r, e, where, True)
        if len(out) == 1:
            r.fail(where, "a consistency expectation checks mixed, mixed_at_least or lost "
                   "of the changes that ask for that level")
        return out
    if "reachability" in e:
        r.keys(e, ("reachability",), where)
        r.string(e, "reachability", where, ("all",))
        return dict(e)
    if "map" in e or "host" in e:
        r.keys(e, ("host", "map", "index", "at_least", "hook", "direction"), where,
               required=("host", "map", "at_least"))
        out = {"host": r.string(e, "host", where), "map": r.string(e, "map", where),
               "index": r.number(e, "index", where, 0, 1 << 32, default=0, integer=True),
               "at_least": r.number(e, "at_least", where, 0, 1 << 63, integer=True),
               "hook": r.string(e, "hook", where, HOOKS, default="xdp"),
               "direction": r.string(e, "direction", where, DIRECTIONS, default="ingress")}
        return out
    r.fail(where, "one of {flow, zero_loss | lost_at_least}, {reachability: all}, "
           "{host, map, at_least}, {consistency, mixed | mixed_at_least | lost}")


def host_program(name: str, base: str, params: tuple = ()) -> Program:
    """A host program by library name (with rate_mbit for the rate limiter) or YAML path."""
    kw = dict(params)
    if name in library.HOST_PROGRAMS:
        if name == "rate_limiter" and "rate_mbit" in kw:
            rate = int(float(kw["rate_mbit"]) * 1e6 / 8)
            return library.rate_limiter(rate, max(rate // 8, 150_000))
        return library.HOST_PROGRAMS[name]()
    from ..program.yaml_form import load_program
    return load_program(os.path.join(base, name))


# --- against the topology and the program models --------------------------------------
def _runnable(program: Program, hook: str, target: str, role: str) -> None:
    """The checks a device makes before it loads a program: valid, every op and match kind
    supported by the target, and the generator accepts it."""
    validate(program)
    if target == "bmv2":
        from ..compiler.p4 import P4_CAPABILITIES
        check_target(program, set(P4_CAPABILITIES))
        return
    from ..compiler.ebpf import CAPABILITIES, generate
    try:
        check_target(program, CAPABILITIES[hook])
    except ProgramError as exc:
        raise ProgramError(exc.element, f"{exc.message} on the {hook} hook") from None
    generate(program, hook, role)


def dry_run(sc: Scenario, topo) -> list[tuple[Program, str, str, str]]:
    """Apply the whole timeline to the program models only, with every check a device
    would make, so a bad change fails before any lab. Returns every program the timeline
    will load, as (program, hook, role, device)."""
    fail = lambda where, msg: (_ for _ in ()).throw(ScenarioError(sc.source, where, msg))
    base = os.path.dirname(os.path.abspath(sc.source))
    kinds = {s.name: s.target for s in topo.switches}
    programs = {s.name: library.infrastructure() for s in topo.switches}
    slots: dict[tuple[str, str, str], Program] = {}
    loads: list[tuple[Program, str, str, str]] = []
    inverses: dict[tuple[int, str], Delta] = {}
    entries: set[tuple] = set()
    hosts = {h.name for h in topo.hosts}

    def host(name: str, where: str) -> str:
        if name not in hosts:
            fail(where, f"no host {show(name)} in {topo.name} "
                 f"({'a switch' if name in programs else 'hosts: ' + ', '.join(sorted(hosts))})")
        return name

    for i, step in enumerate(sc.setup):
        where = f"setup[{i}]"
        key = (host(step["host"], f"{where}.host"), step["hook"], step["direction"])
        if key in slots:
            fail(where, f"{key[0]} already runs {slots[key].name} on {key[1]}/{key[2]}")
        try:
            prog = host_program(step["attach"], base)
            _runnable(prog, step["hook"], "ebpf", "host")
        except FlexNetError as exc:
            fail(f"{where}.attach", str(exc))
        slots[key] = prog
    for i, f in enumerate(sc.flows):
        host(f.src, f"traffic.flows[{i}].src")
        host(f.dst, f"traffic.flows[{i}].dst")
    if sc.probes is not None:
        for i, (src, dst) in enumerate(sc.probes.pairs):
            host(src, f"probes.pairs[{i}][0]")
            host(dst, f"probes.pairs[{i}][1]")

    def targets_of(c: Change, where: str) -> list[str]:
        field = f"{where}.{'host' if c.on_host else 'switch'}"
        if c.on_host:
            host(c.device, field)
            return [c.device]
        targets = [n for n in programs if fnmatchcase(n, c.device)]
        if not targets:
            fail(field, f"{'no switch matches' if is_pattern(c.device) else 'no switch'} "
                 f"{show(c.device)} in {topo.name}"
                 + (" (it is a host: name it with `host:`)" if c.device in hosts else ""))
        return targets

    def model(c: Change, i: int, where: str) -> None:
        """One change (or one part of a grouped change #i) applied to the models."""
        field = f"{where}.{'host' if c.on_host else 'switch'}"
        targets = targets_of(c, where)
        try:
            if c.kind in ("delta", "undo"):
                if c.on_host:
                    fail(field, "deltas change switches; a host's program is swapped")
                for t in targets:
                    delta = c.delta if c.kind == "delta" else inverses[(c.undo, t)]
                    try:
                        programs[t], inv = delta.apply(programs[t])
                        _runnable(programs[t], "tc", kinds[t], "switch")
                    except FlexNetError as exc:
                        origin = c.delta_source if c.kind == "delta" else \
                            _delta_part(sc.changes[c.undo], c.device).delta_source
                        what = f"delta {origin}" if c.kind == "delta" else \
                            f"the inverse of changes[{c.undo}] ({origin})"
                        fail(f"{where}.{c.kind}", f"{what} on {t} at t={c.at:g} s: {exc}")
                    if c.kind == "delta":
                        inverses[(i, t)] = inv
                    entries.difference_update({e for e in entries if e[0] == t
                                               and programs[t].table(e[1]) is None})
                    loads.append((programs[t], "tc", "switch", t))
            elif c.kind == "swap":
                key = (c.device, c.hook, c.direction)
                if key not in slots:
                    fail(field, f"{c.device} runs nothing on {c.hook}/{c.direction} at "
                         f"t={c.at:g} s to swap (attach it in setup)")
                try:
                    slots[key] = host_program(c.program, base, c.params)
                    _runnable(slots[key], c.hook, "ebpf", "host")
                except FlexNetError as exc:
                    fail(f"{where}.swap", str(exc))
                loads.append((slots[key], c.hook, "host", c.device))
            elif c.kind == "entry":
                e = dict(c.entry)
                for t in targets:
                    if c.on_host:
                        prog = slots.get((t, c.hook, c.direction))
                        if prog is None:
                            fail(field, f"{t} runs nothing on {c.hook}/{c.direction} at "
                                 f"t={c.at:g} s to take an entry")
                    else:
                        prog = programs[t]
                    try:
                        check_entry(prog, e["table"], e["match"], e["action"], e["args"],
                                    e["priority"])
                    except ProgramError as exc:
                        fail(f"{where}.entry.{exc.element}",
                             f"{t} at t={c.at:g} s: {exc.message}")
                    key = (t if not c.on_host else f"{t}:{c.hook}:{c.direction}",
                           e["table"], e["match"], e["priority"])
                    if key in entries:
                        fail(f"{where}.entry.match", f"{t} already has this entry (an "
                             "earlier change inserted it)")
                    entries.add(key)
        except ScenarioError:
            raise
        except FlexNetError as exc:
            fail(where, f"{', '.join(targets)}: {exc}")

    for i, c in enumerate(sc.changes):
        if c.kind != "group":
            model(c, i, f"changes[{i}]")
            continue
        # one transaction changes each device once: parts must not overlap
        claimed: dict[str, int] = {}
        for k, part in enumerate(c.parts):
            where = f"changes[{i}].parts[{k}]"
            for t in targets_of(part, where):
                slot = f"{t}:{part.hook}:{part.direction}" if part.on_host else t
                if slot in claimed:
                    other = c.parts[claimed[slot]]
                    fail(f"{where}.{'host' if part.on_host else 'switch'}",
                         f"{slot} is also changed by parts[{claimed[slot]}] "
                         f"({show(other.device)}): one transaction changes each device "
                         "once (make it two changes)")
                claimed[slot] = k
            model(part, i, where)
    for i, e in enumerate(sc.expect):
        if "map" in e:
            key = (host(e["host"], f"expect[{i}].host"), e["hook"], e["direction"])
            prog = slots.get(key)
            m = prog.map(e["map"]) if prog else None
            if m is None:
                fail(f"expect[{i}].map", f"{key[0]}'s program on {key[1]}/{key[2]} at the end "
                     f"({prog.name if prog else 'none'}) has no map {show(e['map'])}")
            if m.kind in ("counter", "register") and e["index"] >= m.size:
                fail(f"expect[{i}].index", f"map {m.name} has {m.size} slots")
            if m.kind not in ("counter", "register", "hash"):
                fail(f"expect[{i}].map", f"map {m.name} is a {m.kind}: counters, registers "
                     "and hash maps can be checked")
    return loads


def check_results_dir(results_dir: str, name: str) -> str:
    """The folder the verdict goes to, created now and proven writable, so a run never
    ends with its verdict lost. Returns it."""
    out_dir = os.path.join(results_dir, name)
    probe = os.path.join(out_dir, ".flexnet-write-test")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise ScenarioError("--results", show(results_dir),
                            f"cannot write the report there: {exc.strerror or exc}") from None
    return out_dir
