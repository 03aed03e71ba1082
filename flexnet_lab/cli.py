"""The `flexnet` command. The only place that turns the library's errors into messages and
exit codes: 0 success, 1 a check or expectation failed, 2 bad input or a refused change,
3 something to install is missing."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from .errors import EnvironmentMissing, FlexNetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPOLOGY_DIR = os.path.join(ROOT, "topologies")


def _load_topology(name: str):
    from .topology.loader import find_topology, load_topology
    return load_topology(find_topology(name, TOPOLOGY_DIR))


def _terminate_on_sigterm() -> None:
    """SIGTERM (flexnet down) unwinds like Ctrl-C, so the lab's teardown runs."""
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() == owner:  # not in a forked helper process
            raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def cmd_up(args) -> int:
    from .lab.network import Lab
    from .lab.prompt import LabCLI
    from .progress import Progress
    topo = _load_topology(args.topology)
    _terminate_on_sigterm()
    with Lab(topo, progress=Progress(topo.name)) as lab:
        print(f"*** {topo.name}: {len(topo.hosts)} hosts, {len(topo.switches)} switches "
              f"({', '.join(sorted({s.target for s in lab.topology.switches}))}) up in "
              f"{lab.bringup_s:.2f} s, run {lab.tag.run}")
        if args.no_cli:
            print("*** running; stop with `flexnet down` or Ctrl-C")
            while True:
                time.sleep(3600)
        LabCLI(lab)
    return 0


def cmd_check(args) -> int:
    from .lab.network import Lab
    topo = _load_topology(args.topology)
    from .progress import Progress
    _terminate_on_sigterm()
    t0 = time.monotonic()
    lab = Lab(topo, progress=Progress(topo.name))
    with lab:
        result = lab.ping_all()
    from .lab.clean import find_tagged
    leftovers = find_tagged(run=lab.tag.run)
    failed = result["failed"]
    out = {"topology": topo.name, "hosts": len(topo.hosts), "switches": len(topo.switches),
           "bringup_s": round(lab.bringup_s, 3), "pairs": result["sent"],
           "received": result["received"], "loss_pct": result["loss_pct"],
           "failed_count": len(failed), "failed_pairs": failed[:20],
           "retried_pairs": result["retried"], "probes": result["probes"],
           "ping_s": result["elapsed_s"], "total_s": round(time.monotonic() - t0, 2),
           "leftovers": leftovers.summary()}
    print(json.dumps(out, indent=1))
    ok = result["loss_pct"] == 0.0 and leftovers.empty()
    print(f"*** {topo.name}: up in {lab.bringup_s:.2f} s, {result['received']}/{result['sent']}"
          f" pairs answered ({result['retried']} after a retry), "
          f"{result['loss_pct']:.1f}% loss: {'PASS' if ok else 'FAIL'}")
    if failed:
        shown = ", ".join(f"{a}->{b}" for a, b in failed[:20])
        more = f" and {len(failed) - 20} more" if len(failed) > 20 else ""
        print(f"*** unreachable after retries: {shown}{more}")
    return 0 if ok else 1


def cmd_clean(args) -> int:
    from .lab.clean import clean
    removed = clean(run=args.run)
    print("removed: " + ", ".join(f"{v} {k}" for k, v in removed.summary().items()))
    return 0


def cmd_status(args) -> int:
    from .lab.clean import find_tagged
    from .lab.runstate import pid_alive, read_states
    states = read_states()
    if not states:
        print("no lab is running")
    for st in states:
        alive = bool(st.get("pid")) and pid_alive(int(st["pid"]))
        print(f"run {st.get('run')}: topology {st.get('topology', '?')}, "
              f"{st.get('status', '?')}, pid {st.get('pid', '?')} "
              f"({'alive' if alive else 'gone: `flexnet clean` removes what it left'})")
    found = find_tagged(run=args.run)
    print("tagged objects: " + ", ".join(f"{v} {k}" for k, v in found.summary().items()))
    return 0


