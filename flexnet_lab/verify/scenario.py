"""Scenarios: a topology, traffic, a timeline of changes and expectations, run as one.

```yaml
name: default
topology: leaf-spine
targets: {l1: bmv2}                      # optional: switch (or pattern) -> ebpf | bmv2
setup:                                   # before the traffic starts
  - {host: h8, attach: flow_counter, hook: xdp}            # library name or a YAML path
  - {host: h1, attach: flow_counter, hook: tc, direction: egress}
traffic:
  duration: 14                           # seconds
  baseline: 3                            # first seconds: no change (the machine's own loss)
  flows:
    - {name: udp1, src: h1, dst: h8, proto: udp, rate: 200M}
    - {name: tcp1, src: h2, dst: h7, proto: tcp}
probes: {pairs: [[h1, h8], [h3, h6]], pps: 2000}   # optional: the consistency oracle's
                                         # probe streams (verify/oracle.py)
changes:                                 # at t seconds after the traffic starts
  - {at: 4, switch: l1, delta: deltas/acl-udp-9999.yaml}   # or an inline {name, ops}
  - {at: 5, switch: "l*", delta: deltas/shim-parser.yaml}  # every leaf, as one change
  - {at: 6, switch: l1, undo: 0}         # apply the inverse of change #0
  - {at: 8, host: h8, swap: rate_limiter, hook: xdp, rate_mbit: 500}
  - {at: 9, switch: l1, entry: {table: acl, match: [17, 9999], action: drop}}
  - {at: 10, switch: "*", delta: deltas/vlan-parser.yaml, consistency: per-packet,
     expect: {mixed: 0}}                 # achieved per-packet; no probe met two versions
  - at: 11                               # parts: ONE controller change (a transaction:
    consistency: per-packet              # every part or none) at one level; a part is a
    parts:                               # change without at/expect; each device once
      - {switch: "*", undo: 5}
      - {host: h1, swap: count_min, hook: tc, direction: egress}
    expect: {mixed: 0}
expect:                                  # (expect on a change: consistency, mixed, lost at
                                         #  most N; mixed_at_least N)
  - {consistency: per-packet, mixed: 0}  # every change asking per-packet, as above
  - {consistency: per-device, mixed_at_least: 1}   # the oracle sees per-device mixes
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

from ..errors import FlexNetError, LabError
from ..program.model import Program
from .scenario_file import (Change, Scenario, check_results_dir, dry_run, host_program,
                            is_pattern, load_scenario, parse_scenario)
from .traffic import FlowResult, FlowSpec, Traffic
from .verdict import (Window, baseline, blame_stop, impacts, judge_consistency, locate,
                      stopped_at)

__all__ = ["Change", "Scenario", "Outcome", "dry_run", "host_program", "load_scenario",
           "parse_scenario", "precompile", "run_scenario"]


# --- running it -------------------------------------------------------------------------
@dataclass
class Outcome:
    scenario: Scenario
    passed: bool
    rows: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    failed_change: str | None = None   # a change a device refused during the run, and why


def precompile(lab, loads: list[tuple[Program, str, str, str]], progress=None) -> float:
    """Compile every program of the timeline before the traffic starts (bcc/clang takes
    0.3-0.6 s of CPU each, p4c about 1 s): during the run a change is only load + swap."""
    from ..compiler.ebpf import generate
    from ..progress import Silent
    progress = progress or Silent()
    progress.step("compiling the timeline's programs", len(loads))
    t0 = time.perf_counter()
    for program, hook, role, device in loads:
        progress.advance()
        switch = lab.switches.get(device)
        if getattr(switch, "kind", "") == "bmv2":
            switch.prepare(program)       # p4c, cached for every bmv2 switch of the lab
        else:
            lab.compiler.compile(generate(program, hook, role).text, ["pipeline"])
    return time.perf_counter() - t0


def prepare_scenario(path: str, topology_dir: str, results_dir: str | None = None):
    """Everything checked before a lab starts: the file, the topology, the whole timeline
    against the program models, the results folder. Returns (scenario, topology, loads,
    output folder or None)."""
    from ..topology.loader import load_topology
    sc = load_scenario(path)
    topo = sc.topology_for(load_topology(_topology_file(sc, topology_dir)))
    loads = dry_run(sc, topo)
    out_dir = check_results_dir(results_dir, sc.name) if results_dir is not None else None
    return sc, topo, loads, out_dir


def _topology_file(sc: Scenario, topology_dir: str):
    """A topology name (topologies/), or a path: relative to the scenario's folder first."""
    from ..topology.loader import find_topology
    near = os.path.join(os.path.dirname(os.path.abspath(sc.source)), sc.topology)
    if os.sep in sc.topology and not os.path.isabs(sc.topology) and os.path.isfile(near):
        return find_topology(near, topology_dir)
    return find_topology(sc.topology, topology_dir)


