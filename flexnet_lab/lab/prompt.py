"""The lab prompt: Mininet's CLI plus commands that show what the targets hold."""
from __future__ import annotations

import ipaddress

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
    """Mininet's commands (pingall, h1 ping h2, h1 iperf3 ...) and the lab's own."""

    prompt = "flexnet> "

    def __init__(self, lab, **kwargs):
        self.lab = lab
        self.undo_stack: list = []
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

    def do_tables(self, line):
        """tables SWITCH: the switch's program, its tables and parser states."""
        def show(name):
            sw = self.lab.switch(name)
            prog = sw.program
            print(f"{name} ({sw.kind}) runs program '{prog.name}'")
            print("  parser: " + " -> ".join(s.name for s in prog.parser))
            for t in prog.tables:
                keys = ", ".join(f"{k.field}:{k.kind}" for k in t.keys)
                print(f"  table {t.name} [{keys}] actions {', '.join(t.actions)} "
                      f"default {t.default_action} size {t.size}: {len(sw.entries(t.name))} entries")
        self._guard(show, line.strip())

    def do_entries(self, line):
        """entries SWITCH TABLE: the table's entries, read back from the device."""
        def show(name, table):
            for e in self.lab.switch(name).entries(table):
                match = " ".join(_fmt_ip_match(m) for m in e.match)
                print(f"  {match} -> {e.action}({', '.join(str(a) for a in e.args)})"
                      + (f" prio {e.priority}" if e.priority else ""))
        self._with_args(line, "entries SWITCH TABLE", show, 2, 2)

    def do_counters(self, line):
        """counters SWITCH: per-port packets in/out and packets dropped."""
        def show(name):
            for port, c in self.lab.switch(name).port_counters().items():
                print(f"  port {port}: {c}")
        self._guard(show, line.strip())

    def do_programs(self, line):
        """programs HOST: the eBPF programs attached to the host."""
        host = line.strip()
        found = [(k, dp) for k, dp in self.lab.host_programs.items() if k[0] == host]
        if not found:
            print(f"  {host}: no programs attached")
        for (h, hook, direction), dp in found:
            print(f"  {h} {hook}/{direction}: {dp.program.name} "
                  f"(maps: {', '.join(m.name for m in dp.program.maps)})")

    def do_delta(self, line):
        """delta SWITCH|PATTERN FILE: apply a delta (YAML) live; `undo` reverts the last."""
        def run(target, path):
            from ..program.delta import load_delta
            delta = load_delta(path)
            if any(ch in target for ch in "*?["):
                recs, inverses = self.lab.apply_delta_network(target, delta)
                self.undo_stack.append(("network", inverses))
            else:
                rec, inverse = self.lab.apply_delta(target, delta)
                recs = [rec]
                self.undo_stack.append((target, inverse))
            for rec in recs:
                print(f"  {rec.device}: {rec.kind}, swap {rec.swap_ms:.3f} ms, "
                      f"compile {rec.compile_ms:.0f} ms")
                for line_ in rec.plan.explain().splitlines()[1:]:
                    print(f"    {line_}")
        self._with_args(line, "delta SWITCH|PATTERN FILE", run, 2, 2)

    def do_undo(self, line):
        """undo: revert the last delta applied from this prompt."""
        def run():
            if not self.undo_stack:
                print("  nothing to undo")
                return
            target, inverse = self.undo_stack.pop()
            items = inverse.items() if target == "network" else [(target, inverse)]
            for dev, inv in items:
                rec, _ = self.lab.apply_delta(dev, inv, "undo")
                print(f"  {dev}: {rec.kind}, swap {rec.swap_ms:.3f} ms")
        self._guard(run)

    def do_attach(self, line):
        """attach HOST PROGRAM [xdp|tc] [ingress|egress]: run a host function (library
        name or YAML file) on the host's interface."""
        def run(host, prog, hook="xdp", direction="ingress"):
            from ..verify.scenario import host_program
            dp = self.lab.attach_host_program(host, host_program(prog, "."), hook, direction)
            print(f"  {host} {hook}/{direction}: {dp.program.name}")
        self._with_args(line, "attach HOST PROGRAM [xdp|tc] [ingress|egress]", run, 2, 4)

    def do_swap(self, line):
        """swap HOST PROGRAM [xdp|tc] [ingress|egress]: atomically replace a host function;
        maps both programs have keep their contents."""
        def run(host, prog, hook="xdp", direction="ingress"):
            from ..verify.scenario import host_program
            rec = self.lab.swap_host_program(host, host_program(prog, "."), hook, direction)
            print(f"  {rec.description}: swap {rec.swap_ms:.3f} ms, compile {rec.compile_ms:.0f} ms")
        self._with_args(line, "swap HOST PROGRAM [xdp|tc] [ingress|egress]", run, 2, 4)

    def do_maps(self, line):
        """maps DEVICE MAP: a map's contents (DEVICE: a switch, or HOST[:hook[:direction]])."""
        def run(device, name):
            value = self.lab.device(device).read_map(name)
            items = enumerate(value) if isinstance(value, list) else value.items()
            shown = [(k, v) for k, v in items if v not in (0, (0, 0))]
            for k, v in shown[:40]:
                print(f"  {k}: {v}")
            print(f"  ({len(shown)} non-zero)")
        self._with_args(line, "maps DEVICE MAP", run, 2, 2)

    def do_routes(self, line):
        """routes SWITCH: the routes the lab computed for the switch."""
        for r in self.lab.routes.get(line.strip(), []):
            print(f"  {r.dst_ip}/{r.prefixlen} -> port {r.port}")
