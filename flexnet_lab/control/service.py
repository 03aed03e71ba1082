"""The controller's operations as the control channel offers them: JSON arguments in,
JSON-able results out. The prompt, the `flexnet app` CLI and tests call these through
ControlClient; nothing here touches a device except through the Controller."""
from __future__ import annotations

import os

from ..errors import LabError
from ..program.delta import load_delta
from ..targets.ebpf_hook import HookFunction
from .apps import load_function
from .controller import Controller
from .uri import excerpt


def _rec(r) -> dict:
    return r.to_json()


class Service:
    """Op name -> handler. Keeps the undo stack of deltas applied through the channel."""

    def __init__(self, ctl: Controller):
        self.ctl = ctl
        self.undo_stack: list = []

    def handlers(self) -> dict:
        return {name[3:]: getattr(self, name) for name in dir(self) if name.startswith("op_")}

    # --- apps ------------------------------------------------------------------------------
    def op_deploy(self, uri: str, spec: dict):
        return self.ctl.deploy(uri, spec)

    def op_remove(self, uri: str):
        return self.ctl.remove(uri)

    def op_show(self, uri: str):
        return self.ctl.show(uri)

    def op_list(self):
        return self.ctl.list_apps()

    def op_migrate(self, uri: str, to: str):
        return self.ctl.migrate(uri, to)

    def op_scale(self, uri: str, to: int):
        return self.ctl.scale(uri, to)

    def op_events(self, since: int = 0, limit: int = 200):
        return self.ctl.events(since, limit)

    def op_status(self):
        return self.ctl.status()

    def op_changes(self, limit: int = 50):
        return self.ctl.store.changes(limit)

    def op_ping(self):
        return {"pid": os.getpid(), "passes": self.ctl.passes}

    # --- devices ---------------------------------------------------------------------------
    def op_tables(self, device: str):
        return self.ctl.describe(device)

    def op_entries(self, device: str, table: str):
        return [{"match": [list(m) if isinstance(m, tuple) else m for m in e.match],
                 "action": e.action, "args": list(e.args), "priority": e.priority}
                for e in self.ctl.entries(device, table)]

    def op_counters(self, device: str):
        return {str(k): v for k, v in self.ctl.counters(device).items()}

    def op_maps(self, device: str, map: str):
        value = self.ctl.read_map(device, map)
        if isinstance(value, dict):
            return {"kind": "hash", "items": [[list(k) if isinstance(k, tuple) else k, list(v)]
                                              for k, v in value.items()]}
        return {"kind": "array", "items": [list(v) if isinstance(v, tuple) else v for v in value]}

    def op_routes(self, switch: str):
        if switch not in self.ctl.fabric.switches:
            raise LabError(f"no switch {excerpt(switch)}")
        return self.ctl.fabric.routes.get(switch, [])

    def op_programs(self, host: str):
        return {n: p for n, p in self.ctl.host_programs().items() if n.split(":")[0] == host}

    def op_delta(self, target: str, path: str, consistency: str = "per-device"):
        delta = load_delta(path)
        records, inverses = self.ctl.apply_delta(target, delta, delta.name or os.path.basename(path),
                                                 consistency=consistency)
        self.undo_stack.append((inverses, consistency))
        return [_rec(r) for r in records]

    def op_undo(self):
        """The last delta reverted, at the consistency level it was applied with."""
        if not self.undo_stack:
            return []
        inverses, level = self.undo_stack.pop()
        return [_rec(r) for r in self.ctl.apply_inverses(inverses, "undo", consistency=level)]

    def op_entry(self, target: str, table: str, match: list, action: str, args: list | None = None,
                 priority: int = 0):
        return [_rec(r) for r in self.ctl.insert_entry(target, table, tuple(match), action,
                                                       tuple(args or ()), priority)]

    def op_delete_entry(self, target: str, table: str, match: list, priority: int = 0):
        return [_rec(r) for r in self.ctl.delete_entry(target, table, tuple(match), priority)]

    def _function(self, host: str, item: str, hook: str, direction: str,
                  section: str | None, params: dict | None):
        """A function named on the command line: a compiled ELF object (a `.o` file) or a
        model program (library name or YAML)."""
        if item.endswith(".o"):
            return self.ctl.object_function(host, item, hook, direction, section)
        prog = load_function(item, ".", params)
        return HookFunction(prog.name, prog)

    def op_attach(self, host: str, program: str, hook: str = "xdp", direction: str = "ingress",
                  params: dict | None = None, section: str | None = None,
                  at: int | None = None):
        """program: one function, or several as A,B,C (that order on the hook); a `.o` is
        an ELF object (`section` picks its program)."""
        items = [p for p in program.split(",") if p]
        cur = self.ctl.intent.devices.get(f"{host}:{hook}:{direction}")
        if len(items) == 1 and not items[0].endswith(".o") and at is None and \
                not (cur is not None and cur.functions):
            prog = load_function(items[0], ".", params)
            return [_rec(r) for r in self.ctl.attach(host, prog, hook, direction)]
        fns = [self._function(host, i, hook, direction, section, params) for i in items]
        return [_rec(r) for r in self.ctl.attach_functions(host, fns, hook, direction, at)]

    def op_swap(self, host: str, program: str, hook: str = "xdp", direction: str = "ingress",
                params: dict | None = None, section: str | None = None,
                fn: str | None = None):
        """fn: which function of the hook's list the new one replaces."""
        if program.endswith(".o") or fn is not None:
            new = self._function(host, program, hook, direction, section, params)
            return [_rec(r) for r in self.ctl.swap_function(host, new, hook, direction, fn)]
        prog = load_function(program, ".", params)
        return [_rec(r) for r in self.ctl.swap(host, prog, hook, direction)]

    def op_detach(self, host: str, hook: str = "xdp", direction: str = "ingress",
                  fn: str | None = None):
        if fn is not None:
            return [_rec(r) for r in self.ctl.detach_function(host, fn, hook, direction)]
        return [_rec(r) for r in self.ctl.detach(host, hook, direction)]

    # --- switches running a P4 program of the user's own ----------------------------------
    def op_swap_p4(self, switch: str, program: str, runtime: str | None = None):
        """Replace the switch's own P4 program live; the records' notes say what was
        carried and what dropped."""
        return [_rec(r) for r in self.ctl.swap_p4(switch, program, runtime)]

    def op_p4sh(self, switch: str):
        """Where p4runtime-shell reaches a bmv2 switch, and the election id that keeps it
        a secondary client (the controller is the primary: its ids are the time in ms)."""
        desc = self.ctl.fabric.switches.get(switch)
        if desc is None or desc.kind != "bmv2":
            have = sorted(n for n, d in self.ctl.fabric.switches.items() if d.kind == "bmv2")
            raise LabError(f"no bmv2 switch {excerpt(switch)} (P4Runtime switches: "
                           f"{', '.join(have) or 'none'})")
        return {"grpc": desc.grpc, "device_id": 0, "election_id": [0, 1],
                "runs": self.ctl.device_intent(switch).runs}
