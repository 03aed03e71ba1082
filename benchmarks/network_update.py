"""Network-wide changes on fat-tree-k4 (20 eBPF switches, 16 hosts), per-packet against
per-device, under UDP flows and oracle probes.

Each change is one transaction through the controller: a delta to all 20 switches (the ACL
table added, or removed again) plus a host-function swap on the tc egress of 4 hosts
(flow_counter <-> count_min), alternating a change and its inverse. Changes go in pairs, a
per-packet pair then a per-device pair, so both levels meet the same traffic in the same
run. UDP flows on 4 multi-hop paths (5 switches each) run through all changes and, before
them, through no change at all (the baseline). Probes on 6 multi-hop paths carry the
version met at every hop in their trailer (verify/oracle.py). Also measured: the
data-plane cost of the version tag (TCP throughput with tagging on in every switch
against off).

--bmv2: the all-bmv2 leaf-spine (6 switches, 8 hosts) instead, where bmv2 is installed: a
delta to all six switches per change (the ACL table added, or removed again; no host
functions: a bmv2 lab's hosts run none here), UDP flows at a rate bmv2 carries without loss,
probes on 6 paths across a spine. A per-packet change on bmv2 loads a pipeline holding both
versions, flips, drains and loads the new program alone (targets/bmv2_two_phase.py).

Prints one JSON object. Usage: python benchmarks/network_update.py [--changes 100] [--bmv2]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flexnet_lab.control.controller import controller_for  # noqa: E402
from flexnet_lab.lab.network import Lab  # noqa: E402
from flexnet_lab.plan.two_phase import link_switches  # noqa: E402
from flexnet_lab.program import library  # noqa: E402
from flexnet_lab.program.delta import load_delta  # noqa: E402
from flexnet_lab.topology import load_topology  # noqa: E402
from flexnet_lab.verify.oracle import Oracle  # noqa: E402
from flexnet_lab.verify.traffic import FlowSpec, Traffic, percentile  # noqa: E402

FUNCTION_HOSTS = ["h1", "h5", "h9", "h13"]          # tc egress functions swapped
FLOWS = [("h1", "h16"), ("h5", "h12"), ("h9", "h4"), ("h13", "h8")]
PROBES = [("h1", "h14"), ("h5", "h10"), ("h9", "h2"), ("h13", "h6"), ("h3", "h11"),
          ("h15", "h7")]
# leaf-spine (--bmv2): every path crosses leaf, spine, leaf
BMV2_FLOWS = [("h1", "h8"), ("h3", "h6"), ("h5", "h2"), ("h7", "h4")]
BMV2_PROBES = [("h1", "h7"), ("h3", "h5"), ("h6", "h2"), ("h8", "h4"), ("h2", "h6"),
               ("h4", "h8")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=100, help="per-packet changes (as many "
                    "per-device ones run beside them)")
    ap.add_argument("--bmv2", action="store_true", help="all-bmv2 leaf-spine instead")
    ap.add_argument("--rate", default=None, help="UDP rate of each flow (40M; --bmv2: 1M)")
    ap.add_argument("--probe-pps", type=float, default=None,
                    help="probes/s on each path (2500; --bmv2: 100)")
    ap.add_argument("--pause-ms", type=float, default=20.0, help="pause between changes")
    args = ap.parse_args()
    # bmv2 here spends ~15 % of a core per 1,000 packets/s: six of them, two shared cores
    args.rate = args.rate or ("1M" if args.bmv2 else "40M")
    args.probe_pps = args.probe_pps or (100.0 if args.bmv2 else 2500.0)
    rate = int(float(args.rate.rstrip("MG")) * (1e9 if args.rate.endswith("G") else 1e6))
    acl = load_delta(os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml"))
    if args.bmv2:
        import shutil
        if not (shutil.which("simple_switch_grpc") and shutil.which("p4c-bm2-ss")):
            print(json.dumps({"error": "--bmv2 needs simple_switch_grpc and p4c-bm2-ss: "
                              "install p4lang-bmv2 and p4lang-p4c"}))
            return 3
    topo = load_topology(os.path.join(ROOT, "topologies", "leaf-spine.yaml" if args.bmv2
                                      else "fat-tree-k4.yaml"))
    with Lab(topo, switch_kind="bmv2" if args.bmv2 else "ebpf") as lab:
        reach = lab.ping_all()
        if reach["loss_pct"]:
            print(json.dumps({"error": "hosts cannot reach each other", "ping": reach}))
            return 1
        ctl = controller_for(lab)
        try:
            return _run(args, lab, ctl, acl, rate)
        finally:
            ctl.close()


def _run(args, lab, ctl, acl, rate: int) -> int:
    kind = "bmv2" if args.bmv2 else "ebpf"
    switches = sorted(n for n, d in ctl.intent.devices.items() if d.kind == kind)
    base = library.infrastructure()
    with_acl = acl.apply(base)[0]
    fc, cm = library.flow_counter(), library.count_min()
    for h in ([] if args.bmv2 else FUNCTION_HOSTS):
        ctl.attach(h, fc, "tc", "egress")
    slots = [] if args.bmv2 else [f"{h}:tc:egress" for h in FUNCTION_HOSTS]
    flows, probes = (BMV2_FLOWS, BMV2_PROBES) if args.bmv2 else (FLOWS, PROBES)

    def after(on: bool) -> dict:
        a = {n: ctl.intent.devices[n].with_program(with_acl if on else base) for n in switches}
        a.update({s: ctl.intent.devices[s].with_program(cm if on else fc) for s in slots})
        return a

    # every variant compiled once (bcc), both levels exercised once
    t = time.perf_counter()
    for level in ("per-device", "per-packet"):
        ctl.change("warm-up", after(True), consistency=level)
        ctl.change("warm-up back", after(False), consistency=level)
    compile_s = time.perf_counter() - t

    dataplane = None if args.bmv2 else _tag_cost(lab, ctl, switches)
    n_total = 2 * args.changes
    per_change_s = 0.4 if args.bmv2 else 0.2    # generous: the flows outlast the changes
    duration = round(n_total * (per_change_s + args.pause_ms / 1e3) + 4, 1)
    specs = [FlowSpec(f"{s}-{d}", s, d, "udp", rate, duration, port=5301 + i)
             for i, (s, d) in enumerate(flows)]
    baseline = _flows(lab, specs, None)

    orc = Oracle(lab, ctl, probes, args.probe_pps)
    update_ms, by_level = [], {"per-packet": [], "per-device": []}

    def changes():
        if not args.bmv2:   # bmv2 switches are processes of normal priority: never starve them
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        gc.disable()
        try:
            for i in range(n_total):
                level = "per-packet" if (i // 2) % 2 == 0 else "per-device"
                on = i % 2 == 0
                t0 = time.perf_counter()
                recs = ctl.change(f"{'acl+cm' if on else 'base+fc'} #{i}", after(on),
                                  consistency=level)
                ms = (time.perf_counter() - t0) * 1e3
                orc.note(f"#{i}", level)
                by_level[level].append((ms, recs))
                time.sleep(args.pause_ms / 1e3)
        finally:
            gc.enable()
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    try:
        orc.start()
        live = _flows(lab, specs, changes)
        orc.stop()
    finally:
        orc.kill()
    rep = orc.report()
    pp = by_level["per-packet"]
    update_ms = [ms for ms, _ in pp]
    phases = [recs[0].phases for _, recs in pp]
    levels = {r.consistency for _, recs in pp for r in recs}
    out = {
        "topology": "leaf-spine" if args.bmv2 else "fat-tree-k4", "switch_kind": kind,
        "switches": len(switches),
        "host_functions": len(slots),
        "changes": len(pp), "changes_per_device": len(by_level["per-device"]),
        "devices_per_change": len(switches) + len(slots),
        "levels_achieved_per_packet": sorted(levels),
        "flows": len(specs), "rate_mbit_each": rate / 1e6, "duration_s": duration,
        "sent": sum(r.sent for r in live), "lost": sum(r.lost for r in live),
        "baseline_sent": sum(r.sent for r in baseline),
        "baseline_lost": sum(r.lost for r in baseline),
        # where the loss was: gaps in a flow, or its tail (sent, never received after the
        # server's last datagram: seen with and without changes, at the flows' end)
        "lost_gaps": sum(r.gap_lost for r in live), "lost_tail": sum(r.tail_lost for r in live),
        "baseline_lost_gaps": sum(r.gap_lost for r in baseline),
        "baseline_lost_tail": sum(r.tail_lost for r in baseline),
        "flow_errors": [r.error for r in live + baseline if r.error],
        "probes": rep["probes_sent"], "probes_placed": rep["probes_placed"],
        "probes_unplaced": rep["probes_unplaced"],
        "probes_lost": rep["probes_lost"], "probes_reordered": rep["probes_reordered"],
        "probes_unknown_version": rep["probes_unknown_version"],
        "mixed_per_packet": rep["mixed_by_level"].get("per-packet", 0),
        "mixed_per_device": rep["mixed_by_level"].get("per-device", 0),
        "probes_per_packet_changes": sum(c["probes"] for c in rep["changes"]
                                         if c["consistency"] == "per-packet"),
        "probes_per_device_changes": sum(c["probes"] for c in rep["changes"]
                                         if c["consistency"] == "per-device"),
        "update_p50_ms": round(percentile(update_ms, 50), 2),
        "update_p99_ms": round(percentile(update_ms, 99), 2),
        "update_note": ("a whole per-packet change as the controller makes it: intent "
                        "checked and stored, both pipelines of each of the 6 bmv2 switches "
                        "prepared (compiled once, cached), install (the two-version pipeline "
                        "loaded, all switches at once), flip, drain, retire (the new program "
                        "loaded alone), change committed in the store" if args.bmv2 else
                        "a whole per-packet change as the controller makes it: intent checked "
                        "and stored, 24 pipelines loaded (kernel verifier), install, flip, "
                        "drain, retire, change committed in the store"),
        "two_phase_p50_ms": round(percentile([p["total_ms"] for p in phases], 50), 2),
        "prepare_p50_ms": round(percentile([p["prepare_ms"] for p in phases], 50), 2),
        "transition_p50_ms": round(percentile([p["install_ms"] + p["flip_ms"] + p["drain_ms"]
                                               + p["retire_ms"] for p in phases], 50), 2),
        "flip_p50_ms": round(percentile([p["flip_ms"] for p in phases], 50), 3),
        "drain_p50_ms": round(percentile([p["drain_ms"] for p in phases], 50), 2),
        "drain_p99_ms": round(percentile([p["drain_ms"] for p in phases], 99), 2),
        "drain_bounded": sum(1 for p in phases if p["drain_bounded"]),
        "old_packets_after_flip_max": max(p["old_packets_after_flip"] for p in phases),
        "per_device_update_p50_ms": round(percentile([ms for ms, _ in
                                                      by_level["per-device"]], 50), 2),
        "compile_all_variants_s": round(compile_s, 2),
        "dataplane": dataplane,
    }
    print(json.dumps(out, indent=1))
    ok = (out["lost"] <= out["baseline_lost"] and out["mixed_per_packet"] == 0
          and out["mixed_per_device"] > 0
          and out["update_p50_ms"] <= (250 if args.bmv2 else 50))
    return 0 if ok else 1


def _flows(lab, specs, during):
    traffic = Traffic(lab, specs)
    try:
        traffic.start()
        time.sleep(0.5)
        if during:
            during()
        return traffic.results()
    finally:
        traffic.stop()


def _tag_cost(lab, ctl, switches: list[str]) -> dict:
    """TCP throughput h2 -> h15 (5 switches) with tagging off and on in every switch (on:
    every hop pops and pushes the S-tag and counts per version), median of 3 x 3 s."""
    handles = {n: ctl.handle(n) for n in switches}
    link_switches(handles, ctl.fabric)
    res = {}
    for label, on in (("off", False), ("on", True), ("off_again", False)):
        for h in handles.values():
            h.set_tagging(on)
        runs = []
        for _ in range(3):
            r = _flows(lab, [FlowSpec("tcp", "h2", "h15", "tcp", 0, 3.0, port=5401)], None)[0]
            runs.append(r.bps / 1e9)
        res[f"tcp_gbps_tagging_{label}"] = round(sorted(runs)[1], 2)
    for h in handles.values():
        h.set_tagging(False)
    res["tag_cost_pct"] = round(100 * (1 - res["tcp_gbps_tagging_on"] /
                                       max(1e-9, (res["tcp_gbps_tagging_off"]
                                                  + res["tcp_gbps_tagging_off_again"]) / 2)), 1)
    return res


if __name__ == "__main__":
    sys.exit(main())
