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
        super().__init__(lab.net, **kwargs)

    def _guard(self, fn, *args):
        try:
            fn(*args)
        except FlexNetError as exc:
            print(f"error: {exc}")

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
                print(f"  {match} -> {e.action}{tuple(e.args) if e.args else '()'}"
                      + (f" prio {e.priority}" if e.priority else ""))
        parts = line.split()
        if len(parts) != 2:
            print("usage: entries SWITCH TABLE")
            return
        self._guard(show, *parts)

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

    def do_routes(self, line):
        """routes SWITCH: the routes the lab computed for the switch."""
        for r in self.lab.routes.get(line.strip(), []):
            print(f"  {r.dst_ip}/{r.prefixlen} -> port {r.port}")
