"""UDP datagrams iperf3 leaves unread at the end of a flow, with the lab's fix (the UDP
server at real-time priority, verify/traffic.py Flow.start_server) against the baseline
(the server at normal priority), runs of both interleaved in one lab. Prints one JSON
object.

    python benchmarks/udp_tail.py [--runs 20] [--rate 40M] [--duration 4]

Leaf-spine (eBPF), 4 UDP flows across a spine (h1->h8, h3->h6, h5->h2, h7->h4), no change
at all: every datagram lost is the machine's or iperf3's. Per run and flow: sent, gaps
(sequence gaps the server saw), tail (sent minus received minus gaps: after the server's
last datagram), and what the receiving host's own counters say about the tail: frames its
interface received beyond the datagrams sent (the control connection's few segments, the
same with or without a tail: the tail arrived) and UDP NoPorts (datagrams that came after
the server closed its socket).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flexnet_lab.lab.network import Lab  # noqa: E402
from flexnet_lab.topology import load_topology  # noqa: E402
from flexnet_lab.verify.traffic import FlowSpec, Traffic  # noqa: E402

FLOWS = [("h1", "h8"), ("h3", "h6"), ("h5", "h2"), ("h7", "h4")]


def _host_counters(lab, host: str) -> dict:
    """UDP counters and the frames received by the host's interface, in its namespace."""
    h = lab.host(host)
    lines = [ln.split() for ln in h.cmd("grep Udp: /proc/net/snmp").splitlines()]
    out = {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}
    for ln in h.cmd("cat /proc/net/dev").splitlines():
        name, _, rest = ln.partition(":")
        if name.strip() == h.defaultIntf().name:
            out["rx_frames"] = int(rest.split()[1])
    return out


def _run(lab, specs, rt: bool) -> list[dict]:
    before = {d: _host_counters(lab, d) for _, d in FLOWS}
    traffic = Traffic(lab, specs, rt_receiver=rt)
    try:
        traffic.start()
        results = traffic.results()
    finally:
        traffic.stop()
    after = {d: _host_counters(lab, d) for _, d in FLOWS}
    rows = []
    for r in results:
        a, b = after[r.spec.dst], before[r.spec.dst]
        rows.append({"sent": r.sent, "gaps": r.gap_lost, "tail": r.tail_lost,
                     "receiver_rt": r.receiver_rt, "error": r.error,
                     "rx_frames_beyond_sent": a["rx_frames"] - b["rx_frames"] - r.sent,
                     "no_ports": a["NoPorts"] - b["NoPorts"],
                     "rcvbuf_errors": a["RcvbufErrors"] - b["RcvbufErrors"]})
    return rows


def _summary(runs: list[list[dict]]) -> dict:
    flows = [f for run in runs for f in run]
    tails = sorted(f["tail"] for f in flows)
    return {"runs": len(runs), "flows": len(flows), "sent": sum(f["sent"] for f in flows),
            "lost_gaps": sum(f["gaps"] for f in flows),
            "lost_tail": sum(tails), "tail_max_per_flow": tails[-1] if tails else 0,
            "runs_with_tail": sum(1 for run in runs if any(f["tail"] for f in run)),
            "flows_with_tail": sum(1 for t in tails if t),
            "receiver_rt": sorted({f["receiver_rt"] for f in flows}),
            "no_ports": sum(f["no_ports"] for f in flows),
            "rcvbuf_errors": sum(f["rcvbuf_errors"] for f in flows),
            # the control connection's segments and ARP: the same whether a flow has a
            # tail or not, so the tail's datagrams reached the receiving host
            "rx_frames_beyond_sent_with_tail": sorted({f["rx_frames_beyond_sent"]
                                                       for f in flows if f["tail"]}),
            "rx_frames_beyond_sent_without_tail": sorted({f["rx_frames_beyond_sent"]
                                                          for f in flows if not f["tail"]}),
            "errors": [f["error"] for f in flows if f["error"]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="runs of each kind")
    ap.add_argument("--rate", default="40M", help="each flow's rate (bit/s, K/M/G)")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    args = ap.parse_args()
    mult = {"K": 1e3, "M": 1e6, "G": 1e9}.get(args.rate[-1:].upper(), 1)
    rate = int(float(args.rate.rstrip("KMGkmg")) * mult)
    specs = [FlowSpec(f"{s}-{d}", s, d, "udp", rate, args.duration, port=5301 + i)
             for i, (s, d) in enumerate(FLOWS)]
    with Lab(load_topology(os.path.join(ROOT, "topologies", "leaf-spine.yaml")),
             switch_kind="ebpf") as lab:
        reach = lab.ping_all()
        if reach["loss_pct"]:
            print(json.dumps({"error": "hosts cannot reach each other", "ping": reach}))
            return 1
        runs = {"normal": [], "rt": []}
        for _ in range(args.runs):        # interleaved: both see the same machine
            for kind in runs:
                runs[kind].append(_run(lab, specs, kind == "rt"))
    out = {"topology": "leaf-spine", "flows_per_run": len(FLOWS),
           "rate_mbit_each": rate / 1e6, "duration_s": args.duration,
           "load_average": [round(x, 2) for x in os.getloadavg()],
           "baseline_normal_priority": _summary(runs["normal"]),
           "rt_receiver": _summary(runs["rt"])}
    print(json.dumps(out, indent=1))
    ok = out["rt_receiver"]["lost_tail"] <= out["baseline_normal_priority"]["lost_tail"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
