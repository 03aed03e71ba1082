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

from .errors import EnvironmentMissing, FlexNetError, LabError, OptionError
from .inputs import one_line, show

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPOLOGY_DIR = os.path.join(ROOT, "topologies")


def _load_topology(name: str, p4: str | None = None):
    """A topology by name, YAML path, or the coursework form (a topology.json or an
    exercise folder; `--p4` names the program its files leave to a Makefile)."""
    from .topology.coursework import is_coursework, load_coursework
    from .topology.loader import find_topology, load_topology
    if is_coursework(name):
        return load_coursework(name, p4)
    if p4 is not None:
        raise OptionError("--p4", "names the program of a coursework topology.json or "
                          "exercise folder; a YAML topology names it per switch (p4: ...)")
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
    if args.resume:
        return _resume(args.resume, args.store)
    if not args.topology:
        raise FlexNetError("up: name a topology (or --resume RUN)")
    topo = _load_topology(args.topology, args.p4)   # before mininet: bad input fails fast
    from .control.channel import ControlClient, socket_path
    from .control.daemon import Supervisor
    from .lab.network import Lab
    from .lab.prompt import LabCLI
    from .lab.runstate import signals_deferred
    from .progress import Progress
    _terminate_on_sigterm()
    with Lab(topo, progress=Progress(topo.name)) as lab:
        for note in lab.notes:
            print(f"*** note: {note}")
        store = os.path.abspath(args.store) if args.store else None
        sup = Supervisor(lab.tag.dir, lab.tag.env(), store=store)
        try:
            with signals_deferred():   # a Ctrl-C now waits until the hand-over is done
                lab.release_devices()  # the controller process drives them from now on
                sup.start()
            print(f"*** {topo.name}: {len(topo.hosts)} hosts, {len(topo.switches)} switches "
                  f"({', '.join(sorted({s.target for s in lab.topology.switches}))}) up in "
                  f"{lab.bringup_s:.2f} s, run {lab.tag.run}; controller on "
                  f"{socket_path(lab.tag.dir)}")
            if args.no_cli:
                print("*** running; `flexnet app ...` from another terminal; stop with "
                      "`flexnet down` or Ctrl-C", flush=True)
                while True:
                    time.sleep(3600)
            LabCLI(lab, ControlClient(socket_path(lab.tag.dir)))
        finally:
            sup.stop()
    return 0


def _run_dir(run: str | None) -> str:
    """The folder of a running lab: the one named, or the only one."""
    from .lab.runstate import pid_alive, read_states, runs_dir
    states = [st for st in read_states() if st.get("pid") and pid_alive(int(st["pid"]))]
    if run:
        if not any(st.get("run") == run for st in read_states()):
            raise FlexNetError(f"--run: no run {run[:12]!r} on this machine (`flexnet status`)")
        return os.path.join(runs_dir(), run)
    if len(states) != 1:
        raise FlexNetError("no lab is running (`flexnet up TOPOLOGY --no-cli`)" if not states
                           else f"{len(states)} labs are running: say which with --run "
                           f"({', '.join(st['run'] for st in states)})")
    return os.path.join(runs_dir(), states[0]["run"])


def _resume(run: str, store: str | None = None) -> int:
    """Run the controller of a lab whose controller is not running (in the foreground)."""
    from .control.channel import ControlClient, socket_path
    from .control.daemon import serve
    from .errors import ControlError
    run_dir = _run_dir(run)
    try:
        ControlClient(socket_path(run_dir), timeout_s=2).call("ping")
        raise FlexNetError(f"run {run}: its controller is running already")
    except ControlError:
        pass
    print(f"*** resuming the controller of run {run}; Ctrl-C stops it (the lab stays up)",
          flush=True)
    return serve(run_dir, store=os.path.abspath(store) if store else None)


def cmd_app(args) -> int:
    from .control.channel import ControlClient, socket_path
    from .lab.appcmd import AppCommandError, app_request
    try:
        op, call_args = app_request(args.words)
    except AppCommandError as exc:
        print(f"usage: flexnet {exc}", file=sys.stderr)
        return 2
    client = ControlClient(socket_path(_run_dir(args.run)))
    result = client.call(op, **call_args)
    if op == "events":
        for e in result:
            print(f"{e['id']:6d} {time.strftime('%H:%M:%S', time.localtime(e['at']))}"
                  f".{int(e['at'] * 1000) % 1000:03d} {e['kind']:8s} {e['device']:16s} "
                  f"{e['detail']}")
        return 0
    print(json.dumps(result, indent=1, default=str))
    return 0


def cmd_check(args) -> int:
    topo = _load_topology(args.topology, args.p4)
    from .lab.network import Lab
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
           "leftovers": leftovers.summary(),
           "notes": lab.notes}
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
    for st in states:
        _controller_status(st)
    found = find_tagged(run=args.run)
    print("tagged objects: " + ", ".join(f"{v} {k}" for k, v in found.summary().items()))
    return 0


def _controller_status(st: dict) -> None:
    from .control.channel import ControlClient, socket_path
    from .errors import ControlError
    from .lab.runstate import runs_dir
    path = socket_path(os.path.join(runs_dir(), str(st.get("run"))))
    if not os.path.exists(path):
        return
    try:
        s = ControlClient(path, timeout_s=3).call("status")
    except ControlError as exc:
        print(f"  controller: not answering ({exc})")
        return
    print(f"  controller: {s['devices']} devices, apps {', '.join(s['apps']) or 'none'}, "
          f"{s['passes']} reconcile passes")
    for e in s["last_events"][-5:]:
        print(f"    {time.strftime('%H:%M:%S', time.localtime(e['at']))} {e['kind']} "
              f"{e['device']}: {e['detail']}")