def run_scenario(path: str, topology_dir: str, results_dir: str = "results",
                 quiet: bool = False, progress=None) -> Outcome:
    """progress: a flexnet_lab.progress.Progress for bring-up and compiling (or silent)."""
    sc, topo, loads, out_dir = prepare_scenario(path, topology_dir, results_dir)
    from ..lab.network import Lab    # mininet: imported once the input is known good
    base = os.path.dirname(os.path.abspath(path))
    from ..control.controller import controller_for
    with Lab(topo, progress=progress) as lab:
        lab.keep_dir = out_dir         # capture: true keeps its pcaps in out_dir/pcap
        ctl = controller_for(lab)      # every change goes through the run's controller
        try:
            for i, step in enumerate(sc.setup):
                ctl.attach(step["host"], host_program(step["attach"], base), step["hook"],
                           step["direction"])
            secs = precompile(lab, loads, progress)
            if progress is not None:
                progress.end()
            if not quiet:
                print(f"*** {topo.name} up in {lab.bringup_s:.2f} s; {len(loads)} programs of "
                      f"the timeline compiled in {secs:.2f} s; traffic for {sc.duration:g} s")
            outcome = _run_live(lab, ctl, sc, base, quiet)
        finally:
            ctl.close()
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


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def _run_live(lab, ctl, sc: Scenario, base: str, quiet: bool) -> Outcome:
    traffic = Traffic(lab, list(sc.flows))
    orc = None
    if sc.probes is not None:
        from .oracle import Oracle
        orc = Oracle(lab, ctl, list(sc.probes.pairs), sc.probes.pps)
    records, applied, inverses, indices = [], [], {}, []
    failed, oracle = None, None
    try:
        if orc is not None:
            orc.start()
        t0 = traffic.start()
        for i, c in enumerate(sc.changes):
            _sleep_until(t0 + c.at)
            before = _snapshot(ctl)
            try:
                rec = _apply(ctl, c, i, inverses, base)
            except FlexNetError as exc:
                # every change is all-or-nothing, so the network still runs what it ran;
                # later changes may build on this one, so none is applied
                failed = {"index": i, "change": c.describe(), "at_s": round(time.time() - t0, 3),
                          "error": str(exc), "skipped": len(sc.changes) - i - 1}
                if orc is not None:   # what was undone runs versions no snapshot saw
                    orc.note(f"refused changes[{i}]", "-")
                if not quiet:
                    print(f"  t={failed['at_s']:6.2f}s  {c.describe():40s} REFUSED: {exc}")
                break
            if orc is not None:
                orc.note(f"changes[{i}]", rec.consistency)
            applied.append((c.describe(), rec.at - t0, rec, before))
            indices.append(i)
            if not quiet:
                level = rec.consistency if rec.consistency == c.consistency else \
                    f"{rec.consistency} (asked {c.consistency})"
                ph = rec.phases
                step = (f"flip {ph['flip_ms']:.3f} ms, drain {ph['drain_ms']:.1f} ms" if ph
                        else f"swap {rec.swap_ms:.3f} ms")
                print(f"  t={rec.at - t0:6.2f}s  {c.describe():40s} {rec.kind:12s} "
                      f"{step}, compile {rec.compile_ms:.0f} ms, {level}")
            records.append(rec)
        _sleep_until(t0 + sc.duration)
        results = traffic.results()
        if orc is not None:
            orc.stop()
            oracle = orc.report()
    finally:
        if orc is not None:
            orc.kill()
        traffic.stop()
    # counters after the traffic ended: link-level accounting is exact once quiet
    time.sleep(0.2)
    final = _snapshot(ctl)
    reach = lab.ping_all() if any("reachability" in e for e in sc.expect) else None
    host_maps = _host_maps(ctl, sc)
    outcome = _judge(sc, lab, results, applied, final, reach, host_maps, failed,
                     _change_rows(sc, applied, indices, oracle), oracle)
    return outcome


