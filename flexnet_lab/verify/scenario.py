"""Scenarios: a topology, traffic, a timeline of changes and expectations, run as one.

```yaml
name: default
topology: leaf-spine
targets: {l1: bmv2}                      # optional: switch (or pattern) -> ebpf | bmv2
setup:                                   # before the traffic starts
  - {host: h8, attach: flow_counter, hook: xdp}            # library name or a YAML path
traffic:
  duration: 14                           # seconds
  baseline: 3                            # first seconds: no change (the machine's own loss)
  flows:
    - {name: udp1, src: h1, dst: h8, proto: udp, rate: 200M}
    - {name: tcp1, src: h2, dst: h7, proto: tcp}
changes:                                 # at t seconds after the traffic starts
  - {at: 4, switch: l1, delta: deltas/acl-udp-9999.yaml}   # or an inline {name, ops}
  - {at: 5, switch: "l*", delta: deltas/shim-parser.yaml}  # every leaf, as one change
  - {at: 6, switch: l1, undo: 0}         # apply the inverse of change #0
  - {at: 8, host: h8, swap: rate_limiter, hook: xdp, rate_mbit: 500}
  - {at: 9, switch: l1, entry: {table: acl, match: [17, 9999], action: drop}}
expect:
  - {flow: udp1, zero_loss: true}        # no loss beyond the baseline around any change
  - {flow: udp9999, lost_at_least: 0.9}  # fraction of the flow dropped (a targeted flow)
  - {reachability: all}                  # ping all after the run
  - {host: h8, map: pkts, index: 0, at_least: 1000}   # a counter reached a value
```
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import yaml

from ..errors import FlexNetError, ScenarioError
from ..program import library
from ..program.delta import Delta, delta_from_dict, load_delta
from ..control.controller import controller_for
from ..program.model import Program
from .traffic import FlowResult, FlowSpec, Traffic
from .verdict import Window, baseline, impacts, locate


# --- the scenario as data ---------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    at: float
    kind: str                     # delta | undo | swap | entry
    device: str                   # switch name, or host
    delta: Delta | None = None
    undo: int | None = None
    program: str | None = None
    hook: str = "xdp"
    direction: str = "ingress"
    params: tuple = ()
    entry: tuple = ()

    def describe(self) -> str:
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
        return topo.with_targets(target)


def _rate(value, where: str, src: str) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    s = str(value).strip().upper()
    mult = {"K": 1e3, "M": 1e6, "G": 1e9}.get(s[-1:], 1)
    try:
        return int(float(s.rstrip("KMG")) * mult)
    except ValueError:
        raise ScenarioError(src, where, f"not a rate: {value!r} (e.g. 200M)") from None


def _need(d: dict, key: str, src: str, where: str):
    if not isinstance(d, dict) or key not in d:
        raise ScenarioError(src, where, f"missing {key!r}")
    return d[key]


def _known(d: dict, keys: set, src: str, where: str) -> None:
    extra = set(d) - keys
    if extra:
        raise ScenarioError(src, f"{where}.{sorted(extra)[0]}", "unknown key")


def load_scenario(path: str) -> Scenario:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ScenarioError(path, "<file>", str(exc)) from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(path, "<yaml>", str(exc)) from exc
    return parse_scenario(data, path)


def parse_scenario(data, src: str) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(src, "<root>", "a scenario is a mapping")
    _known(data, {"name", "topology", "targets", "setup", "traffic", "changes", "expect",
                  "description"}, src, "scenario")
    targets = data.get("targets") or {}
    if not isinstance(targets, dict):
        raise ScenarioError(src, "targets", "a mapping of switch name (or pattern) to target")
    for pattern, t in targets.items():
        if t not in ("ebpf", "bmv2"):
            raise ScenarioError(src, f"targets.{pattern}", f"{t!r}: ebpf or bmv2")
    base = os.path.dirname(os.path.abspath(src))
    traffic = data.get("traffic") or {}
    _known(traffic, {"duration", "baseline", "flows"}, src, "traffic")
    duration = float(traffic.get("duration", 10))
    flows = []
    for i, f in enumerate(traffic.get("flows") or []):
        where = f"traffic.flows[{i}]"
        _known(f, {"name", "src", "dst", "proto", "rate", "port", "length"}, src, where)
        proto = f.get("proto", "udp")
        if proto not in ("udp", "tcp"):
            raise ScenarioError(src, f"{where}.proto", "udp or tcp")
        flows.append(FlowSpec(str(f.get("name", f"flow{i}")), _need(f, "src", src, where),
                              _need(f, "dst", src, where), proto,
                              _rate(f.get("rate", "100M" if proto == "udp" else 0),
                                    f"{where}.rate", src), duration,
                              int(f.get("port", 5201 + i)), int(f.get("length", 1200))))
    changes = tuple(_change(c, i, src, base) for i, c in enumerate(data.get("changes") or []))
    for i, c in enumerate(changes):
        if not 0 <= c.at < duration:
            raise ScenarioError(src, f"changes[{i}].at", f"must be within 0..{duration} s")
        if c.kind == "undo" and not (c.undo is not None and 0 <= c.undo < i
                                     and changes[c.undo].kind == "delta"
                                     and changes[c.undo].device == c.device):
            raise ScenarioError(src, f"changes[{i}].undo", "must name an earlier delta change "
                                "on the same switch (or switch pattern)")
    return Scenario(str(data.get("name", os.path.splitext(os.path.basename(src))[0])), src,
                    str(_need(data, "topology", src, "scenario")),
                    tuple(data.get("setup") or ()), tuple(flows), duration,
                    float(traffic.get("baseline", 2)), changes,
                    tuple(data.get("expect") or ()),
                    tuple((str(k), str(v)) for k, v in targets.items()))


def _change(c, i: int, src: str, base: str) -> Change:
    where = f"changes[{i}]"
    if not isinstance(c, dict):
        raise ScenarioError(src, where, "a change is a mapping")
    _known(c, {"at", "switch", "host", "delta", "undo", "swap", "hook", "direction",
               "rate_mbit", "entry"}, src, where)
    at = float(_need(c, "at", src, where))
    device = c.get("switch") or c.get("host")
    if not device:
        raise ScenarioError(src, where, "names a `switch` or a `host`")
    if "delta" in c:
        d = c["delta"]
        try:
            delta = (load_delta(os.path.join(base, d)) if isinstance(d, str)
                     else delta_from_dict(d, f"{src}: {where}.delta"))
        except FlexNetError as exc:
            raise ScenarioError(src, f"{where}.delta", str(exc)) from exc
        return Change(at, "delta", device, delta=delta)
    if "undo" in c:
        return Change(at, "undo", device, undo=int(c["undo"]))
    if "swap" in c:
        params = (("rate_mbit", c["rate_mbit"]),) if "rate_mbit" in c else ()
        return Change(at, "swap", device, program=str(c["swap"]), hook=c.get("hook", "xdp"),
                      direction=c.get("direction", "ingress"), params=params)
    if "entry" in c:
        e = c["entry"]
        _known(e, {"table", "match", "action", "args", "priority"}, src, f"{where}.entry")
        return Change(at, "entry", device, entry=tuple(sorted(
            {**e, "match": tuple(e.get("match", ())), "args": tuple(e.get("args", ()))}.items())))
    raise ScenarioError(src, where, "needs one of delta, undo, swap, entry")


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


# --- running it -------------------------------------------------------------------------
@dataclass
class Outcome:
    scenario: Scenario
    passed: bool
    rows: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def dry_run(sc: Scenario, topo) -> list[tuple[Program, str, str, str]]:
    """Apply the timeline to the program models only: a bad delta fails before any lab.
    Returns every program the timeline will load, as (program, hook, role, device)."""
    programs = {s.name: library.infrastructure() for s in topo.switches}
    loads: list[tuple[Program, str, str, str]] = []
    inverses: dict[tuple[int, str], Delta] = {}
    nodes = set(topo.node_names())
    for f in sc.flows:
        for end in (f.src, f.dst):
            if not topo.is_host(end) if end in nodes else True:
                raise ScenarioError(sc.source, f"flow {f.name}", f"{end} is not a host")
    for i, c in enumerate(sc.changes):
        where = f"changes[{i}]"
        targets = ([n for n in programs if fnmatchcase(n, c.device)] if _is_pattern(c.device)
                   else [c.device])
        if not targets or any(t not in nodes for t in targets):
            raise ScenarioError(sc.source, where, f"no node {c.device!r} in {topo.name}")
        try:
            if c.kind in ("delta", "undo"):
                for t in targets:
                    if t not in programs:
                        raise ScenarioError(sc.source, where, f"{t} is not a switch")
                    delta = c.delta if c.kind == "delta" else inverses[(c.undo, t)]
                    programs[t], inv = delta.apply(programs[t])
                    if c.kind == "delta":
                        inverses[(i, t)] = inv
                    loads.append((programs[t], "tc", "switch", t))
            elif c.kind == "swap":
                loads.append((host_program(c.program, os.path.dirname(sc.source), c.params),
                              c.hook, "host", c.device))
            elif c.kind == "entry":
                table = dict(c.entry).get("table")
                for t in targets:
                    if t in programs and programs[t].table(table) is None:
                        raise ScenarioError(sc.source, f"{where}.entry.table",
                                            f"{t} will have no table {table!r} at t={c.at}")
        except FlexNetError as exc:
            raise ScenarioError(sc.source, where, str(exc)) from exc
    return loads


def precompile(lab, loads: list[tuple[Program, str, str, str]]) -> float:
    """Compile every program of the timeline before the traffic starts (bcc/clang takes
    0.3-0.6 s of CPU each, p4c about 1 s): during the run a change is only load + swap."""
    from ..compiler.ebpf import generate
    t0 = time.perf_counter()
    for program, hook, role, device in loads:
        switch = lab.switches.get(device)
        if getattr(switch, "kind", "") == "bmv2":
            switch.prepare(program)       # p4c, cached for every bmv2 switch of the lab
        else:
            lab.compiler.compile(generate(program, hook, role).text, ["pipeline"])
    return time.perf_counter() - t0


def run_scenario(path: str, topology_dir: str, results_dir: str = "results",
                 quiet: bool = False) -> Outcome:
    from ..lab.network import Lab
    from ..topology.loader import find_topology, load_topology
    sc = load_scenario(path)
    topo = sc.topology_for(load_topology(find_topology(sc.topology, topology_dir)))
    loads = dry_run(sc, topo)
    base = os.path.dirname(os.path.abspath(path))
    with Lab(topo) as lab:
        ctl = controller_for(lab)
        try:
            for i, step in enumerate(sc.setup):
                ctl.attach(step["host"], host_program(step["attach"], base),
                           step.get("hook", "xdp"), step.get("direction", "ingress"))
            secs = precompile(lab, loads)
            if not quiet:
                print(f"*** {topo.name} up in {lab.bringup_s:.2f} s; {len(loads)} programs of "
                      f"the timeline compiled in {secs:.2f} s; traffic for {sc.duration:g} s")
            outcome = _run_live(lab, ctl, sc, base, quiet)
        finally:
            ctl.close()
    out_dir = os.path.join(results_dir, sc.name)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as fh:
        json.dump(outcome.report, fh, indent=1)
    from .plot import plot_timeline
    plot_timeline(outcome.report, os.path.join(out_dir, "timeline.png"))
    if not quiet:
        print_table(outcome)
        print(f"report: {out_dir}/report.json, plot: {out_dir}/timeline.png")
    return outcome


def _snapshot(ctl) -> dict:
    return {n: ctl.counters(n) for n in ctl.switches("*")}


def _run_live(lab, ctl, sc: Scenario, base: str, quiet: bool) -> Outcome:
    traffic = Traffic(lab, list(sc.flows))
    records, applied, inverses = [], [], {}
    try:
        t0 = traffic.start()
        for i, c in enumerate(sc.changes):
            delay = t0 + c.at - time.time()
            if delay > 0:
                time.sleep(delay)
            before = _snapshot(ctl)
            rec = _apply(ctl, c, i, inverses, base)
            applied.append((c.describe(), rec.at - t0, rec, before))
            if not quiet:
                print(f"  t={rec.at - t0:6.2f}s  {c.describe():40s} {rec.kind:12s} "
                      f"swap {rec.swap_ms:.3f} ms, compile {rec.compile_ms:.0f} ms")
            records.append(rec)
        results = traffic.results()
    finally:
        traffic.stop()
    # counters after the traffic ended: link-level accounting is exact once quiet
    time.sleep(0.2)
    final = _snapshot(ctl)
    reach = lab.ping_all() if any("reachability" in e for e in sc.expect) else None
    host_maps = _host_maps(ctl, sc)
    return _judge(sc, lab, results, applied, final, reach, host_maps)


def _is_pattern(device: str) -> bool:
    return any(ch in device for ch in "*?[")


def _combined(records, device: str, desc: str):
    """One record for a change that hit several switches at once: the slowest switch's
    times, and how far apart the first and the last commit were."""
    from ..plan.execute import ChangeRecord
    first = records[0]
    spread = (max(r.done or r.at for r in records) - first.at) * 1e3
    notes = [f"{len(records)} switches: {', '.join(r.device for r in records)}; all "
             f"prepared first, then committed within {spread:.2f} ms"]
    notes += [f"{r.device}: {n}" for r in records for n in r.notes]
    return ChangeRecord(device, desc, first.kind, at=first.at,
                        compile_ms=max(r.compile_ms for r in records),
                        load_ms=max(r.load_ms for r in records),
                        swap_ms=max(r.swap_ms for r in records), total_ms=first.total_ms,
                        plan=first.plan, notes=notes)


def _apply(ctl, c: Change, i: int, inverses: dict, base: str):
    if c.kind == "delta":
        recs, inverses[i] = ctl.apply_delta(c.device, c.delta, c.describe())
    elif c.kind == "undo":
        recs = ctl.apply_inverses(inverses[c.undo], c.describe())
    elif c.kind == "swap":
        recs = ctl.swap(c.device, host_program(c.program, base, c.params), c.hook, c.direction)
    else:
        e = dict(c.entry)
        t = time.perf_counter()
        recs = ctl.insert_entry(c.device, e["table"], tuple(e["match"]), e["action"],
                                tuple(e.get("args", ())), int(e.get("priority", 0)))
        from ..plan.execute import ChangeRecord
        ms = (time.perf_counter() - t) * 1e3
        recs = [ChangeRecord(c.device, c.describe(), "entries_only", at=time.time(),
                             swap_ms=ms, total_ms=ms, notes=[f"on {', '.join(r.device for r in recs)}"
                                                             " (all or none)"])]
    return recs[0] if len(recs) == 1 else _combined(recs, c.device, c.describe())


def _host_maps(ctl, sc: Scenario) -> dict:
    out = {}
    for e in sc.expect:
        if "host" in e and "map" in e:
            value = ctl.read_map(f"{e['host']}:{e.get('hook', 'xdp')}:"
                                 f"{e.get('direction', 'ingress')}", e["map"])
            idx = int(e.get("index", 0))
            item = value[idx] if isinstance(value, list) else sum(v[0] for v in value.values())
            out[(e["host"], e["map"], idx)] = item[0] if isinstance(item, tuple) else item
    return out


def _judge(sc: Scenario, lab, results: list[FlowResult], applied, final, reach,
           host_maps) -> Outcome:
    changes = [(desc, at) for desc, at, _, _ in applied]
    flows = {r.spec.name: r for r in results}
    first_change = min([at for _, at in changes], default=sc.duration)
    bases = {n: baseline(r, 0.5, min(sc.baseline_s, first_change - 0.3)) for n, r in flows.items()}
    impact = {n: impacts(r, bases[n], changes, Window()) for n, r in flows.items()}
    paths = {n: _flow_nodes(lab, r.spec) for n, r in flows.items()}
    # which switch dropped packets in each change window (drop counters are exact)
    for idx, (desc, at, rec, before) in enumerate(applied):
        after = applied[idx + 1][3] if idx + 1 < len(applied) else final
        where = locate(before, after, [])
        touched = _devices_of(lab, applied[idx][2].device)
        for n in impact:
            impact[n][idx].located = where
            impact[n][idx].on_path = bool(touched & paths[n])
    links = _switch_links(lab)
    rows = []
    for e in sc.expect:
        rows.append(_expectation(e, flows, impact, bases, reach, host_maps))
    passed = all(r["ok"] for r in rows)
    report = {
        "scenario": sc.name, "topology": sc.topology, "passed": passed,
        "duration_s": sc.duration, "baseline_window_s": [0.5, min(sc.baseline_s, first_change - 0.3)],
        "window_s": [-Window().before_s, Window().after_s],
        "changes": [{**rec.to_json(), "at_s": round(at, 3)} for _, at, rec, _ in applied],
        "flows": [r.to_json() for r in results],
        "baselines": [b.to_json() for b in bases.values()],
        "impacts": [i.to_json() for lst in impact.values() for i in lst],
        "expectations": rows,
        "final_counters": {sw: {str(p): c for p, c in cs.items()} for sw, cs in final.items()},
        "link_loss": locate({sw: {p: {"tx_packets": 0, "rx_packets": 0,
                                      "dropped_packets": 0} for p in cs}
                             for sw, cs in final.items()}, final, links),
    }
    return Outcome(sc, passed, rows, report)


TAIL_TOLERANCE = 20  # datagrams iperf3's server may leave unread when the test ends


def _flow_nodes(lab, spec: FlowSpec) -> set[str]:
    """Every node a flow's packets or its acknowledgements cross."""
    from ..topology.routes import path
    return set(path(lab.topology, spec.src, spec.dst, lab.routes)) | \
        set(path(lab.topology, spec.dst, spec.src, lab.routes))


