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
            if d["parser"]:
                print("  parser: " + " -> ".join(d["parser"]))
            for note in d.get("notes", []):
                print(f"  ({note})")
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
                # a switch running its own P4 program shows its P4 counters (or a note)
                print(f"  port {port}: {c}" if port.isdigit() else f"  {port}: {c}")
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
        """delta [--consistency per-device|per-packet|per-flow] SWITCH|PATTERN FILE: apply a
        delta (YAML) live, per-packet: every packet meets the old or the new programs on its
        whole path (two-phase update); per-flow: a flow keeps the version it started with
        until it is idle; `undo` reverts the last."""
        usage = "delta [--consistency per-device|per-packet|per-flow] SWITCH|PATTERN FILE"
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
                    if "idle_ms" in ph:   # per-flow: the learn wait and the idle time
                        print(f"  per-flow: learn {ph['learn_ms']:.1f} ms, idle "
                              f"{ph['idle_ms']:g} ms, old-version packets after the flip "
                              f"{ph['old_packets_after_flip']}")
        self._with_args(" ".join(words), usage, run, 2, 2)

    def do_undo(self, line):
        """undo: revert the last delta applied through the controller."""
        def run():
            recs = self._call("undo")
            if not recs:
                print("  nothing to undo")
            for rec in recs:
                print(f"  {rec['device']}: {rec['kind']}, {rec['consistency']}, "
                      f"swap {rec['swap_ms']:.3f} ms")
        self._guard(run)

    @staticmethod
    def _options(line: str, names: tuple[str, ...]) -> tuple[list[str], dict]:
        """Words and --name VALUE options of a command line."""
        words, opts = line.split(), {}
        for n in names:
            if f"--{n}" in words:
                i = words.index(f"--{n}")
                if i + 1 >= len(words):
                    raise ValueError(f"--{n} needs a value")
                opts[n] = words[i + 1]
                del words[i:i + 2]
        return words, opts

    @staticmethod
    def _path(prog: str) -> str:
        """File arguments go to the controller as absolute paths (it runs elsewhere)."""
        items = prog.split(",")
        return ",".join(i if "/" not in i and not i.endswith((".yaml", ".o"))
                        else os.path.abspath(i) for i in items)

    def _hook_command(self, line: str, usage: str, op: str, options: tuple[str, ...]):
        try:
            words, opts = self._options(line, options)
        except ValueError as exc:
            print(f"usage: {usage} ({exc})")
            return None
        if not 2 <= len(words) <= 4:
            print(f"usage: {usage}")
            return None
        host, prog = words[0], self._path(words[1])
        hook = words[2] if len(words) > 2 else "xdp"
        direction = words[3] if len(words) > 3 else "ingress"
        if "at" in opts:
            if not opts["at"].isdigit():
                print(f"usage: {usage} (--at takes a position 0, 1, ...)")
                return None
            opts["at"] = int(opts["at"])
        recs = None
        try:
            recs = self._call(op, host=host, program=prog, hook=hook, direction=direction,
                              **opts)
        except FlexNetError as exc:
            print(f"error: {exc}")
        return recs, host, prog, hook, direction

    def do_attach(self, line):
        """attach HOST PROGRAM[,PROGRAM...] [xdp|tc] [ingress|egress] [--section NAME]
        [--at N]: run host functions (library name, YAML file, or a compiled ELF object
        `prog.o`) on the host's interface; A,B runs A then B on the hook; on a hook that
        runs functions, one more goes last (or at position N)."""
        usage = ("attach HOST PROGRAM[,PROGRAM...] [xdp|tc] [ingress|egress] "
                 "[--section NAME] [--at N]")
        out = self._hook_command(line, usage, "attach", ("section", "at"))
        if out and out[0] is not None:
            _, host, prog, hook, direction = out
            print(f"  {host} {hook}/{direction}: "
                  + ", ".join(os.path.basename(p) for p in prog.split(",")))

    def do_swap(self, line):
        """swap HOST PROGRAM [xdp|tc] [ingress|egress] [--section NAME] [--fn NAME]:
        atomically replace a host function (one of a hook's list with --fn); maps of the
        same name, type and size keep their contents.
        swap SWITCH NEW.p4 [NEW-RUNTIME.json]: replace a switch's own P4 program live
        (bmv2's hitless swap); entries of tables whose name, keys and actions survive are
        carried, the rest come from the runtime file."""
        words = line.split()
        if len(words) >= 2 and words[1].endswith(".p4"):
            if len(words) > 3:
                print("usage: swap SWITCH NEW.p4 [NEW-RUNTIME.json]")
                return
            def run():
                recs = self._call("swap_p4", switch=words[0],
                                  program=os.path.abspath(words[1]),
                                  runtime=os.path.abspath(words[2]) if len(words) > 2 else None)
                for rec in recs:
                    print(f"  {rec['description']}: swap {rec['swap_ms']:.1f} ms "
                          f"(save + entries + commit), load check {rec['load_ms']:.0f} ms")
                    for note in rec.get("notes", []):
                        print(f"    {note}")
            self._guard(run)
            return
        usage = "swap HOST PROGRAM [xdp|tc] [ingress|egress] [--section NAME] [--fn NAME]"
        out = self._hook_command(line, usage, "swap", ("section", "fn"))
        for rec in (out[0] or []) if out else []:
            print(f"  {rec['description']}: swap {rec['swap_ms']:.3f} ms, "
                  f"compile {rec['compile_ms']:.0f} ms, load {rec['load_ms']:.1f} ms")
            for note in rec.get("notes", []):
                print(f"    {note}")

    def do_detach(self, line):
        """detach HOST [xdp|tc] [ingress|egress] [--fn NAME]: take the hook's program (or
        one function of its list) off."""
        try:
            words, opts = self._options(line, ("fn",))
        except ValueError as exc:
            print(f"usage: detach HOST [xdp|tc] [ingress|egress] [--fn NAME] ({exc})")
            return
        if not 1 <= len(words) <= 3:
            print("usage: detach HOST [xdp|tc] [ingress|egress] [--fn NAME]")
            return
        hook = words[1] if len(words) > 1 else "xdp"
        direction = words[2] if len(words) > 2 else "ingress"
        self._guard(lambda: self._call("detach", host=words[0], hook=hook,
                                       direction=direction, **opts))

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

    def do_pcap(self, line):
        """pcap SWITCH [PORT]: capture a switch's ports (or one) to pcap files in the run
        folder, kept under results/ when the lab stops; `pcap` lists the captures."""
        def run(switch=None, port=None):
            if switch is None:
                running = self.lab.captures()
                for name, path in sorted(running.items()):
                    print(f"  {name}: {path}")
                if not running:
                    print("  no capture running")
                return
            if port is not None and not port.isdigit():
                print("usage: pcap SWITCH [PORT]")
                return
            for path in self.lab.capture(switch, int(port) if port else None):
                print(f"  {path}")
            print(f"  (kept in {self.lab.keep_dir}/pcap when the lab stops; "
                  "read with tcpdump -r FILE)")
        self._with_args(line, "pcap SWITCH [PORT]", run, 0, 2)

    def do_p4sh(self, line):
        """p4sh SWITCH: p4runtime-shell on a bmv2 switch, as a secondary client (the lab's
        controller stays primary: reads work, writes are refused). Ctrl-D returns here."""
        import subprocess
        import sys

        def run(switch):
            t = self._call("p4sh", switch=switch)
            hi, lo = t["election_id"]
            print(f"  p4runtime-shell on {switch} ({t['runs']}) at {t['grpc']}, election id "
                  f"{hi},{lo}: a secondary client. The lab's controller stays primary, so "
                  "reads (tables, entries, counters) work and writes are refused; change "
                  "the switch through the lab (swap SWITCH new.p4 runtime.json).")
            try:
                subprocess.run([sys.executable, "-m", "p4runtime_sh", "--grpc-addr", t["grpc"],
                                "--device-id", str(t["device_id"]), "--election-id",
                                f"{hi},{lo}"], check=False)
            except KeyboardInterrupt:
                pass
        import importlib.util
        if importlib.util.find_spec("p4runtime_sh") is None:
            print("error: p4runtime-shell is not installed: `make setup` installs it "
                  "(scripts/setup.sh: pip install --no-deps p4runtime-shell, plus ipython)")
            return
        self._with_args(line, "p4sh SWITCH", run, 1, 1)

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