def _change_rows(sc: Scenario, applied, indices: list[int], oracle: dict | None) -> list[dict]:
    """Per applied change: the level asked and achieved, and the oracle's figures."""
    by_label = {row["change"]: row for row in (oracle or {}).get("changes", [])}
    rows = []
    for (desc, _, rec, _), i in zip(applied, indices):
        fig = by_label.get(f"changes[{i}]")
        rows.append({"index": i, "change": desc, "requested": sc.changes[i].consistency,
                     "achieved": rec.consistency, "notes": rec.notes,
                     "oracle": None if fig is None else
                     {k: fig[k] for k in ("probes", "single", "mixed", "lost", "reordered")}})
    return rows


def _is_pattern(device: str) -> bool:
    return is_pattern(device)


def _combined(records, device: str, desc: str):
    """One record for a change that hit several switches at once: the slowest switch's
    times, and how far apart the first and the last commit were."""
    from ..plan.execute import ChangeRecord
    first = records[0]
    spread = (max(r.done or r.at for r in records) - first.at) * 1e3
    phased = any(r.phases for r in records)
    notes = [f"{len(records)} devices: {', '.join(r.device for r in records)}; all "
             + ("changed in two phases (install, flip, drain, retire)" if phased else
                f"prepared first, then committed within {spread:.2f} ms")]
    notes += [f"{r.device}: {n}" for r in records for n in r.notes]
    # one device changed per-device makes the whole change per-device (plan/two_phase.py)
    level = "per-device" if any(r.consistency == "per-device" for r in records) else \
        records[0].consistency
    return ChangeRecord(device, desc, first.kind, at=first.at,
                        compile_ms=max(r.compile_ms for r in records),
                        load_ms=max(r.load_ms for r in records),
                        swap_ms=max(r.swap_ms for r in records), total_ms=first.total_ms,
                        plan=first.plan, notes=notes, consistency=level,
                        done=max(r.done or r.at for r in records),
                        phases=next((r.phases for r in records if r.phases), {}))


def _apply(ctl, c: Change, i: int, inverses: dict, base: str):
    """One change of the timeline through the controller: on every device it names, or
    (refused) on none. inverses: (change index, switch or pattern) -> each switch's inverse
    delta, for later undos."""
    if c.kind == "group":
        recs = _apply_group(ctl, c, i, inverses, base)
    elif c.kind == "delta":
        recs, inverses[(i, c.device)] = ctl.apply_delta(c.device, c.delta, c.describe(),
                                                         consistency=c.consistency)
    elif c.kind == "undo":
        recs = ctl.apply_inverses(inverses[(c.undo, c.device)], c.describe(),
                                  consistency=c.consistency)
    elif c.kind == "swap":
        recs = ctl.swap(c.device, host_program(c.program, base, c.params), c.hook, c.direction,
                        consistency=c.consistency)
    else:
        e = dict(c.entry)
        target = f"{c.device}:{c.hook}:{c.direction}" if c.on_host else c.device
        t = time.perf_counter()
        recs = ctl.insert_entry(target, e["table"], tuple(e["match"]), e["action"],
                                tuple(e["args"]), int(e["priority"]),
                                consistency=c.consistency)
        ms = (time.perf_counter() - t) * 1e3
        for r in recs:
            r.kind, r.swap_ms, r.total_ms = "entries_only", ms, ms
    return _combined(recs, c.device, c.describe()) if len(recs) > 1 else recs[0]


def _apply_group(ctl, c: Change, i: int, inverses: dict, base: str):
    """A grouped change: every part planned by the controller (nothing applied), the
    device intents merged, then one controller change at the group's level, so every
    part happens or none does."""
    after, made = {}, {}
    for k, p in enumerate(c.parts):
        if p.kind == "delta":
            part, made[(i, p.device)] = ctl.plan_delta(p.device, p.delta)
        elif p.kind == "undo":
            part = ctl.plan_inverses(inverses[(p.undo, p.device)])
        elif p.kind == "swap":
            part = ctl.plan_swap(p.device, host_program(p.program, base, p.params), p.hook,
                                 p.direction)
        else:
            e = dict(p.entry)
            part = ctl.plan_entry(f"{p.device}:{p.hook}:{p.direction}" if p.on_host
                                  else p.device, e["table"], tuple(e["match"]), e["action"],
                                  tuple(e["args"]), int(e["priority"]))
        twice = sorted(after.keys() & part.keys())
        if twice:   # dry_run refuses this before any lab; the controller's view decides
            raise LabError(f"changes[{i}].parts[{k}] changes {', '.join(twice)} again: one "
                           "transaction changes each device once")
        after.update(part)
    recs = ctl.change(c.describe(), after, consistency=c.consistency)
    inverses.update(made)    # only once the change is made: a refused one has no undo
    return recs


