"""Two program versions on one bmv2 switch, for per-packet consistent changes
(plan/two_phase.py drives these; Bmv2Switch mixes them in).

bmv2 runs one pipeline, so the two versions live in one pipeline generated from both
programs (compiler/p4_dual.py), the version chosen per packet by the lab's tag or the
stamp. The phases on a switch:
  prepare_spare - generate the dual pipeline and the new program alone, compile both (p4c,
                  cached by source hash, shared by the lab's switches: a warmed-up change
                  runs no p4c) and check that bmv2 loads them (a scratch simple_switch);
                  nothing reaches the switch;
  install_spare - load the dual pipeline (save, fill, commit): every entry and register
                  value of the old program carried to the same names, the new version's own
                  tables filled as a per-device change would fill them; the stamp still
                  selects the old version, so every packet runs what it ran before;
  flip          - set_stamp(): one register write (flexnet_control_words[0]);
  drain         - drain_request() + drain_counts(): the per-slot packet counters
                  (flexnet_version_count, the queued ones) and the marked tags between two
                  bmv2 switches, one thrift round trip per poll;
  retire_old    - load the new program alone, its entries and registers carried from the
                  new version's objects of the dual pipeline, with the same version number
                  (the entries as install_spare wrote them: nothing writes entries between
                  the two loads, and if something does they are read back);
Undo: remove_spare (before the flip) and demote (after it) load the old program alone
again with its entries, registers and version number, read back from the dual pipeline.
Each load is bmv2's hitless swap; register increments between the read and the commit of
a load (a few ms) are not carried, and the change record says so.

Control state (stamp, tagging, trusted ports, tag ports) is kept here and written into
every pipeline this switch loads, before it carries a packet. The oracle's probes carry
what they met in their own trailer (compiler/probe.py): nothing is read from the switch.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace

from ..compiler.p4 import (CONTROL_REG, LINK_RECV_REG, LINK_SENT_REG, QUEUED_REG,
                           TAGPORT_REG, TRUST_REG, VCOUNT_REG, VERSION_REG, map_objects,
                           tag_support)
from ..compiler.p4_dual import DualP4, DualPipelineError, generate_dual
from ..errors import CompileError, EnvironmentMissing, TargetError
from ..program.model import Map, Program

CONTROL = "ingress"
_COMPILE_LOCK = "lock"        # key of the shared compile cache's lock
_ENTRIES = "entries"          # key of the shared cache's encoded entries (_entry)
_ENTRIES_KEPT = 4096          # more than that: the cache starts again


def _R(register: str) -> str:
    """A generator register's name in bmv2 (inside the ingress control)."""
    return f"{CONTROL}.{register}"


def fresh_version() -> int:
    """A load's version number (31 bits, never 0: 0 is "no version" to the oracle)."""
    return int.from_bytes(os.urandom(4), "little") >> 1 | 1


@dataclass
class Bmv2Spare:
    """What prepare_spare() made: both pipelines compiled and checked, nothing loaded."""
    program: Program             # the new version
    dual: DualP4
    dual_prep: object            # Bmv2Prepared of the dual pipeline
    alone: object                # Bmv2Prepared of the new program alone (retire_old)
    compile_ms: float
    load_ms: float
    version: int
    staged: None = None          # Bmv2Switch.abort(): nothing on the device to undo


@dataclass
class _Dual:
    """The dual pipeline loaded on the switch."""
    spare: Bmv2Spare
    old: Program
    old_version: int
    new_slot: int
    promoted: bool = False
    entries: list | None = None  # what install_spare wrote (dual pipeline names); None: unknown


