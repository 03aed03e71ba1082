"""The controller's device handles: opened from the lab's live objects (same process) or
adopted from the fabric and the pins (a controller in its own process, or restarted).
Also makes and removes host-hook targets, and keeps register snapshots of bmv2 switches
for a restart."""
from __future__ import annotations

import os
import threading
import shutil

from ..compiler.ebpf import CAPABILITIES
from ..errors import ProgramError, TargetError
from ..program.library import infrastructure
from ..program.model import Program
from ..program.validate import check_target, validate
from ..targets.bcc_compile import Compiler
from ..targets.bpf_syscall import Bpf
from ..targets.bpf_object import LibBpf, file_sha256
from ..targets.ebpf_datapath import EbpfDatapath
from ..targets.ebpf_hook import FunctionHook, HookFunction
from ..targets.ebpf_switch import EbpfSwitch
from ..targets.netlink import Netns
from ..lab.fabric import Fabric
from .intent import Intent, split_slot
from .target import Target

SNAPSHOT_EVERY = 2      # reconcile passes between two register snapshots of a bmv2 switch


def pin_name(slot: str) -> str:
    """Pin folder of a host hook: its name, h8:xdp:ingress (also the device's name in
    records and errors)."""
    return slot


class Devices:
    """Targets by intent name: switches by name, host hooks as HOST:HOOK:DIRECTION."""

    def __init__(self, fabric: Fabric, compiler: Compiler | None = None, bpf: Bpf | None = None,
                 handles: dict[str, Target] | None = None):
        self.fabric = fabric
        self.compiler = compiler or Compiler()
        self.bpf = bpf or Bpf()
        self.handles: dict[str, Target] = dict(handles or {})
        self.orphans: list[str] = []
        self._p4_compiled: dict = {}     # p4c outputs, shared by this controller's bmv2 switches
        self._libbpf: LibBpf | None = None

    @property
    def libbpf(self) -> LibBpf:
        if self._libbpf is None:
            self._libbpf = LibBpf()
        return self._libbpf

    # --- opening ----------------------------------------------------------------------------
    def adopt(self, intent: Intent) -> None:
        """Open a handle for every device of the intent that has none yet, from the pins
        and the fabric; nothing on the devices changes. Host hooks pinned but absent from
        the intent (a change cut short) are opened too and listed in `orphans`."""
        for name, di in intent.devices.items():
            if name in self.handles or (di.program is None and not di.functions
                                        and di.p4 is None):
                continue
            if di.kind == "host" and di.functions:
                if os.path.isdir(os.path.join(self.fabric.pin_dir, pin_name(name))):
                    hook = self._function_hook(name)
                    hook.adopt_pinned(di.functions, [self._hook_intf(name)])
                    self.handles[name] = hook
            elif di.kind == "host":
                if os.path.isdir(os.path.join(self.fabric.pin_dir, pin_name(name))):
                    self.handles[name] = self._adopt_slot(name, di.program)
            else:
                self.handles[name] = self._adopt_switch(name, di.program, intent)
        for d in sorted(os.listdir(self.fabric.pin_dir)) if os.path.isdir(self.fabric.pin_dir) else []:
            parts = d.split(":")
            if len(parts) == 3 and parts[0] in self.fabric.hosts:
                name = ":".join(parts)
                if name not in intent.devices and name not in self.handles:
                    try:
                        self.handles[name] = self._adopt_slot(name, None)
                        self.orphans.append(name)
                    except TargetError:
                        pass

    def _adopt_switch(self, name: str, program: Program, intent: Intent) -> Target:
        desc = self.fabric.switches[name]
        xdp_hosts = {split_slot(n)[0] for n, d in intent.devices.items()
                     if d.kind == "host" and split_slot(n)[1] == "xdp"}
        ports = {}
        for number, (ifname, peer) in desc.ports.items():
            host = next((h.name for h in self.fabric.hosts.values()
                         if h.switch == name and h.port == number), None)
            ports[number] = (ifname, peer and host not in xdp_hosts)
        if desc.kind == "ebpf":
            sw = EbpfSwitch(name, desc.netns, ports, self.compiler, self.bpf, self.fabric.pin_dir)
            sw.adopt_pinned(program or infrastructure(), [i for i, _ in ports.values()])
            return sw
        p4 = intent.devices[name].p4 if name in intent.devices else None
        if desc.kind == "bmv2" and (p4 is not None or desc.p4):
            from ..compiler.p4_user import UserP4
            from ..lab.runstate import ENV_TAG
            from ..targets.bmv2_p4 import P4ProgramSwitch
            env = {**os.environ, ENV_TAG: self.fabric.run}
            return P4ProgramSwitch.adopt_running(desc, ports, self.fabric.run_dir,
                                                 p4 or UserP4.from_json(desc.p4), env)
        if desc.kind == "bmv2":
            from ..targets.bmv2_switch import Bmv2Switch
            from ..lab.runstate import ENV_TAG
            env = {**os.environ, ENV_TAG: self.fabric.run}
            sw = Bmv2Switch.adopt_running(desc, ports, self.fabric.run_dir, program, env,
                                          self._p4_compiled)
            # compile its program now, in the background: restarting a dead switch then
            # does not wait for p4c
            threading.Thread(target=sw.warm, daemon=True, name=f"p4c-{name}").start()
            return sw
        raise TargetError(name, f"a {desc.kind} switch has no program to control")

    def _host_datapath(self, name: str) -> EbpfDatapath:
        host, hook, direction = split_slot(name)
        h = self.fabric.hosts[host]
        return EbpfDatapath(pin_name(name), Netns(h.netns), hook, "host", self.compiler,
                            self.bpf, self.fabric.pin_dir, direction)

    def _adopt_slot(self, name: str, program: Program | None) -> EbpfDatapath:
        dp = self._host_datapath(name)
        dp.adopt_pinned(program, [self.fabric.hosts[split_slot(name)[0]].intf])
        return dp

    # --- host hooks -------------------------------------------------------------------------
    def check_host_program(self, name: str, program: Program) -> None:
        host, hook, _ = split_slot(name)
        try:
            validate(program)
            check_target(program, CAPABILITIES.get(hook, set()))
        except ProgramError as exc:
            raise TargetError(name, f"cannot run program {program.name}: {exc}") from exc

    def attach(self, name: str, program: Program) -> None:
        self.check_host_program(name, program)
        dp = self._host_datapath(name)
        dp.start(program, [self.fabric.hosts[split_slot(name)[0]].intf])
        self.handles[name] = dp
        if split_slot(name)[1] == "xdp":
            self._port_mode(name, peer=False)

    # --- host hooks running a list of functions (ELF objects, model programs) -------------
    def _hook_intf(self, name: str) -> str:
        return self.fabric.hosts[split_slot(name)[0]].intf

    def _function_hook(self, name: str) -> FunctionHook:
        host, hook, direction = split_slot(name)
        return FunctionHook(pin_name(name), Netns(self.fabric.hosts[host].netns), hook,
                            direction, self.compiler, self.bpf, self.libbpf,
                            self.fabric.pin_dir)

    def object_function(self, name: str, path: str, section: str | None) -> HookFunction:
        """An ELF object as a function of hook `name`, checked by loading it once (the
        verifier runs; nothing stays loaded) and copied into the run folder under its
        sha256, the copy the lab loads from now on. ObjectError names the file and field."""
        hook = split_slot(name)[1]
        label = os.path.basename(path)
        loaded = self.libbpf.load(path, hook, section, {}, self.bpf, label)
        try:
            digest = file_sha256(path)
        finally:
            self.bpf.close(loaded.prog_fd)
            for fd in loaded.maps.values():
                self.bpf.close(fd)
        folder = os.path.join(self.fabric.run_dir, "objects")
        os.makedirs(folder, exist_ok=True)
        copy = os.path.join(folder, f"{digest}.o")
        if not os.path.exists(copy):
            shutil.copyfile(path, copy + ".tmp")
            os.replace(copy + ".tmp", copy)
        stem = os.path.splitext(label)[0]
        return HookFunction(stem, None, os.path.abspath(path), loaded.section, digest, copy)

    def attach_functions(self, name: str, functions: tuple[HookFunction, ...]) -> None:
        for f in functions:
            if f.program is not None:
                self.check_host_program(name, f.program)
        hook = self._function_hook(name)
        hook.start(functions, [self._hook_intf(name)])
        self.handles[name] = hook
        if split_slot(name)[1] == "xdp":
            self._port_mode(name, peer=False)

    def detach(self, name: str) -> None:
        dp = self.handles.pop(name, None)
        if dp is None:
            return
        dp.stop()
        if split_slot(name)[1] == "xdp":
            self._port_mode(name, peer=True)

    def _port_mode(self, name: str, peer: bool) -> None:
        """A host running XDP must get its packets through the veth (XDP sees only those),
        not straight into its namespace's ingress."""
        h = self.fabric.hosts[split_slot(name)[0]]
        sw = self.handles.get(h.switch)
        if isinstance(sw, EbpfSwitch):
            sw.set_port_mode(h.port, peer)

    # --- bmv2 register snapshots ------------------------------------------------------------
    def snapshot(self, store, intent: Intent, passes: int) -> None:
        if passes % SNAPSHOT_EVERY:
            return
        for name, di in intent.devices.items():
            h = self.handles.get(name)
            if h is None or h.kind != "bmv2" or di.program is None:
                continue
            for m in di.program.maps:
                if m.kind in ("register", "sketch", "counter"):
                    try:
                        store.put_snapshot(name, m.name, h.read_map(m.name))
                    except TargetError:
                        pass

    def restore_registers(self, name: str, store) -> list[str]:
        """After a bmv2 restart: register values from the last snapshot; says how old."""
        import time
        h = self.handles[name]
        notes = []
        for m in h.program.maps:
            snap = store.snapshot(name, m.name)
            if snap is None or m.kind not in ("register", "sketch", "counter"):
                continue
            at, values = snap
            n = h.restore_map(m.name, values)
            notes.append(f"map {m.name}: {n} non-zero slots restored from the snapshot of "
                         f"{time.time() - at:.1f} s ago (counts since then are lost)")
        return notes

    def release(self) -> None:
        """Close this process's handles; the devices keep running."""
        for h in self.handles.values():
            rel = getattr(type(h), "release", None)
            if rel:
                rel(h)
        self.handles.clear()