def cmd_down(args) -> int:
    from .lab.clean import clean
    from .lab.runstate import pid_alive, proc_starttime, read_states
    for st in read_states():
        if args.run and st.get("run") != args.run:
            continue
        pid = int(st.get("pid") or 0)
        if pid and pid_alive(pid) and proc_starttime(pid) == st.get("pid_start"):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not pid_alive(pid):
                    break
                time.sleep(0.1)
        clean(run=st.get("run"))
        print(f"run {st.get('run')} stopped")
    return 0


def cmd_compile(args) -> int:
    from .program.yaml_form import load_program
    program = load_program(args.program)
    os.makedirs(args.output, exist_ok=True)
    if args.target == "ebpf":
        from .compiler.ebpf import generate
        src = generate(program, args.hook, args.role)
        path = os.path.join(args.output, f"{program.name}.{args.hook}.c")
        with open(path, "w") as fh:
            fh.write(src.text)
        print(path)
        return 0
    from .compiler.p4 import write_p4
    for path in write_p4(program, args.output):
        print(path)
    return 0


def cmd_place(args) -> int:
    """Where a tenant function would run, and why (no lab needed)."""
    from .compiler.ebpf import CAPABILITIES
    from .compiler.placement import HOST_STATE_BUDGET, WORK_BUDGET, Device, place
    from .program.yaml_form import load_program
    fn = load_program(args.function)
    topo = _load_topology(args.topology)
    devices = []
    for name in args.on.split(","):
        if topo.is_host(name):
            devices.append(Device(name, "host", frozenset(CAPABILITIES["xdp"]),
                                  HOST_STATE_BUDGET, WORK_BUDGET))
        else:
            topo.switch(name)
            devices.append(Device(name, "switch", frozenset(CAPABILITIES["tc"]),
                                  int(args.switch_state_kb * 1024), WORK_BUDGET))
    print(place(fn, devices).explain())
    return 0


def cmd_run(args) -> int:
    from .verify.scenario import run_scenario
    _terminate_on_sigterm()
    return 0 if run_scenario(args.scenario, TOPOLOGY_DIR, args.results).passed else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flexnet", description="FlexNet Lab: reprogram a "
                                "network of eBPF/P4 switches and hosts while it carries traffic")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("up", help="bring a topology up and open the lab prompt")
    s.add_argument("topology", help="name under topologies/ or a YAML path")
    s.add_argument("--no-cli", action="store_true", help="no prompt: run until `flexnet down`")
    s.set_defaults(func=cmd_up)
    s = sub.add_parser("check", help="bring up, ping all pairs, tear down; exit 0 on 0%% loss")
    s.add_argument("topology")
    s.set_defaults(func=cmd_check)
    for name, what, func in (("down", "stop running labs (SIGTERM, then clean)", cmd_down),
                             ("clean", "remove every object carrying the lab's tag", cmd_clean),
                             ("status", "runs and tagged objects on this machine", cmd_status)):
        s = sub.add_parser(name, help=what)
        s.add_argument("--run", help="only this run id")
        s.set_defaults(func=func)
    s = sub.add_parser("compile", help="write the generated sources of a program")
    s.add_argument("program", help="YAML file or a library program name (infra, acl, ...)")
    s.add_argument("--target", choices=("ebpf", "p4"), required=True)
    s.add_argument("--hook", choices=("tc", "xdp"), default="tc")
    s.add_argument("--role", choices=("switch", "host"), default="switch")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_compile)
    s = sub.add_parser("place", help="where a tenant function would run, and why")
    s.add_argument("function", help="YAML file or a library program name (count_min, ...)")
    s.add_argument("--topology", default="leaf-spine")
    s.add_argument("--on", required=True, help="candidate devices in order, e.g. l1,h8")
    s.add_argument("--switch-state-kb", type=float, default=64,
                   help="tenant state a switch offers (KiB)")
    s.set_defaults(func=cmd_place)
    s = sub.add_parser("run", help="run a scenario and print its verdict")
    s.add_argument("scenario")
    s.add_argument("--results", default="results")
    s.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EnvironmentMissing as exc:
        print(f"flexnet: missing: {exc}", file=sys.stderr)
        return 3
    except FlexNetError as exc:
        print(f"flexnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flexnet: interrupted; the lab was torn down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