def _devices_of(lab, device: str) -> set[str]:
    """Nodes a change touched: a switch pattern, a switch, or a host's program slot."""
    if _is_pattern(device):
        return {n for n in lab.switches if fnmatchcase(n, device)}
    return {device.split(":")[0].split("-")[0]}


def _switch_links(lab) -> list[tuple]:
    topo = lab.topology
    out = []
    for sw in topo.switches:
        for p in topo.ports(sw.name):
            if not topo.is_host(p.peer_node):
                out.append((sw.name, p.number, p.peer_node, p.peer_number))
    return out


def _expectation(e: dict, flows, impact, bases, reach, host_maps) -> dict:
    if "flow" in e and e["flow"] not in flows:
        return {"expect": e, "ok": False, "detail": f"no flow {e['flow']!r}"}
    if e.get("zero_loss"):
        r = flows[e["flow"]]
        blamed = [i for i in impact[e["flow"]] if i.blamed]
        base = bases[e["flow"]]
        # gaps anywhere in the flow beyond the baseline's rate, or a tail larger than what
        # iperf3 leaves unread at the end of a test, fail it even outside change windows
        allowed_gaps = base.loss_rate * max(r.sent, 1) + 0.5
        tail_ok = r.tail_lost <= max(TAIL_TOLERANCE, r.sent // 10000)
        ok = not blamed and r.error is None and r.gap_lost <= allowed_gaps and tail_ok
        detail = (f"{r.lost} lost of {r.sent} in the run ({r.gap_lost} as gaps, {r.tail_lost} "
                  f"unread at the end); baseline {base.lost} lost of {base.packets}")
        if blamed:
            detail += "; blamed: " + "; ".join(
                f"{b.change} (+{b.excess:.0f} lost{', ' + ', '.join(b.located) if b.located else ''})"
                for b in blamed)
        if r.error:
            detail += f"; iperf3: {r.error}"
        if r.spec.proto == "tcp":
            detail = (f"{r.retransmits} retransmits in the run, baseline "
                      f"{bases[e['flow']].retransmits}; per change (on the flow's path): " +
                      "; ".join(f"{i.change}: {i.retransmits} vs {i.expected_retransmits:.1f}"
                                for i in impact[e["flow"]] if i.on_path))
            if blamed:
                detail += "; blamed: " + "; ".join(
                    f"{b.change} (+{b.excess_retransmits:.0f} retransmits)" for b in blamed)
            ok = r.error is None and r.received > 0 and not blamed
        return {"expect": e, "ok": ok, "detail": detail}
    if "lost_at_least" in e:
        r = flows[e["flow"]]
        frac = r.lost / r.sent if r.sent else (1.0 if r.error else 0.0)
        return {"expect": e, "ok": frac >= float(e["lost_at_least"]),
                "detail": f"{frac:.1%} of the flow lost"}
    if "reachability" in e:
        ok = reach is not None and reach["loss_pct"] == 0.0
        return {"expect": e, "ok": ok,
                "detail": f"{reach['received']}/{reach['sent']} pings" if reach else "not run"}
    if "map" in e:
        v = host_maps.get((e["host"], e["map"], int(e.get("index", 0))), 0)
        return {"expect": e, "ok": v >= int(e.get("at_least", 0)), "detail": f"value {v}"}
    return {"expect": e, "ok": False, "detail": "unknown expectation"}


def print_table(outcome: Outcome) -> None:
    print(f"\nverdict for scenario {outcome.scenario.name}:")
    for r in outcome.rows:
        e = {k: v for k, v in r["expect"].items()}
        print(f"  [{'PASS' if r['ok'] else 'FAIL'}] {json.dumps(e)}: {r['detail']}")
    print(f"scenario {outcome.scenario.name}: {'PASSED' if outcome.passed else 'FAILED'}")
