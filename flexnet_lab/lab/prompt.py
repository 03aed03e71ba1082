"""The lab prompt: Mininet's CLI plus commands that show what the targets hold."""
from __future__ import annotations

import ipaddress
import json
import os

from mininet.cli import CLI

from ..errors import FlexNetError


def _fmt_match(m) -> str:
    if isinstance(m, tuple):
        v, extra = m
        return f"{v:#x}/{extra:#x}" if extra > 128 else f"{v:#x}/{extra}"
    return f"{m:#x}"


def _fmt_ip_match(m) -> str:
    if isinstance(m, tuple) and m[1] <= 32 and m[0] < 1 << 32:
        return f"{ipaddress.IPv4Address(m[0])}/{m[1]}"
    return _fmt_match(m)


class LabCLI(CLI):
    """Mininet's commands (pingall, h1 ping h2, h1 iperf3 ...) and the lab's own. Every
    lab command goes to the run's controller over its control channel (`control`: an
    object with call(op, **args), e.g. control.channel.ControlClient)."""

    prompt = "flexnet> "

    def __init__(self, lab, control, **kwargs):
        self.lab = lab
        self.control = control
        super().__init__(lab.net, **kwargs)

    def _guard(self, fn, *args):
        try:
            fn(*args)
        except FlexNetError as exc:
            print(f"error: {exc}")

    def _with_args(self, line: str, usage: str, fn, least: int, most: int) -> None:
        """Run fn on the line's words when there are least..most of them, else show usage."""
        parts = line.split()
        if not least <= len(parts) <= most:
            print(f"usage: {usage}")
            return
        self._guard(fn, *parts)

    def _call(self, op: str, **args):
        return self.control.call(op, **args)

    def do_tables(self, line):
        """tables SWITCH: the switch's program, its tables and parser states."""
        def show(name):
            d = self._call("tables", device=name)
            print(f"{d['device']} ({d['kind']}) runs program '{d['program']}'")
            print("  parser: " + " -> ".join(d["parser"]))
            for t in d["tables"]:
                print(f"  table {t['name']} [{', '.join(t['keys'])}] actions "
                      f"{', '.join(t['actions'])} default {t['default']} size {t['size']}: "
                      f"{t['entries']} entries")
        self._with_args(line, "tables SWITCH", show, 1, 1)

    def do_entries(self, line):
        """entries SWITCH TABLE: the table's entries, read back from the device."""
        def show(name, table):
            for e in self._call("entries", device=name, table=table):
                match = " ".join(_fmt_ip_match(tuple(m) if isinstance(m, list) else m)
                                 for m in e["match"])
                print(f"  {match} -> {e['action']}({', '.join(str(a) for a in e['args'])})"
                      + (f" prio {e['priority']}" if e["priority"] else ""))
        self._with_args(line, "entries SWITCH TABLE", show, 2, 2)

    def do_counters(self, line):
        """counters SWITCH: per-port packets in/out and packets dropped."""
        def show(name):
            for port, c in self._call("counters", device=name).items():
                print(f"  port {port}: {c}")
        self._with_args(line, "counters SWITCH", show, 1, 1)

    def do_programs(self, line):
        """programs HOST: the eBPF programs attached to the host."""
        def show(host):
            found = self._call("programs", host=host)
            if not found:
                print(f"  {host}: no programs attached")
            for slot, prog in sorted(found.items()):
                print(f"  {slot}: {prog}")
        self._with_args(line, "programs HOST", show, 1, 1)

    def do_delta(self, line):
        """delta [--consistency per-device|per-packet] SWITCH|PATTERN FILE: apply a delta
        (YAML) live, per-packet: every packet meets the old or the new programs on its whole
        path (two-phase update); `undo` reverts the last."""
        usage = "delta [--consistency per-device|per-packet] SWITCH|PATTERN FILE"
        words = line.split()
        level = "per-device"
        if "--consistency" in words:
            i = words.index("--consistency")
            if i + 1 >= len(words):
                print(f"usage: {usage}")
                return
            level = words[i + 1]
            del words[i:i + 2]

        def run(target, path):
            phases_shown = False
            for rec in self._call("delta", target=target, path=os.path.abspath(path),
                                  consistency=level):
                print(f"  {rec['device']}: {rec['kind']}, {rec['consistency']}, swap "
                      f"{rec['swap_ms']:.3f} ms, compile {rec['compile_ms']:.0f} ms")
                for line_ in rec["plan"][1:] + rec["notes"]:
                    print(f"    {line_}")
                if rec["phases"] and not phases_shown:
                    phases_shown = True
                    ph = rec["phases"]
                    print("  phases: " + ", ".join(f"{k[:-3]} {ph[k]:.2f} ms" for k in (
                        "prepare_ms", "install_ms", "flip_ms", "drain_ms", "retire_ms")))
        self._with_args(" ".join(words), usage, run, 2, 2)

    def do_undo(self, line):
        """undo: revert the last delta applied through the controller."""
        def run():
            recs = self._call("undo")
            if not recs:
                print("  nothing to undo")
            for rec in recs:
                print(f"  {rec['device']}: {rec['kind']}, swap {rec['swap_ms']:.3f} ms")
        self._guard(run)

    def do_attach(self, line):
        """attach HOST PROGRAM [xdp|tc] [ingress|egress]: run a host function (library
        name or YAML file) on the host's interface."""
        def run(host, prog, hook="xdp", direction="ingress"):
            prog = prog if "/" not in prog and not prog.endswith(".yaml") else os.path.abspath(prog)
            self._call("attach", host=host, program=prog, hook=hook, direction=direction)
            print(f"  {host} {hook}/{direction}: {os.path.basename(prog)}")
        self._with_args(line, "attach HOST PROGRAM [xdp|tc] [ingress|egress]", run, 2, 4)

    def do_swap(self, line):
        """swap HOST PROGRAM [xdp|tc] [ingress|egress]: atomically replace a host function;
        maps both programs have keep their contents."""
        def run(host, prog, hook="xdp", direction="ingress"):
            prog = prog if "/" not in prog and not prog.endswith(".yaml") else os.path.abspath(prog)
            for rec in self._call("swap", host=host, program=prog, hook=hook,
                                  direction=direction):
                print(f"  {rec['description']}: swap {rec['swap_ms']:.3f} ms, "
                      f"compile {rec['compile_ms']:.0f} ms")
        self._with_args(line, "swap HOST PROGRAM [xdp|tc] [ingress|egress]", run, 2, 4)

    def do_maps(self, line):
        """maps DEVICE MAP: a map's contents (DEVICE: a switch, or HOST[:hook[:direction]])."""
        def run(device, name):
            value = self._call("maps", device=device, map=name)
            items = (enumerate(value["items"]) if value["kind"] == "array"
                     else [(tuple(k) if isinstance(k, list) else k, tuple(v))
                           for k, v in value["items"]])
            shown = [(k, v) for k, v in items if v not in (0, [0, 0], (0, 0))]
            for k, v in shown[:40]:
                print(f"  {k}: {v}")
            print(f"  ({len(shown)} non-zero)")
        self._with_args(line, "maps DEVICE MAP", run, 2, 2)

    def do_routes(self, line):
        """routes SWITCH: the routes the lab computed for the switch."""
        def run(name):
            for ip, plen, port in self._call("routes", switch=name):
                print(f"  {ip}/{plen} -> port {port}")
        self._with_args(line, "routes SWITCH", run, 1, 1)

    def do_app(self, line):
        """app deploy URI FUNCTION|--delta FILE [--on DEVICES] [--serves SRC,DST]
        [--replicas N] | app remove|show URI | app list | app migrate URI --to DEVICE |
        app scale URI --to N | app events: apps by URI, through the controller."""
        from .appcmd import AppCommandError, app_request
        def run(*words):
            try:
                op, args = app_request(list(words))
            except AppCommandError as exc:
                print(f"usage: {exc}")
                return
            print(json.dumps(self._call(op, **args), indent=1, default=str))
        self._guard(run, *line.split())