class TwoVersions:
    """The two-phase interface of a Bmv2Switch (see the module docstring)."""

    drain_floor_ms = 10.0   # bmv2: a quiet time of 10 ms (its queues and links are counted)

    def _init_two_versions(self) -> None:
        self._version = 0
        self._stamp = 0
        self._tagging = False
        self._untagged_slot = 0
        self._trusted: set[int] = set()
        self._tagports: dict[int, int] = {}  # port -> 1 push the tag, 2 also mark and count
        self._counting = False
        self._names: dict = {}           # the running version's P4 names (two held)
        self._dual: _Dual | None = None
        self._drain_tick = 0

    # --- names of the running version --------------------------------------------------------
    def _p4(self, kind: str, name: str) -> str:
        return f"{CONTROL}.{self._names.get(kind, {}).get(name, name)}"

    def _map_objects(self, m: Map) -> list[str]:
        name = self._names.get("maps", {}).get(m.name, m.name)
        return [f"{CONTROL}.{n}" for n in map_objects(replace(m, name=name))]

    def _role_names(self, dual: DualP4, role: str) -> dict:
        return {kind: {model: p4 for (v, model), p4 in getattr(dual, kind).items() if v == role}
                for kind in ("tables", "actions", "maps")}

    # --- state of the tag ----------------------------------------------------------------------
    def holds_two_versions(self) -> bool:
        """A program of the lab's model with the version tag (not a user's own P4)."""
        return isinstance(self.program, Program) and self._thrift is not None and \
            tag_support(self.program)

    @property
    def version(self) -> int:
        return self._version

    @property
    def stamp(self) -> int:
        return self._stamp

    def set_stamp(self, slot: int) -> None:
        """The slot untagged packets run and are tagged with: the flip is this write."""
        self._thrift.write_registers({_R(CONTROL_REG): {0: int(slot)}})
        self._stamp = int(slot)

    def set_tagging(self, on: bool) -> None:
        """Tagging on: an untagged packet from a trusted port runs the slot stamped now (its
        sender ran the old version before its own tagging was on)."""
        slot = self._stamp if on else 0     # at rest 0: the word means nothing then
        # in this order (one round trip): on, the untagged slot and the queued counts before
        # tagging (queued packets counted from now on: none are yet); off, the words after
        if on:
            self._thrift.write_registers({_R(CONTROL_REG): {3: slot},
                                          QUEUED_REG: {0: 0, 1: 0}},
                                         {_R(CONTROL_REG): {1: 1}})
        else:
            self._thrift.write_registers({_R(CONTROL_REG): {1: 0}},
                                         {_R(CONTROL_REG): {3: slot, 4: 0}})
            self._counting = False
        self._tagging = bool(on)
        self._untagged_slot = slot

    def set_trust(self, ifname: str, on: bool) -> None:
        """Packets arriving on `ifname` carry a tag their sender stamped."""
        port = next((n for n, (i, _) in self.ports.items() if i == ifname), None)
        if port is None:
            raise TargetError(self.device, f"no port {ifname[:20]!r}")
        if (port in self._trusted) == on:
            return
        self._thrift.write_registers({_R(TRUST_REG): {port: int(on)}})
        (self._trusted.add if on else self._trusted.discard)(port)

    def trust_only(self, keep: set[str]) -> list[str]:
        """Every port trusted beyond the interfaces `keep` stops being trusted (a change cut
        short left a host port trusted); returns their interface names."""
        dropped = []
        for port in sorted(self._trusted):
            ifname = self.ports[port][0] if port in self.ports else str(port)
            if ifname not in keep:
                self._thrift.write_registers({_R(TRUST_REG): {port: 0}})
                self._trusted.discard(port)
                dropped.append(ifname)
        return dropped

    def set_port_tag(self, port: int, on: bool) -> None:
        """Packets out of `port` carry the tag while tagging is on (a switch is there)."""
        if (port in self._tagports) == on:
            return
        self._thrift.write_registers({_R(TAGPORT_REG): {int(port): int(on)}})
        if on:
            self._tagports[port] = 1
        else:
            self._tagports.pop(port, None)

    def count_link(self, port: int) -> None:
        """The neighbour at `port` is a bmv2 switch too: tags sent there are marked and
        counted while links are counted, and it counts them on arrival."""
        if self._tagports.get(port) == 2:
            return
        self._thrift.write_registers({_R(TAGPORT_REG): {int(port): 2}})
        self._tagports[port] = 2

    def set_link_counting(self, on: bool) -> None:
        """Mark and count tags on bmv2 links (from after the last install to the end of the
        drain: no pipeline load resets the counters in between)."""
        self._thrift.write_registers({_R(CONTROL_REG): {4: int(on)}})
        self._counting = bool(on)

    def version_counts(self) -> tuple[int, int]:
        """Packets this switch ran per slot while tagging was on. While packets of a slot
        wait in its egress queues (counted in, not yet out), that slot's figure keeps
        moving (a tick is added), so the drain waits for them: bmv2 queues packets in its
        own threads, and a starved egress thread holds them with no counter moving."""
        return self._counts(self._thrift.read_registers([_R(VCOUNT_REG), QUEUED_REG]))

    def _counts(self, vals: dict) -> tuple[int, int]:
        """version_counts() from the values of its two registers."""
        v, q = vals[_R(VCOUNT_REG)], vals[QUEUED_REG]
        out = [v[0], v[1]]
        for s in (0, 1):
            # below zero (a packet counted in by the pipeline before a load): not waiting
            if 0 < q[s] & 0xFFFFFFFF < 1 << 31:
                self._drain_tick += 1
                out[s] += self._drain_tick
        return (out[0], out[1])

    _DRAIN_READ = (_R(VCOUNT_REG), QUEUED_REG, _R(LINK_SENT_REG), _R(LINK_RECV_REG))

    def drain_request(self) -> None:
        """Send the reads of one drain poll; drain_counts() takes the replies. A poll asks
        every switch first and then reads the answers, so the switches answer at once
        (under traffic a switch's thrift thread waits ~1 ms for a core)."""
        self._thrift.send_read(list(self._DRAIN_READ))

    def drain_counts(self, slot: int) -> tuple[int, int]:
        """version_counts()[slot], and the marked packets of `slot` this switch sent minus
        those that arrived here (summed over every bmv2 switch: the packets still between
        two of them, in links, receive rings, input buffers, where no counter of a switch
        sees them); one round trip: the reads drain_request() sent, or sent now (the only
        reads left unanswered on the connection are its)."""
        if not self._thrift.waiting:
            self._thrift.send_read(list(self._DRAIN_READ))
        vals = self._thrift.receive_read(list(self._DRAIN_READ))
        sent, recv = vals[_R(LINK_SENT_REG)], vals[_R(LINK_RECV_REG)]
        return self._counts(vals)[slot], sent[slot] - recv[slot]

    def _tag_values(self, old_version: int, new_version: int = 0, new_slot: int = 0) -> dict:
        """The tag's registers of a pipeline about to carry packets (zero slots omitted:
        a loaded pipeline starts with zeros)."""
        out = {CONTROL_REG: {0: self._stamp, 1: int(self._tagging), 2: new_slot,
                             3: self._untagged_slot, 4: int(self._counting)},
               VERSION_REG: {0: old_version, 1: new_version},
               TRUST_REG: {p: 1 for p in self._trusted},
               TAGPORT_REG: dict(self._tagports)}
        return {f"{CONTROL}.{k}": v for k, v in out.items() if v}

    def _adopt_tag_state(self) -> None:
        """A controller in another process: the tag's state read back from the switch."""
        regs = [f"{CONTROL}.{r}" for r in (CONTROL_REG, VERSION_REG, TRUST_REG, TAGPORT_REG)]
        try:
            vals = self._thrift.read_registers(regs)
        except TargetError:     # a pipeline without the tag
            return
        ctl, ver, trust, tagp = (vals[r] for r in regs)
        self._stamp, self._tagging, self._version = ctl[0] & 1, bool(ctl[1]), ver[0]
        self._untagged_slot = ctl[3] & 1
        self._trusted = {i for i, v in enumerate(trust) if v}
        self._tagports = {i: v for i, v in enumerate(tagp) if v}
        self._counting = bool(ctl[4])

    def _read_for_load(self, registers: list[str]) -> dict[str, list[int]]:
        """Register values carried into the next pipeline (with the version counters)."""
        if not (isinstance(self.program, Program) and tag_support(self.program)):
            return self._thrift.read_registers(registers) if registers else {}
        return self._thrift.read_registers(list(registers) + [_R(VCOUNT_REG)])

    # --- compiling ---------------------------------------------------------------------------
    def _dual_source(self, old: Program, new: Program) -> DualP4:
        key = ("dual", old, new)
        if key not in self._compiled:
            try:
                self._compiled[key] = generate_dual(old, new)
            except DualPipelineError as exc:
                self._compiled[key] = exc
        got = self._compiled[key]
        if isinstance(got, DualPipelineError):
            raise got
        return got

    def spare_refusal(self, program: Program) -> str:
        """Why this switch cannot hold its program and `program` side by side ('' if it
        can): the reason a per-packet change falls back to per-device here."""
        if not self.holds_two_versions():
            return f"{self.device} (bmv2) runs a pipeline without the version tag"
        try:
            self._dual_source(self.program, program)
        except DualPipelineError as exc:
            return f"{self.device} (bmv2) cannot hold both versions in one pipeline: {exc}"
        return ""

    def _compiled_source(self, text: str, program: Program):
        """p4c-bm2-ss on P4 source, cached by its sha256 (shared by the lab's switches)."""
        from .bmv2_switch import Bmv2Prepared
        key = ("p4c", hashlib.sha256(text.encode()).hexdigest())
        lock = self._compiled.setdefault(_COMPILE_LOCK, threading.Lock())
        with lock:
            if key not in self._compiled:
                self._compiled[key] = self._p4c(text, program)
        c = self._compiled[key]
        return Bmv2Prepared(program, c.p4info, c.device_json, 0.0, info=c.info)

    def _p4c(self, text: str, program: Program):
        from .bmv2_switch import Bmv2Prepared, compact_pipeline
        exe = shutil.which("p4c-bm2-ss")
        if exe is None:
            raise EnvironmentMissing("p4c-bm2-ss not found: install p4lang-p4c")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=self.run_dir) as tmp:
            with open(os.path.join(tmp, "dual.p4"), "w") as fh:
                fh.write(text)
            res = subprocess.run([exe, "--p4runtime-files", "dual.p4info.txt", "-o",
                                  "dual.json", "dual.p4"], cwd=tmp, capture_output=True,
                                 text=True)
            if res.returncode != 0:
                raise CompileError(f"{self.device}: p4c-bm2-ss failed on the two-version "
                                   f"pipeline (exit {res.returncode}): "
                                   f"{(res.stderr or res.stdout).strip()[-400:]}")
            with open(os.path.join(tmp, "dual.p4info.txt")) as fh, \
                    open(os.path.join(tmp, "dual.json"), "rb") as fj:
                prep = Bmv2Prepared(program, fh.read(), compact_pipeline(fj.read()), 0.0)
        prep.compile_ms = (time.perf_counter() - t0) * 1e3
        prep.info = self._client.parse_p4info(prep.p4info)
        return prep

    # --- the phases ----------------------------------------------------------------------------
    def prepare_spare(self, program: Program) -> Bmv2Spare:
        """Both pipelines compiled (cached) and load-checked; nothing reaches the switch."""
        t0 = time.perf_counter()
        dual = self._dual_source(self.program, program)
        dprep = self._compiled_source(dual.text, program)
        alone = self._compiled_copy(program)
        t1 = time.perf_counter()
        load_ms = self._check_loadable(dprep) + self._check_loadable(alone)
        return Bmv2Spare(program, dual, dprep, alone, (t1 - t0) * 1e3, load_ms,
                         fresh_version())

    def install_spare(self, spare: Bmv2Spare) -> None:
        """The dual pipeline in, the old version still chosen by every stamp."""
        old, new, d = self.program, spare.program, spare.dual
        info = self._info(spare.dual_prep)
        regs = [r for m in old.maps if m.kind != "meter"
                for r in (f"{CONTROL}.{n}" for n in map_objects(m))]
        # the entries (P4Runtime) and the registers (thrift) are read at the same time
        started = self._client.start_read()
        try:
            values = self._read_for_load(regs)
        except BaseException:
            started.cancel()
            raise
        raw = self._read_raw(started=started)      # the old program alone: model names
        written = []
        for e in raw:
            written.append(replace(e, table=d.tables[("old", e.table)],
                                   action=d.actions[("old", e.action)]))
            t = new.table(e.table)
            if t is not None and d.tables[("new", t.name)] != d.tables[("old", e.table)] \
                    and e.action in t.actions:     # the new version's own copy of the table
                written.append(replace(e, table=d.tables[("new", t.name)],
                                       action=d.actions[("new", e.action)]))
        updates = [self._entry(info, w.table, w.action, w) for w in written]
        back = (self._compiled_copy(old), [("raw", e) for e in raw], dict(values), None)
        for m in new.maps:    # a changed map's new copy starts from the old values, if alike
            mo = old.map(m.name)
            if m.kind == "meter" or mo is None or d.maps[("new", m.name)] == m.name or \
                    (mo.kind, mo.size, mo.rows, mo.key_bits) != (m.kind, m.size, m.rows,
                                                                 m.key_bits):
                continue
            for a, b in zip(map_objects(mo), map_objects(replace(m, name=d.maps[("new",
                                                                               m.name)]))):
                values[f"{CONTROL}.{b}"] = values[f"{CONTROL}.{a}"]
        new_slot = 1 - self._stamp
        tag = self._tag_values(self._version, spare.version, new_slot)
        self._load(spare.dual_prep, updates, values, tag, back)
        self._dual = _Dual(spare, old, self._version, new_slot, entries=written)
        self._names = self._role_names(d, "old")

    def promote_spare(self) -> None:
        """After the flip: the new version is the running one (tables and maps are read and
        written through its names); the old one still serves old-tagged packets."""
        st = self._dual
        st.promoted = True
        self.program, self._version = st.spare.program, st.spare.version
        self._names = self._role_names(st.spare.dual, "new")

    def retire_old(self) -> None:
        """The new program alone, its entries and registers carried, same version number."""
        st = self._dual
        if st is None:
            return
        self._to_single("new", st.spare.alone, st.spare.version, st.entries)

    def remove_spare(self) -> None:
        """Undo of install_spare: the old program alone again, as it was."""
        st = self._dual
        if st is None or st.promoted:
            return
        self._to_single("old", self._compiled_copy(st.old), st.old_version)

    def demote(self) -> None:
        """Undo of promote_spare (the stamps are flipped back first), then of install."""
        st = self._dual
        if st is None or not st.promoted:
            return
        st.promoted = False
        self.program, self._version = st.old, st.old_version
        self._names = self._role_names(st.spare.dual, "old")
        self.remove_spare()

    def _to_single(self, role: str, prep, version: int, raw: list | None = None) -> None:
        """Load one version of the dual pipeline alone (model names), carrying its entries
        (`raw`: the dual pipeline's, as install_spare wrote them; None: read back) and
        registers; on failure the dual pipeline is put back as it was."""
        st = self._dual
        d = st.spare.dual
        prog = st.spare.program if role == "new" else st.old
        names = self._role_names(d, role)
        tabs = {p4: m for m, p4 in names["tables"].items()}
        acts = {p4: m for m, p4 in names["actions"].items()}
        if raw is None:
            raw = self._read_raw()
        info = self._info(prep)
        updates = [self._entry(info, tabs[e.table], acts[e.action], e) for e in raw
                   if e.table in tabs]
        regs, rename = [], {}
        for m in prog.maps:
            if m.kind == "meter":
                continue
            for a, b in zip(map_objects(replace(m, name=names["maps"][m.name])), map_objects(m)):
                regs.append(f"{CONTROL}.{a}")
                rename[f"{CONTROL}.{a}"] = f"{CONTROL}.{b}"
        dual_regs = [f"{CONTROL}.{n}" for m in self._dual_maps(st) for n in map_objects(m)]
        values = self._read_for_load(sorted(set(regs) | set(dual_regs)))
        carried = {rename[k]: v for k, v in values.items() if k in rename}
        carried[f"{CONTROL}.{VCOUNT_REG}"] = values[f"{CONTROL}.{VCOUNT_REG}"]
        tag = self._tag_values(version)
        back_tag = self._tag_values(st.old_version, st.spare.version, st.new_slot)
        back = (st.spare.dual_prep, [("raw", e) for e in raw], values, back_tag)
        self._load(prep, updates, carried, tag, back)
        self._dual, self._names = None, {}
        self.program, self._version = prog, version

    def _entries_changed(self) -> None:
        """An entry written while two versions are loaded: the retire reads the dual
        pipeline's entries back instead of taking what install_spare wrote."""
        if self._dual is not None:
            self._dual.entries = None

    @staticmethod
    def _dual_maps(st: _Dual) -> list[Map]:
        d, new = st.spare.dual, st.spare.program
        out = [m for m in st.old.maps if m.kind != "meter"]
        out += [replace(m, name=d.maps[("new", m.name)]) for m in new.maps
                if m.kind != "meter" and d.maps[("new", m.name)] != m.name]
        return out

    def _entry(self, info, table: str, action: str, e) -> tuple:
        """The INSERT of entry `e` into `table` of the pipeline `info` describes, built and
        encoded once for all the lab's switches (a change writes the same entries into the
        same few pipelines again and again, and the pure-Python protobuf took a third of
        the controller's CPU building them): (kind, message, encoded)."""
        key = (id(info), table, action, e.match, e.args, e.priority)
        cache = self._compiled.setdefault(_ENTRIES, {})
        hit = cache.get(key)
        if hit is None or hit[0] is not info:
            msg = self._client.table_entry(f"{CONTROL}.{table}", e.match, f"{CONTROL}.{action}",
                                           e.args, e.priority, p4info=info)
            if len(cache) >= _ENTRIES_KEPT:
                cache.clear()
            hit = cache[key] = (info, ("INSERT", msg, self._client.encode_update("INSERT", msg)))
        return hit[1]

    def _load(self, prep, updates: list, values: dict, tag: dict | None, back: tuple) -> None:
        """Save `prep`, fill it, commit. A failure after the save: the saved pipeline is
        committed and `back` (prepared, updates, values, tag) loaded the same way; the
        error is raised (naming what was put back)."""
        self._save(prep)
        try:
            self._fill(updates, values, tag)
            self._client.set_pipeline(None, None, "COMMIT")
        except TargetError as exc:
            bprep, bupdates, bvalues, btag = back
            try:
                self._client.set_pipeline(None, None, "COMMIT")
                binfo = self._info(bprep)
                built = [self._entry(binfo, e.table, e.action, e) if kind == "raw" else
                         (kind, e) for kind, e in bupdates]
                self._save_fill_commit(bprep, built, bvalues, btag if btag is not None else
                                       self._tag_values(self._version))
            except TargetError as exc2:
                raise TargetError(self.device, f"{exc.message}; putting the previous pipeline "
                                  f"back failed too: {exc2.message}") from exc2
            raise TargetError(self.device, f"{exc.message} (the previous pipeline, its entries "
                              "and registers were put back)") from exc