def _host_maps(ctl, sc: Scenario) -> dict:
    out = {}
    for e in sc.expect:
        if "host" in e and "map" in e:
            idx = int(e.get("index", 0))
            try:
                value = ctl.read_map(f"{e['host']}:{e['hook']}:{e['direction']}", e["map"])
            except FlexNetError as exc:   # e.g. the swap that brings the map was refused
                out[(e["host"], e["map"], idx)] = f"not read: {exc}"
                continue
            item = value[idx] if isinstance(value, list) else sum(v[0] for v in value.values())
            out[(e["host"], e["map"], idx)] = item[0] if isinstance(item, tuple) else item
    return out


def _judge(sc: Scenario, lab, results: list[FlowResult], applied, final, reach,
           host_maps, failed: dict | None, change_rows: list[dict],
           oracle: dict | None) -> Outcome:
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
    # a flow cut off for good (a black hole) is blamed on the change that cut it, even
    # when its loss shows only as datagrams that never arrived, outside any window
    stops = {}
    for n, r in flows.items():
        stop = stopped_at(r, sc.duration)
        if stop is None or not r.sent:
            continue
        stops[n] = stop
        idx = blame_stop(r, stop, [(i.change, i.at_s, i.on_path) for i in impact[n]])
        if idx is not None:
            impact[n][idx].cut = max(1, r.sent - r.received) if r.spec.proto == "udp" else 1
    links = _switch_links(lab)
    targeted = {e["flow"] for e in sc.expect if "lost_at_least" in e}
    rows = [_flow_ran(r, r.spec.name in targeted, stops.get(r.spec.name), impact[r.spec.name])
            for r in results]
    if failed:
        rows.append({"expect": {"change": failed["index"]}, "ok": False,
                     "detail": f"{failed['change']} refused at t={failed['at_s']:g} s: "
                               f"{failed['error']}; {failed['skipped']} later changes not run"})
    rows += _consistency_rows(sc, change_rows)
    for e in sc.expect:
        if "consistency" in e:
            level = e["consistency"]
            ok, detail = judge_consistency(e, [r for r in change_rows
                                               if r["requested"] == level], level)
            rows.append({"expect": e, "ok": ok, "detail": detail})
            continue
        rows.append(_expectation(e, flows, impact, bases, reach, host_maps))
    passed = all(r["ok"] for r in rows)
    report = {
        "scenario": sc.name, "topology": sc.topology, "passed": passed,
        "failed_change": failed,
        "duration_s": sc.duration, "baseline_window_s": [0.5, min(sc.baseline_s, first_change - 0.3)],
        "window_s": [-Window().before_s, Window().after_s],
        "changes": [{**rec.to_json(), "at_s": round(at, 3), "index": row["index"],
                     # first to last commit: where a per-device change can mix versions
                     "commit_spread_ms": round(max(0.0, rec.done - rec.at) * 1e3, 3)
                     if rec.done else None,
                     "requested": row["requested"], "oracle": row["oracle"],
                     # a grouped change: its parts, made as this one change
                     "parts": [p.describe() for p in sc.changes[row["index"]].parts]}
                    for (_, at, rec, _), row in zip(applied, change_rows)],
        "oracle": None if oracle is None else {
            **{k: v for k, v in oracle.items() if k != "changes"},
            "pairs": [list(p) for p in sc.probes.pairs], "pps": sc.probes.pps},
        "flows": [r.to_json() for r in results],
        "baselines": [b.to_json() for b in bases.values()],
        "impacts": [i.to_json() for lst in impact.values() for i in lst],
        "expectations": rows,
        "final_counters": {sw: {str(p): c for p, c in cs.items()} for sw, cs in final.items()},
        "link_loss": locate({sw: {p: {"tx_packets": 0, "rx_packets": 0,
                                      "dropped_packets": 0} for p in cs}
                             for sw, cs in final.items()}, final, links),
    }
    return Outcome(sc, passed, rows, report,
                   failed_change=(f"changes[{failed['index']}] ({failed['change']}): "
                                  f"{failed['error']}") if failed else None)


