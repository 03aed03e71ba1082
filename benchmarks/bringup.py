"""Bring-up time, all-pairs ping and TCP throughput of a lab with eBPF switches, against the
same topology with Linux bridges (static forwarding entries along the same routes).

    python benchmarks/bringup.py [--topology fat-tree-k4] [--runs 3] [--seconds 5]

Brings the topology up `--runs` times with eBPF switches (median bring-up time), pings all
pairs on the first run, and on the last run also brings the bridge baseline up next to it
and measures iperf3 TCP throughput from --src to --dst (by default the first and the last
host: h1 -> h16 in fat-tree-k4, in different pods of any fat tree) in both, alternating
eBPF and bridge, `--repeats` times each (median). Progress of each bring-up and of the
all-pairs check goes to stderr.
Client on core 0, server on core 1 (iperf3 -A 0,1), as ../shared/FACTS.md recommends.

Prints one JSON object on stdout (everything else goes to stderr). Needs root.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flexnet_lab.lab.network import Lab  # noqa: E402
from flexnet_lab.progress import Progress  # noqa: E402
from flexnet_lab.topology import find_topology, load_topology  # noqa: E402
from flexnet_lab.topology.routes import path as route_path  # noqa: E402

TOPOLOGY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "topologies")
PORT = 5201


def log(msg: str) -> None:
    print(f"bringup: {msg}", file=sys.stderr, flush=True)


def affinity() -> str:
    """iperf3 -A: client on core 0, server on core 1 (both on 0 with a single core)."""
    return "0,1" if (os.cpu_count() or 1) >= 2 else "0,0"


def wait_listening(node, port: int, server: subprocess.Popen, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"iperf3 server on {node.name} exited with {server.returncode}: "
                               f"{server.stderr.read().decode(errors='replace')}")
        out = node.cmd(f"ss -Hltn 'sport = :{port}'")
        if f":{port}" in out:
            return
        time.sleep(0.05)
    raise RuntimeError(f"iperf3 server on {node.name} not listening on {port} after {timeout} s")


def iperf(lab: Lab, src: str, dst: str, seconds: int) -> dict:
    """One iperf3 TCP test src -> dst; the server is gone afterwards on every path."""
    client, server_node = lab.net.get(src), lab.net.get(dst)
    server = server_node.popen(["iperf3", "-s", "-1", "-p", str(PORT)])
    proc = None
    try:
        wait_listening(server_node, PORT, server)
        proc = client.popen(["iperf3", "-c", server_node.IP(), "-t", str(seconds), "-J",
                             "-A", affinity(), "-p", str(PORT)])
        out, err = proc.communicate(timeout=seconds + 30)
        try:
            result = json.loads(out)
        except ValueError:
            raise RuntimeError(f"iperf3 client: exit {proc.returncode}: "
                               f"{err.decode(errors='replace')}") from None
        if "error" in result:
            raise RuntimeError(f"iperf3 client: {result['error']}")
        end = result["end"]
        return {"gbps": end["sum_received"]["bits_per_second"] / 1e9,
                "retransmits": end["sum_sent"].get("retransmits")}
    finally:
        for p in (proc, server):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)


def ping_pair(lab: Lab, src: str, dst: str) -> None:
    """One ping before measuring (resolves ARP, proves the path)."""
    out = lab.net.get(src).cmd(f"ping -c1 -W2 {lab.net.get(dst).IP()}")
    if " 0% packet loss" not in out:
        raise RuntimeError(f"{src} cannot ping {dst} in run {lab.tag.run}: {out.strip()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--topology", default="fat-tree-k4", help="name in topologies/ or a path")
    p.add_argument("--runs", type=int, default=3, help="bring-ups with eBPF switches")
    p.add_argument("--seconds", type=int, default=5, help="length of one iperf3 test")
    p.add_argument("--repeats", type=int, default=5, help="iperf3 tests per switch kind")
    p.add_argument("--src", default="h1")
    p.add_argument("--dst", help="default: the topology's last host")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.runs < 1 or args.repeats < 1 or args.seconds < 1:
        p.error("--runs, --repeats and --seconds must be at least 1")
    if os.geteuid() != 0:
        print("bringup: needs root (network namespaces, BPF)", file=sys.stderr)
        return 3

    topo = load_topology(find_topology(args.topology, TOPOLOGY_DIR))
    args.dst = args.dst or topo.hosts[-1].name
    for h in (args.src, args.dst):
        if not any(x.name == h for x in topo.hosts):
            p.error(f"no host {h} in {topo.name}")

    t_start = time.perf_counter()
    bringups: list[float] = []
    result: dict = {"topology": topo.name, "hosts": len(topo.hosts),
                    "switches": len(topo.switches),
                    # other work on the machine skews every figure: say how busy it was
                    "loadavg_1m_before": round(os.getloadavg()[0], 2)}
    samples: dict[str, list[dict]] = {"ebpf": [], "bridge": []}
    notes: list[str] = []
    # Python-level output (anything a library prints) to stderr: stdout carries the JSON
    with contextlib.redirect_stdout(sys.stderr):
        for i in range(args.runs):
            last = i == args.runs - 1
            with contextlib.ExitStack() as stack:
                lab = stack.enter_context(Lab(topo, switch_kind="ebpf",
                                              progress=Progress(f"{topo.name} run {i + 1}")))
                bringups.append(lab.bringup_s)
                log(f"run {i + 1}/{args.runs}: eBPF lab {lab.tag.run} up in "
                    f"{lab.bringup_s:.2f} s")
                if i == 0:
                    ping = lab.ping_all()
                    result["pingall_loss_pct"] = ping["loss_pct"]
                    result["pingall_pairs"] = ping["sent"]
                    result["pingall_failed"] = ping["failed"][:10]
                    result["pingall_retried"] = ping["retried"]
                    result["pingall_s"] = ping["elapsed_s"]
                    log(f"ping all: {ping['received']}/{ping['sent']}, "
                        f"{ping['loss_pct']:.1f}% loss, {ping['retried']} after a retry, "
                        f"{ping['elapsed_s']:.2f} s")
                if not last:
                    continue
                hops = route_path(lab.topology, args.src, args.dst, lab.routes)
                ping_pair(lab, args.src, args.dst)  # ARP through the eBPF switches
                # the baseline: Linux bridges, static forwarding along the same routes
                bridge = stack.enter_context(Lab(topo, switch_kind="bridge",
                                                 progress=Progress(f"{topo.name} bridges")))
                log(f"bridge lab {bridge.tag.run} up in {bridge.bringup_s:.2f} s")
                result["bridge_bringup_s"] = round(bridge.bringup_s, 3)
                bridge_hops = route_path(bridge.topology, args.src, args.dst, bridge.routes)
                if bridge_hops != hops:
                    raise RuntimeError(f"paths differ: eBPF {hops}, bridge {bridge_hops}")
                labs = {"ebpf": lab, "bridge": bridge}
                for kind, one in labs.items():
                    ping_pair(one, args.src, args.dst)
                for rep in range(args.repeats):  # alternate: drift hits both kinds alike
                    for kind, one in labs.items():
                        sample = iperf(one, args.src, args.dst, args.seconds)
                        samples[kind].append(sample)
                        log(f"iperf3 {kind} #{rep + 1}: {sample['gbps']:.2f} Gbit/s, "
                            f"{sample['retransmits']} retransmits")
                result["path"] = hops

    ebpf = statistics.median(s["gbps"] for s in samples["ebpf"])
    bridge = statistics.median(s["gbps"] for s in samples["bridge"])
    result.update({
        "bringup_s_median": round(statistics.median(bringups), 3),
        "bringup_s_runs": [round(b, 3) for b in bringups],
        "ebpf_gbps": round(ebpf, 3),
        "bridge_gbps": round(bridge, 3),
        "ratio": round(ebpf / bridge, 3) if bridge else None,
        "ebpf_gbps_samples": [round(s["gbps"], 3) for s in samples["ebpf"]],
        "bridge_gbps_samples": [round(s["gbps"], 3) for s in samples["bridge"]],
        "ebpf_retransmits": [s["retransmits"] for s in samples["ebpf"]],
        "bridge_retransmits": [s["retransmits"] for s in samples["bridge"]],
        "iperf": {"protocol": "tcp", "src": args.src, "dst": args.dst,
                  "seconds": args.seconds, "repeats": args.repeats, "affinity": affinity(),
                  "port": PORT, "statistic": "median of end.sum_received.bits_per_second",
                  "order": "alternating ebpf, bridge"},
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "notes": notes,
        "total_s": round(time.perf_counter() - t_start, 1),
    })
    text = json.dumps(result)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as fh:
            fh.write(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
