"""A device's eBPF datapath: root programs on its interfaces, the running pipeline, its maps.

Replacement is prepare/commit. prepare() compiles (bcc, slow) and loads the new pipeline
with the maps it shares with the running one bound in (so table entries, counters and
sketches survive), without touching the device. commit() is one write of the root
program's tail-call slot: atomic per packet, the interface never without a program, no
netlink round trip (0.05-0.25 ms here against ~8 ms for an XDP re-attach). The root
programs never change, which is why a program-array slot is used rather than re-attaching.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field

from ..compiler.ebpf import (PIPE_MAP, PORTS_MAP, INPORT_MAP, PORT_PEER, PORT_TAG,
                             SLOT_MAP, TRUST_MAP, VCNT_MAP, VER_MAP, generate,
                             root_source)
from ..compiler.ebpf import FCFG_MAP, FCNT_MAP, FLOW_MAP, FLOW_SLOTS
from ..compiler.layout import COUNTER, METER, TableLayout, key_words, map_c_name, table_layout
from ..errors import CompileError, TargetError, VerifierError
from ..program.model import Program, action_id
from .bcc_compile import Compiler, Image
from .bpf_syscall import (BPF_NOEXIST, Bpf, BpfCallError, PROG_SCHED_CLS, PROG_XDP)
from .netlink import Netns, add_bpf_filter, add_clsact

TC_INGRESS, TC_EGRESS = "ffff:fff2", "ffff:fff3"
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 2, 4


@dataclass(frozen=True)
class Entry:
    """A table entry as read back from the device.
    match: per key an int (exact), (value, prefixlen) (lpm) or (value, mask) (ternary)."""
    table: str
    match: tuple
    action: str
    args: tuple[int, ...] = ()
    priority: int = 0


@dataclass
class Prepared:
    """A loaded, not yet running, pipeline version."""
    program: Program
    prog_fd: int
    maps: dict[str, int]
    created: list[str]
    compile_ms: float
    load_ms: float
    version: int = 0                  # this load's number (flx_ver), what oracle probes record


@dataclass
class _Running:
    program: Program
    prog_fd: int
    maps: dict[str, int] = field(default_factory=dict)
    version: int = 0


class EbpfDatapath:
    """The eBPF datapath of one device (an eBPF switch or a host interface).

    hook: "tc" (ingress, or egress for hosts) or "xdp"; role: "switch" or "host".
    """

    kind = "host"

    def __init__(self, device: str, netns: Netns, hook: str, role: str, compiler: Compiler,
                 bpf: Bpf, pin_dir: str | None, direction: str = "ingress"):
        self.device, self.netns, self.hook, self.role = device, netns, hook, role
        self.direction = direction
        self.xdp_flags = XDP_FLAGS_DRV_MODE
        self._compiler, self._bpf, self._pin_dir = compiler, bpf, pin_dir
        self._root_fd = -1
        self._pipe_fd = -1
        self._slot_fd = -1
        self._attached: list[int] = []
        self._running: _Running | None = None
        # a host function in a chain (targets/ebpf_hook.py): generated with a tail call to
        # the next function, and these maps bound by name whatever runs (its flx_next)
        self.chained = False
        self.bound: dict[str, int] = {}
        self._root_maps: dict[str, int] = {}
        self._stamp = 0                       # flx_slot[0]: the slot untagged packets run
        self._spare: Prepared | None = None   # two-phase: the new version in the other slot
        self._old: _Running | None = None     # two-phase: the old version after the flip
        self._old_created: list[str] = []
        self._tag_ports: set[int] = set()
        self._trusted: dict[str, bool] = {}
        self._ifindex: dict[str, int] = {}

    # --- life cycle ---------------------------------------------------------------------
    @property
    def program(self) -> Program | None:
        return self._running.program if self._running else None

    def start(self, program: Program, interfaces: list[str],
              ports: dict[int, tuple[str, bool]] | None = None) -> None:
        """Load `program`, then attach the root program to `interfaces`.
        ports (switch): logical port -> (interface, redirect into the peer namespace)."""
        prepared = self.prepare(program)
        root = self._compiler.compile(root_source(self.hook), ["root"])
        self._root_maps = {n: self._bpf.map_create(spec) for n, spec in root.maps.items()}
        self._pipe_fd, self._slot_fd = self._root_maps[PIPE_MAP], self._root_maps[SLOT_MAP]
        self._root_fd = self._load(root, "root", self._root_maps)
        self._pin(self._pipe_fd, PIPE_MAP)
        self._pin(self._root_fd, "root")
        self._commit_slot(prepared)
        for name in prepared.created:
            self._pin(prepared.maps[name], name)
        if ports:
            self._set_ports(prepared.maps, ports)
        for ifname in interfaces:
            self._attach(ifname)

    def adopt_pinned(self, program: Program, interfaces: list[str]) -> None:
        """Take over a datapath another process started: the root program, the tail-call
        map and the maps from the pins, the running pipeline from slot 0, the interfaces it
        is attached to. Nothing on the device changes. `program` is what the caller
        believes runs; health() says when slot 0 holds another pipeline."""
        d = os.path.join(self._pin_dir, self.device)
        try:
            self._root_fd = self._bpf.obj_get(os.path.join(d, "root"))
            self._pipe_fd = self._bpf.obj_get(os.path.join(d, PIPE_MAP))
        except BpfCallError as exc:
            raise TargetError(self.device, f"cannot adopt: {exc.strerror} ({d})") from exc
        self._root_maps = {PIPE_MAP: self._pipe_fd}
        for map_id in self._bpf.prog_map_ids(self._root_fd):
            fd = self._bpf.map_fd_by_id(map_id)
            name = self._bpf.map_info(fd).name
            if name in self._root_maps:
                self._bpf.close(fd)
            else:
                self._root_maps[name] = fd
        self._slot_fd = self._root_maps.get(SLOT_MAP, -1)
        self._stamp = self._read_u32(self._slot_fd, 0)
        maps: dict[str, int] = {}
        prog_fd = -1
        slot = self._bpf.lookup(self._pipe_fd, self._stamp.to_bytes(4, "little"), 4)
        if slot is not None:
            try:
                prog_fd = self._bpf.prog_fd_by_id(int.from_bytes(slot, "little"))
            except BpfCallError:
                prog_fd = -1
        if prog_fd >= 0:
            # the pipeline's own maps first (a pin may be gone), then the pins
            for map_id in self._bpf.prog_map_ids(prog_fd):
                fd = self._bpf.map_fd_by_id(map_id)
                name = self._bpf.map_info(fd).name
                if name in maps or name in (PIPE_MAP, SLOT_MAP):
                    self._bpf.close(fd)
                else:
                    maps[name] = fd
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if name not in maps and name not in ("root", PIPE_MAP):
                maps[name] = self._bpf.obj_get(os.path.join(d, name))
        self._running = _Running(program, prog_fd, maps,
                                 self._read_u32(maps.get(VER_MAP, -1), 0))
        self._attached = [self.netns.ifindex(i) for i in interfaces]

    # --- drift ----------------------------------------------------------------------------
    def running_prog_id(self) -> int:
        return self._bpf.prog_id(self._running.prog_fd) if self._running and \
            self._running.prog_fd >= 0 else 0

    def health(self) -> list[str]:
        """What differs from how this datapath was set up: `detached IFNAME` (root program
        not on the interface), `slot` (slot 0 holds another pipeline than the running
        one), `pin NAME` (a pin is gone), `tagging` / `flows` (version tagging or per-flow
        tracking on with no change of this handle running: a change cut short). Tables
        are the controller's to compare."""
        problems = []
        root_id = self._bpf.prog_id(self._root_fd)
        ipr = self.netns.ipr()
        for idx in self._attached:
            if not self._root_attached(ipr, idx, root_id):
                problems.append(f"detached {self.netns.ifname(idx)}")
        slot = self._bpf.lookup(self._pipe_fd, self._stamp.to_bytes(4, "little"), 4)
        if self._spare is None and self._old is None and (
                slot is None or int.from_bytes(slot, "little") != self.running_prog_id()):
            problems.append("slot")
        if self._pin_dir:
            d = os.path.join(self._pin_dir, self.device)
            for name in ["root", PIPE_MAP] + sorted(self._running.maps if self._running else ()):
                if not os.path.exists(os.path.join(d, name)):
                    problems.append(f"pin {name}")
        return problems + self._change_leftovers()

    def _root_attached(self, ipr, idx: int, root_id: int) -> bool:
        if self.hook == "xdp":
            links = ipr.get_links(idx)
            xdp = links[0].get_attr("IFLA_XDP") if links else None
            attrs = dict(xdp["attrs"]) if xdp else {}
            return attrs.get("IFLA_XDP_PROG_ID") == root_id
        parent = int(TC_INGRESS.replace(":", ""), 16) if self.direction == "ingress" \
            else int(TC_EGRESS.replace(":", ""), 16)
        try:
            filters = ipr.get_filters(index=idx, parent=parent)
        except Exception:  # no clsact qdisc any more
            return False
        for f in filters:
            opts = f.get_attr("TCA_OPTIONS")
            if opts and dict(a for a in opts["attrs"] if a[0] != "UNKNOWN").get(
                    "TCA_BPF_NAME") == "flexnet_root":
                return True
        return False

    def heal(self, problems: list[str]) -> list[str]:
        """Repair what health() found; returns what was done."""
        done = []
        for p in problems:
            what, _, arg = p.partition(" ")
            if what == "detached":
                self._attach(arg, again=True)
                done.append(f"re-attached the root program to {arg}")
            elif what == "slot":
                for s in (self._stamp, 1 - self._stamp):
                    self._bpf.update(self._pipe_fd, s.to_bytes(4, "little"),
                                     self._running.prog_fd.to_bytes(4, "little"))
                done.append(f"put pipeline {self.program.name} back into both slots")
            elif what == "flows":
                gen = self.flow_tracking()
                self.set_flow_tracking(0)
                done.append(f"turned per-flow tracking off (generation {gen:#x} left on by a "
                            "change cut short)")
            elif what == "tagging":
                self.set_tagging(False)
                done.append("turned version tagging off (left on by a change cut short)")
            elif what == "pin":
                fd = {"root": self._root_fd, PIPE_MAP: self._pipe_fd}.get(arg)
                fd = fd if fd is not None else self._running.maps[arg]
                self._pin(fd, arg)
                done.append(f"pinned {arg} again")
        return done

    def release(self) -> None:
        """Close this process's fds; attachments and pins stay (another process, or a
        restarted controller, adopts them)."""
        self._close_fds()
        self.netns.close()

    def _close_fds(self) -> None:
        fds = [self._root_fd] + list(self._root_maps.values())
        if self._running:
            fds += [self._running.prog_fd] + list(self._running.maps.values())
        for fd in fds:
            if fd >= 0:
                self._bpf.close(fd)
        self._running = None
        self._root_fd = self._pipe_fd = self._slot_fd = -1
        self._root_maps = {}

    def stop(self, detach: bool = True) -> None:
        """Detach the root programs (unless the namespace is going away anyway) and release
        every map and program of this device."""
        for ifindex in self._attached if detach else ():
            try:
                self._detach(ifindex)
            except Exception:  # the interface may already be gone with its namespace
                pass
        self._attached.clear()
        self._close_fds()
        if self._pin_dir:
            shutil.rmtree(os.path.join(self._pin_dir, self.device), ignore_errors=True)

    # --- replacement --------------------------------------------------------------------
    def prepare(self, program: Program) -> Prepared:
        """Compile and load `program`, binding the running maps it shares (same name and
        layout). Nothing on the device changes; abort() releases what this created."""
        t0 = time.perf_counter()
        gen = generate   # the generator is part of the key: the C is what it makes
        try:
            image = self._compiler.compile_made(
                (gen, program, self.hook, self.role, self.chained),
                lambda: (gen(program, self.hook, self.role, chain=True) if self.chained
                         else gen(program, self.hook, self.role)).text,
                ["pipeline"])
        except CompileError as exc:
            raise CompileError(f"{self.device}: {exc}") from exc
        t1 = time.perf_counter()
        running = self._running.maps if self._running else {}
        maps, created = {}, []
        try:
            for name, spec in image.maps.items():
                fd = self.bound.get(name, running.get(name))
                # flx_ver is this load's own: the oracle tells versions apart by it
                if fd is not None and name != VER_MAP and self._bpf.map_info(fd) == spec:
                    maps[name] = fd
                else:
                    maps[name] = self._bpf.map_create(spec)
                    created.append(name)
            self._init_defaults(program, maps, created)
            version = int.from_bytes(os.urandom(4), "little") >> 1 | 1
            if VER_MAP in maps:
                self._bpf.update(maps[VER_MAP], bytes(4), version.to_bytes(4, "little"))
            prog_fd = self._load(image, "pipeline", maps)
        except Exception:
            for name in created:
                self._bpf.close(maps[name])
            raise
        t2 = time.perf_counter()
        return Prepared(program, prog_fd, maps, created, (t1 - t0) * 1e3, (t2 - t1) * 1e3,
                        version)

    def _init_defaults(self, program: Program, maps: dict[str, int], created: list[str]) -> None:
        """A new table's default-action record, written before the pipeline can run."""
        for t in program.tables:
            dname = map_c_name("d", t.name)
            if dname in created:
                lay = table_layout(program, t)
                self._bpf.update(maps[dname], (0).to_bytes(4, "little"),
                                 lay.encode_action(action_id(t.default_action),
                                                   tuple(t.default_args)))

    def stage(self, prepared: Prepared) -> None:
        """Nothing to stage: the prepared pipeline already binds the running maps."""

    def commit(self, prepared: Prepared) -> float:
        """Make `prepared` the running pipeline; returns the atomic step's time in ms."""
        t0 = time.perf_counter()
        old = self._running
        self._commit_slot(prepared)
        elapsed = (time.perf_counter() - t0) * 1e3
        if old:
            self._bpf.close(old.prog_fd)
            for name, fd in old.maps.items():
                if prepared.maps.get(name) != fd:
                    self._bpf.close(fd)
                    self._unpin(name)
        for name in prepared.created:
            self._pin(prepared.maps[name], name)
        return elapsed

    def adopt_loaded(self, program: Program, prog_fd: int, maps: dict[str, int]) -> None:
        """Take an already loaded pipeline as the running one (a chain adopting its pins)."""
        self._running = _Running(program, prog_fd, dict(maps))

    def adopt(self, program: Program) -> None:
        """Take `program` as the running one without a swap: only its table defaults
        differ from the running program's (an entries-only change)."""
        self._running.program = program

    def abort(self, prepared: Prepared) -> None:
        self._bpf.close(prepared.prog_fd)
        for name in prepared.created:
            self._bpf.close(prepared.maps[name])

    def _commit_slot(self, prepared: Prepared) -> None:
        # the slot untagged packets run first (that write is the atomic step), then the
        # other one, which only packets tagged by a two-phase update use
        if self._pipe_fd >= 0:
            for s in (self._stamp, 1 - self._stamp):
                self._bpf.update(self._pipe_fd, s.to_bytes(4, "little"),
                                 prepared.prog_fd.to_bytes(4, "little"))
        self._running = _Running(prepared.program, prepared.prog_fd, dict(prepared.maps),
                                 prepared.version)

    def _read_u32(self, fd: int, index: int) -> int:
        raw = self._bpf.lookup(fd, index.to_bytes(4, "little"), 4) if fd >= 0 else None
        return int.from_bytes(raw, "little") if raw else 0

    # --- two versions side by side (plan/two_phase.py drives these) -------------------------
    def holds_two_versions(self) -> bool:
        """A tc root: two pipeline slots chosen per packet by the version tag. XDP hooks
        and receive-side host hooks are not ingress points and do not see the tag."""
        return self.hook == "tc" and (self.role == "switch" or self.direction == "egress") \
            and TRUST_MAP in self._root_maps

    @property
    def version(self) -> int:
        return self._running.version if self._running else 0

    @property
    def stamp(self) -> int:
        return self._stamp

    def set_stamp(self, slot: int) -> None:
        """The version untagged packets (entering the network here) run and get tagged with:
        the flip of a two-phase update is this one write."""
        self._bpf.update(self._slot_fd, bytes(4), int(slot).to_bytes(4, "little"))
        self._stamp = int(slot)

    def set_tagging(self, on: bool) -> None:
        self._bpf.update(self._slot_fd, (1).to_bytes(4, "little"), int(on).to_bytes(4, "little"))

    def set_trust(self, ifname: str, on: bool) -> None:
        """Packets arriving on `ifname` carry a version tag their sender stamped."""
        if self._trusted.get(ifname, False) == on:
            return
        if ifname not in self._ifindex:   # stable while the namespace lives
            self._ifindex[ifname] = self.netns.ifindex(ifname)
        self._trusted[ifname] = on
        key = self._ifindex[ifname].to_bytes(4, "little")
        if on:
            self._bpf.update(self._root_maps[TRUST_MAP], key, (1).to_bytes(4, "little"))
        else:
            self._bpf.delete(self._root_maps[TRUST_MAP], key)

    def trust_only(self, keep: set[str]) -> list[str]:
        """Every interface the kernel's trust map holds beyond `keep` stops being trusted
        (a change cut short left a host port trusted); returns their names."""
        fd = self._root_maps.get(TRUST_MAP)
        if fd is None:
            return []
        kept = {self.netns.ifindex(n) for n in keep}   # cached: no netlink per pass
        dropped = []
        for key in self._bpf.keys(fd, 4):
            index = int.from_bytes(key, "little")
            if index not in kept:
                name = self.netns.ifname(index)
                self._bpf.delete(fd, key)
                self._trusted[name] = False
                dropped.append(name)
        return dropped

    def version_counts(self) -> tuple[int, int]:
        """Packets this root ran per version slot while tagging was on."""
        raw = self._bpf.array_values(self._root_maps[VCNT_MAP], 8, 2)  # one call, both
        return (int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little"))

    def install_spare(self, prepared: Prepared) -> None:
        """Phase 1: the new version into the slot untagged packets do not run; the old one
        keeps running everything (no packet carries the spare slot's tag yet)."""
        self._bpf.update(self._pipe_fd, (1 - self._stamp).to_bytes(4, "little"),
                         prepared.prog_fd.to_bytes(4, "little"))
        self._spare = prepared

    def remove_spare(self) -> None:
        """Undo of install_spare: the old version back into the spare slot."""
        prepared, self._spare = self._spare, None
        if prepared is None:
            return
        self._bpf.update(self._pipe_fd, (1 - self._stamp).to_bytes(4, "little"),
                         self._running.prog_fd.to_bytes(4, "little"))
        self.abort(prepared)

    def promote_spare(self) -> None:
        """After the flip: the new version is the running one (tables, maps and entries
        are read and written through it); the old one still serves old-tagged packets."""
        self._old = self._running
        p, self._spare = self._spare, None
        self._running = _Running(p.program, p.prog_fd, dict(p.maps), p.version)
        self._old_created = p.created

    def demote(self) -> None:
        """Undo of promote_spare (the stamp is flipped back by the caller first)."""
        if self._old is None:   # not promoted yet, or already retired and reloaded
            return
        new, self._running, self._old = self._running, self._old, None
        self._spare = Prepared(new.program, new.prog_fd, new.maps, self._old_created, 0, 0,
                               new.version)
        self.remove_spare()

    def retire_old(self) -> None:
        """Phase 4, once no old-tagged packet can be in flight: the new version into the
        old slot too, then the old version's program and its own maps released."""
        old, self._old = self._old, None
        if old is None:
            return
        self._bpf.update(self._pipe_fd, (1 - self._stamp).to_bytes(4, "little"),
                         self._running.prog_fd.to_bytes(4, "little"))
        self._bpf.close(old.prog_fd)
        for name, fd in old.maps.items():
            if self._running.maps.get(name) != fd:
                self._bpf.close(fd)
                self._unpin(name)
        for name in self._old_created:
            if name in self._running.maps:
                self._pin(self._running.maps[name], name)

    def set_port_tag(self, port: int, on: bool) -> None:
        """Packets out of `port` carry the version tag while tagging is on (the neighbour
        there is an eBPF switch that pops it)."""
        if (port in self._tag_ports) == on:
            return
        ifname, peer = self.ports[port]
        (self._tag_ports.add if on else self._tag_ports.discard)(port)
        self._bpf.update(self._running.maps[PORTS_MAP], port.to_bytes(4, "little"),
                         self.netns.ifindex(ifname).to_bytes(4, "little")
                         + (int(peer) * PORT_PEER | (PORT_TAG if on else 0)).to_bytes(4, "little"))

    # --- the per-flow level (plan/two_phase.py): the root's flow table ----------------------
    def holds_flows(self) -> bool:
        """The root remembers the slot each entering flow started with and counts its
        flow entries (compiler/ebpf.py _flow_source); a root loaded before that does not."""
        return self.holds_two_versions() and all(
            m in self._root_maps for m in (FLOW_MAP, FCFG_MAP, FCNT_MAP))

    def set_flow_tracking(self, generation: int, idle_us: int = 0) -> None:
        """generation != 0 (31 bits): entering packets keep their flow's slot until the
        flow has been idle idle_us (flows of another generation start anew), and the
        generation's entry counts start from zero; 0: off, every entering packet runs the
        stamp again (the table and the counts stay as they are: flow_census reads them)."""
        fd = self._root_maps[FCFG_MAP]
        if generation:
            for i in range(4):
                self._bpf.update(self._root_maps[FCNT_MAP], i.to_bytes(4, "little"), bytes(8))
            self._bpf.update(fd, (1).to_bytes(4, "little"), int(idle_us).to_bytes(4, "little"))
        self._bpf.update(fd, bytes(4), (int(generation) & 0x7FFFFFFF).to_bytes(4, "little"))

    def flow_tracking(self) -> int:
        """The generation the root tracks flows of (0: off), read from the device."""
        return self._read_u32(self._root_maps.get(FCFG_MAP, -1), 0)

    def flow_census(self, generation: int) -> dict:
        """After tracking is off: per slot, the entries of `generation` the root made,
        those that left the slot (a flow started again after idle), those still in the
        table, and how many were evicted (made - left - kept: the LRU drops entries
        silently when the table is full)."""
        raw = self._bpf.array_values(self._root_maps[FCNT_MAP], 8, 4)
        made = [int.from_bytes(raw[i * 8:i * 8 + 8], "little") for i in range(4)]
        kept = [0, 0]
        g = int(generation) & 0x7FFFFFFF
        for _, val in self._bpf.items(self._root_maps[FLOW_MAP], 16, 8, FLOW_SLOTS):
            lo = int.from_bytes(val[:4], "little")
            if lo >> 1 == g:
                kept[lo & 1] += 1
        return {"slots": FLOW_SLOTS, "made": made[:2], "left": made[2:], "kept": kept,
                "evicted": [max(0, made[s] - made[2 + s] - kept[s]) for s in (0, 1)]}

    def _change_leftovers(self) -> list[str]:
        """Version tagging or flow tracking on while no change of this handle runs: a
        change cut short (its controller killed) left them on; each costs every packet."""
        if not self.holds_two_versions() or self._spare is not None or self._old is not None:
            return []
        out = ["tagging"] if self._read_u32(self._slot_fd, 1) else []
        return out + (["flows"] if FCFG_MAP in self._root_maps and self.flow_tracking() else [])

    def _load(self, image: Image, func: str, maps: dict[str, int]) -> int:
        ptype = PROG_SCHED_CLS if self.hook == "tc" else PROG_XDP
        try:
            return self._bpf.prog_load(ptype, image.patched(func, maps), func)
        except BpfCallError as exc:
            raise VerifierError(self.device, f"the kernel refused the {func} program: "
                                f"{exc.strerror}", exc.log) from exc

    # --- attachment ---------------------------------------------------------------------
    def _attach(self, ifname: str, again: bool = False) -> None:
        idx = self.netns.ifindex(ifname)
        if self.hook == "xdp":
            self.netns.ipr().link("set", index=idx,
                                  xdp={"attrs": [("IFLA_XDP_FD", self._root_fd),
                                                 ("IFLA_XDP_FLAGS", self.xdp_flags)]})
        else:
            # clsact (EEXIST is fine: another hook of ours made it) and the filter (again:
            # replacing it) in one netlink round trip
            parent = TC_INGRESS if self.direction == "ingress" else TC_EGRESS
            self.netns.request([add_clsact(idx),
                                add_bpf_filter(idx, int(parent.replace(":", ""), 16),
                                               self._root_fd, "flexnet_root", replace=again)])
        if idx not in self._attached:
            self._attached.append(idx)

    def _detach(self, ifindex: int) -> None:
        # tc/ip rather than pyroute2 here: pyroute2 0.9.7 can wait forever on a filter
        # delete in a namespace; a bounded subprocess cannot hang a teardown
        ifname = self.netns.ifname(ifindex)
        if self.hook == "xdp":
            mode = "xdpgeneric" if self.xdp_flags == XDP_FLAGS_SKB_MODE else "xdpdrv"
            cmd = ["ip", "link", "set", "dev", ifname, mode, "off"]
        else:
            cmd = ["tc", "filter", "del", "dev", ifname, self.direction]
        self.netns.run(cmd)

    def _set_ports(self, maps: dict[str, int], ports: dict[int, tuple[str, bool]]) -> None:
        for number, (ifname, peer) in ports.items():
            idx = self.netns.ifindex(ifname)
            self._bpf.update(maps[PORTS_MAP], number.to_bytes(4, "little"),
                             idx.to_bytes(4, "little") + int(peer).to_bytes(4, "little"))
            self._bpf.update(maps[INPORT_MAP], idx.to_bytes(4, "little"),
                             number.to_bytes(4, "little"))

    def attachments(self) -> list[dict]:
        """What is attached where, for status displays."""
        return [{"ifindex": i, "hook": self.hook, "direction": self.direction,
                 "program": self.program.name if self.program else None} for i in self._attached]

    def _pin(self, fd: int, name: str) -> None:
        if not self._pin_dir:
            return
        d = os.path.join(self._pin_dir, self.device)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, name)
        if os.path.exists(path):
            os.unlink(path)
        self._bpf.pin(fd, path)

    def _unpin(self, name: str) -> None:
        if self._pin_dir:
            try:
                os.unlink(os.path.join(self._pin_dir, self.device, name))
            except FileNotFoundError:
                pass

    # --- tables ---------------------------------------------------------------------------
    def _table(self, table: str) -> tuple[TableLayout, int, int]:
        prog = self.program
        t = prog.table(table) if prog else None
        if t is None:
            raise TargetError(self.device, f"no table {table!r} in program "
                              f"{prog.name if prog else '(none)'}")
        maps = self._running.maps
        return table_layout(prog, t), maps[map_c_name("t", table)], maps[map_c_name("d", table)]

    def _action(self, table: str, action: str, args: tuple[int, ...]) -> int:
        prog = self.program
        t = prog.table(table)
        if action not in t.actions:
            raise TargetError(self.device, f"table {table}: no action {action!r} "
                              f"(has {', '.join(t.actions)})")
        params = prog.action(action).params
        if len(args) != len(params):
            raise TargetError(self.device, f"table {table}: action {action} takes "
                              f"{len(params)} arguments, got {len(args)}")
        for (pname, bits), value in zip(params, args):
            if not 0 <= int(value) < (1 << bits):
                raise TargetError(self.device, f"table {table}: {action}.{pname}={value} "
                                  f"does not fit {bits} bits")
        return action_id(action)

    def insert(self, table: str, match: tuple, action: str, args: tuple[int, ...] = (),
               priority: int = 0, modify: bool = False) -> None:
        """Insert (or, with modify, change) an entry."""
        lay, fd, _ = self._table(table)
        aid = self._action(table, action, tuple(args))
        if len(match) != lay.nkeys:
            raise TargetError(self.device, f"table {table}: {lay.nkeys} key fields, "
                              f"got {len(match)}")
        if lay.kind == "ternary":
            self._ternary_put(lay, fd, match, aid, tuple(args), priority, modify)
            return
        key = self._key(lay, match)
        flags = 2 if modify else BPF_NOEXIST
        try:
            self._bpf.update(fd, key, lay.encode_action(aid, tuple(args)), flags)
        except BpfCallError as exc:
            what = "no such entry" if modify else "entry exists or table full"
            raise TargetError(self.device, f"table {table}: {what} for {match}: "
                              f"{exc.strerror}") from exc

    def insert_many(self, table: str, entries: list[tuple[tuple, str, tuple[int, ...]]]) -> None:
        """insert() of many (match, action, args) entries: the table is looked up and each
        distinct action checked once (a big lab installs tens of thousands of routes)."""
        lay, fd, _ = self._table(table)
        if lay.kind == "ternary":
            for match, action, args in entries:
                self.insert(table, match, action, args)
            return
        records: dict[tuple, bytes] = {}
        for match, action, args in entries:
            rec = records.get((action, args))
            if rec is None:
                aid = self._action(table, action, tuple(args))
                rec = records[(action, args)] = lay.encode_action(aid, tuple(args))
            if len(match) != lay.nkeys:
                raise TargetError(self.device, f"table {table}: {lay.nkeys} key fields, "
                                  f"got {len(match)}")
            try:
                self._bpf.update(fd, self._key(lay, match), rec, BPF_NOEXIST)
            except BpfCallError as exc:
                raise TargetError(self.device, f"table {table}: entry exists or table full "
                                  f"for {match}: {exc.strerror}") from exc

    def delete(self, table: str, match: tuple, priority: int = 0) -> None:
        lay, fd, _ = self._table(table)
        if lay.kind == "ternary":
            entries = [e for e in self._ternary_read(lay, fd)
                       if not (tuple(zip(e[3], e[4])) == tuple(match) and e[1] == priority)]
            self._ternary_write(lay, fd, entries)
            return
        if not self._bpf.delete(fd, self._key(lay, match)):
            raise TargetError(self.device, f"table {table}: no entry {match}")

    def set_default(self, table: str, action: str, args: tuple[int, ...] = ()) -> None:
        lay, _, dfd = self._table(table)
        aid = self._action(table, action, tuple(args))
        self._bpf.update(dfd, (0).to_bytes(4, "little"), lay.encode_action(aid, tuple(args)))

    def entries(self, table: str) -> list[Entry]:
        """The table's entries, read back from the kernel's map."""
        lay, fd, _ = self._table(table)
        names = {action_id(a): a for a in self.program.table(table).actions}
        out = []
        if lay.kind == "ternary":
            for aid, prio, args, values, masks in self._ternary_read(lay, fd):
                out.append(Entry(table, tuple(zip(values, masks)), names.get(aid, str(aid)),
                                 self._trim(names.get(aid), args), prio))
            return out
        for raw in self._bpf.keys(fd, lay.key_size):
            val = self._bpf.lookup(fd, raw, lay.value_size)
            if val is None:
                continue
            values, plen = lay.decode_key(raw)
            aid, prio, args = lay.decode_action(val)
            match = ((values[0], plen),) if lay.kind == "lpm" else tuple(values)
            out.append(Entry(table, match, names.get(aid, str(aid)),
                             self._trim(names.get(aid), args), prio))
        return sorted(out, key=lambda e: repr(e.match))

    def default(self, table: str) -> tuple[str, tuple[int, ...]]:
        lay, _, dfd = self._table(table)
        raw = self._bpf.lookup(dfd, (0).to_bytes(4, "little"), lay.value_size)
        aid, _, args = lay.decode_action(raw)
        t = self.program.table(table)
        if aid == 0:
            return t.default_action, t.default_args
        names = {action_id(a): a for a in t.actions}
        return names.get(aid, str(aid)), self._trim(names.get(aid), args)

    def _trim(self, action: str | None, args: tuple[int, ...]) -> tuple[int, ...]:
        act = self.program.action(action) if action else None
        return tuple(args[: len(act.params)]) if act else tuple(args)

    @staticmethod
    def _key(lay: TableLayout, match: tuple) -> bytes:
        if lay.kind == "lpm":
            value, plen = match[0]
            return lay.encode_key((int(value),), int(plen))
        return lay.encode_key(tuple(int(m) for m in match))

    def _ternary_read(self, lay: TableLayout, fd: int) -> list:
        out = []
        for i in range(lay.size):
            raw = self._bpf.lookup(fd, i.to_bytes(4, "little"), lay.value_size)
            rec = lay.decode_ternary(raw)
            if rec[0] == 0:
                break
            out.append(rec)
        return out

    def _ternary_write(self, lay: TableLayout, fd: int, entries: list) -> None:
        # write from the end towards the front so a packet scanning concurrently sees every
        # kept entry at least once; then clear the tail
        old = len(self._ternary_read(lay, fd))
        for i in reversed(range(len(entries))):
            aid, prio, args, values, masks = entries[i]
            self._bpf.update(fd, i.to_bytes(4, "little"),
                             lay.encode_ternary(values, masks, aid, args, prio))
        for i in range(len(entries), old):
            self._bpf.update(fd, i.to_bytes(4, "little"), bytes(lay.value_size))

    def _ternary_put(self, lay, fd, match, aid, args, priority, modify) -> None:
        entries = self._ternary_read(lay, fd)
        values = tuple(int(v) for v, _ in match)
        masks = tuple(int(m) for _, m in match)
        same = [i for i, e in enumerate(entries) if e[3] == values and e[4] == masks
                and e[1] == priority]
        if modify != bool(same):
            raise TargetError(self.device, f"table {lay.name}: "
                              + ("no such entry" if modify else "entry exists") + f" {match}")
        if same:
            entries[same[0]] = (aid, priority, args, values, masks)
        else:
            if len(entries) >= lay.size:
                raise TargetError(self.device, f"table {lay.name} is full ({lay.size})")
            pos = next((i for i, e in enumerate(entries) if e[1] < priority), len(entries))
            entries.insert(pos, (aid, priority, args, values, masks))
        self._ternary_write(lay, fd, entries)

    # --- maps -----------------------------------------------------------------------------
    def read_map(self, name: str):
        """A program map's contents: counter -> [(packets, bytes)], register/sketch ->
        [int], hash -> {key tuple: (packets, bytes)}, meter -> {key tuple: (tokens, ns)}."""
        m = self.program.map(name) if self.program else None
        if m is None:
            raise TargetError(self.device, f"no map {name!r}")
        fd = self._running.maps[map_c_name("m", name)]
        if m.kind in ("counter", "register", "sketch"):
            n = m.size * (m.rows if m.kind == "sketch" else 1)
            vsz = 16 if m.kind == "counter" else 8
            # one batch read of the whole array (a sketch has thousands of slots)
            raw = self._bpf.array_values(fd, vsz, n)
            if len(raw) != n * vsz:
                raise TargetError(self.device, f"map {name}: read {len(raw) // vsz} of {n} slots")
            if m.kind == "counter":
                return list(COUNTER.iter_unpack(raw))
            return memoryview(raw).cast("Q").tolist()
        words = key_words(m)
        result = {}
        for raw, val in self._bpf.items(fd, 8 * words, 16, m.size):
            key = tuple(int.from_bytes(raw[i * 8:i * 8 + 8], "little") for i in range(words))
            result[key] = (COUNTER if m.kind == "hash" else METER).unpack(val)
        return result

    def write_map(self, name: str, index: int, value: int) -> None:
        """Set a register slot (state carried by a migration uses this)."""
        m = self.program.map(name) if self.program else None
        if m is None or m.kind not in ("register", "sketch"):
            raise TargetError(self.device, f"no register or sketch map {name!r}")
        fd = self._running.maps[map_c_name("m", name)]
        self._bpf.update(fd, index.to_bytes(4, "little"), int(value).to_bytes(8, "little"))

    def restore_map(self, name: str, values) -> int:
        """Write a map's contents (as read_map returned them) back; returns slots written.
        (How a change that failed puts a map it had dropped back.)"""
        m = self.program.map(name) if self.program else None
        if m is None:
            raise TargetError(self.device, f"no map {name!r}")
        fd = self._running.maps[map_c_name("m", name)]
        n = 0
        if m.kind in ("counter", "register", "sketch"):
            for i, v in enumerate(values):
                raw = COUNTER.pack(*v) if m.kind == "counter" else int(v).to_bytes(8, "little")
                self._bpf.update(fd, i.to_bytes(4, "little"), raw)
                n += 1
            return n
        for key, v in values.items():
            raw_key = b"".join(int(k).to_bytes(8, "little") for k in key)
            self._bpf.update(fd, raw_key, (COUNTER if m.kind == "hash" else METER).pack(*v))
            n += 1
        return n

    def map_fd(self, c_name: str) -> int:
        return self._running.maps[c_name]