def _consistency_rows(sc: Scenario, change_rows: list[dict]) -> list[dict]:
    """Each change's own expectation ({consistency, mixed, ...} on the change)."""
    ran = {r["index"]: r for r in change_rows}
    out = []
    for i, c in enumerate(sc.changes):
        if not c.expect:
            continue
        e = dict(c.expect)
        ok, detail = judge_consistency(e, [ran[i]] if i in ran else [])
        out.append({"expect": {"change": i, **e}, "ok": ok, "detail": f"{c.describe()}: {detail}"})
    return out


def _flow_ran(r: FlowResult, targeted: bool, stop: float | None, impact) -> dict:
    """Every flow must have run, expectation or not: no error, something sent, and
    something delivered unless the scenario means to drop it (lost_at_least)."""
    problems = []
    if r.error:
        problems.append(f"iperf3: {r.error}")
    if not r.sent:
        problems.append("sent nothing")
    elif not r.received and not targeted:
        problems.append(f"nothing of {r.sent} {'datagrams' if r.spec.proto == 'udp' else 'bytes'}"
                        " arrived (black-holed)")
    elif stop is not None and not targeted:
        cut = [i.change for i in impact if i.cut]
        problems.append(f"stopped getting through at t={stop:.1f} s"
                        + (f" after {cut[0]}" if cut else ""))
    return {"expect": {"flow": r.spec.name, "ran": True}, "ok": not problems,
            "detail": "; ".join(problems) or f"{r.sent} sent, {r.received} received"}


TAIL_TOLERANCE = 20  # datagrams iperf3's server may leave unread when the test ends


def _flow_nodes(lab, spec: FlowSpec) -> set[str]:
    """Every node a flow's packets or its acknowledgements cross."""
    from ..topology.routes import path
    return set(path(lab.topology, spec.src, spec.dst, lab.routes)) | \
        set(path(lab.topology, spec.dst, spec.src, lab.routes))


def _devices_of(lab, device: str) -> set[str]:
    """Nodes a change touched: a switch pattern, a switch, a host's program slot, or
    those of a grouped change's parts (comma-separated)."""
    if "," in device:     # a grouped change: its parts' devices
        return set().union(*(_devices_of(lab, d) for d in device.split(",")))
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
        ok = (not blamed and r.error is None and r.sent > 0 and r.received > 0
              and r.gap_lost <= allowed_gaps and tail_ok)
        detail = (f"{r.lost} lost of {r.sent} in the run ({r.gap_lost} as gaps, {r.tail_lost} "
                  f"unread at the end); baseline {base.lost} lost of {base.packets}")
        if blamed:
            detail += "; blamed: " + "; ".join(
                f"{b.change} (+{b.excess:.0f} lost{', flow cut off' if b.cut else ''}"
                f"{', ' + ', '.join(b.located) if b.located else ''})"
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
                    f"{b.change} (" + ("flow cut off" if b.cut else
                                       f"+{b.excess_retransmits:.0f} retransmits") + ")"
                    for b in blamed)
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
        if isinstance(v, str):
            return {"expect": e, "ok": False, "detail": v}
        return {"expect": e, "ok": v >= int(e.get("at_least", 0)), "detail": f"value {v}"}
    return {"expect": e, "ok": False, "detail": "unknown expectation"}


def print_table(outcome: Outcome) -> None:
    print(f"\nverdict for scenario {outcome.scenario.name}:")
    for r in outcome.rows:
        e = {k: v for k, v in r["expect"].items()}
        print(f"  [{'PASS' if r['ok'] else 'FAIL'}] {json.dumps(e)}: {r['detail']}")
    orc = outcome.report.get("oracle")
    if orc:
        print(f"oracle: {orc['probes_sent']} probes on {len(orc['pairs'])} paths, "
              f"{orc['probes_placed']} placed, {orc['probes_lost']} lost; mixed by level: "
              + ", ".join(f"{k} {v}" for k, v in orc["mixed_by_level"].items() if k != "-"))
    print(f"scenario {outcome.scenario.name}: {'PASSED' if outcome.passed else 'FAILED'}")