def cmd_down(args) -> int:
    from .lab.clean import clean
    from .lab.runstate import pid_alive, proc_starttime, read_states
    states = [st for st in read_states() if not args.run or st.get("run") == args.run]
    if args.run and not states:
        known = ", ".join(str(st.get("run")) for st in read_states()) or "none"
        raise LabError(f"--run {show(args.run)}: no such run (running: {known})")
    if not states:
        print("no lab is running")
    for st in states:
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


def _output_dir(path: str) -> str:
    """-o DIR: a folder that exists or can be made; never an existing file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OptionError("-o", f"{show(path)} exists and is not a folder (give a folder)")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError("-o", f"{show(path)}: cannot create a folder under {show(parent)}")
    return path


def cmd_compile(args) -> int:
    from .program.validate import check_target
    from .program.yaml_form import load_program
    program = load_program(args.program)
    if args.target == "ebpf":
        from .compiler.ebpf import CAPABILITIES, generate
        try:
            check_target(program, CAPABILITIES[args.hook])
        except FlexNetError as exc:
            raise OptionError("--hook", f"{args.hook} cannot run program {program.name}: "
                              f"{exc}") from None
        src = generate(program, args.hook, args.role)
        path = os.path.join(_output_dir(args.output), f"{program.name}.{args.hook}.c")
        _make_dir(args.output)
        with open(path, "w") as fh:
            fh.write(src.text)
        print(path)
        return 0
    from .compiler.p4 import P4_CAPABILITIES, write_p4
    try:
        check_target(program, set(P4_CAPABILITIES))
    except FlexNetError as exc:
        raise OptionError("--target", f"p4 cannot run program {program.name}: {exc}") from None
    _make_dir(_output_dir(args.output))
    for path in write_p4(program, args.output):
        print(path)
    return 0


def _make_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OptionError("-o", f"{show(path)}: {exc.strerror}") from None


def cmd_place(args) -> int:
    """Where a tenant function would run, and why (no lab needed)."""
    from .compiler.ebpf import CAPABILITIES
    from .compiler.placement import HOST_STATE_BUDGET, WORK_BUDGET, Device, place
    from .program.yaml_form import load_program
    fn = load_program(args.function)
    topo = _load_topology(args.topology)
    if not 0 <= args.switch_state_kb <= 1 << 20:
        raise OptionError("--switch-state-kb", f"{args.switch_state_kb:g} is out of range "
                          "0..1048576 KiB")
    devices = []
    names = args.on.split(",")
    if not all(names) or len(set(names)) != len(names):
        raise OptionError("--on", f"{show(args.on)}: a comma-separated list of distinct "
                          "device names")
    for name in names:
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
    from .progress import Progress
    from .verify.scenario import run_scenario
    _terminate_on_sigterm()
    name = os.path.splitext(os.path.basename(args.scenario))[0]
    outcome = run_scenario(args.scenario, TOPOLOGY_DIR, args.results,
                           progress=Progress(name))
    if outcome.failed_change:
        print(f"flexnet: error: {args.scenario}: {outcome.failed_change} (the report says so)",
              file=sys.stderr)
        return 2
    return 0 if outcome.passed else 1


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (exit 2, like every refused input)."""

    def error(self, message: str):
        self.exit(2, f"flexnet: error: {self.prog}: {one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flexnet", description="FlexNet Lab: reprogram a "
                                "network of eBPF/P4 switches and hosts while it carries traffic")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("up", help="bring a topology up and open the lab prompt")
    s.add_argument("topology", nargs="?", help="name under topologies/, a YAML path, or a "
                   "coursework topology.json / exercise folder")
    s.add_argument("--p4", metavar="PROG.p4", help="coursework: the P4 program of switches "
                   "the files do not give one")
    s.add_argument("--no-cli", action="store_true", help="no prompt: run until `flexnet down`")
    s.add_argument("--store", metavar="PATH", help="the controller's intent store (SQLite; "
                   "default RUN_DIR/intent.db)")
    s.add_argument("--resume", metavar="RUN", help="run the controller of a running lab "
                   "whose controller is not running (it adopts the devices as they are)")
    s.set_defaults(func=cmd_up)
    s = sub.add_parser("app", help="apps by URI on a running lab: deploy|remove|show|list|"
                       "migrate|scale|events")
    s.add_argument("--run", help="the run (when several labs are up); before the verb")
    s.add_argument("words", nargs=argparse.REMAINDER,
                   help="e.g. deploy flexnet://acme/cm count_min --on l1,h8")
    s.set_defaults(func=cmd_app)
    s = sub.add_parser("check", help="bring up, ping all pairs, tear down; exit 0 on 0%% loss")
    s.add_argument("topology")
    s.add_argument("--p4", metavar="PROG.p4", help="coursework: the P4 program of switches "
                   "the files do not give one")
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
        print(f"flexnet: missing: {one_line(exc)}", file=sys.stderr)
        return 3
    except FlexNetError as exc:
        print(f"flexnet: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flexnet: interrupted; the lab was torn down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
