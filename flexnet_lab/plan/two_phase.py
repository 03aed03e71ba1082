"""Consistency levels of a change, and the two-phase update that gives `per-packet`.

per-device (the default): every device prepares, then every device commits back to back.
  Each device swaps atomically, but a packet crossing a device already changed and one not
  yet changed meets both versions.
per-packet (Reitblatt et al., "Abstractions for Network Update", SIGCOMM 2012): every packet
  is processed by the old programs on every device it crosses, or by the new ones on every
  device. Phases, each timed in the change record:
    install - the new version is loaded beside the old one on every device the change
              touches (eBPF: the tail-call slot untagged packets do not run);
    flip    - every ingress point (each eBPF switch's root for packets from hosts, and the
              tc egress of a sending host whose function is part of the change) stamps the
              new version: one map write each;
    drain   - wait until no packet stamped with the old version can still be in flight:
              the per-version packet counters of every root (flx_vcnt) have stopped moving
              for `quiet_ms`, read at least `min_ms` after the flip; `max_ms` bounds the
              wait (reached: the record says so);
    retire  - the new version into the old slot too; the old version released.
  Between eBPF switches the version rides in an 802.1ad S-tag (VID 0xFF0 | version) that
  the root pops on arrival and the pipeline pushes again towards the next eBPF switch; it
  never goes towards a host (compiler/ebpf.py root_source). Tagging is on only during a
  per-packet change.

per-flow (optional): a flow keeps the version it started with until it has been idle for
  DrainPolicy.idle_ms; new flows run the new version from the flip. The phases of
  per-packet, with the ingress points' flow tables (compiler/ebpf.py _flow_source) on from
  before the loads to the end of the drain (tagging on just before them: a packet between
  switches is then not taken for a flow entering the network): a flow table lookup per
  entering packet while on.
    learn   - before the flip, at least idle_ms of flow tracking: every flow still active
              has been seen with the old version (a flow silent that long is over);
    drain   - wait until the old version's counters (flx_vcnt) have been quiet for idle_ms
              (no flow of the old version is left), at most flow_max_ms; a bounded drain
              moves the flows still active at once (tracking off at every ingress point,
              then the per-packet drain, so the retire meets no old-tagged packet) and the
              record says so: per-packet achieved, the old-version packets of the last
              idle_ms. Tracking goes off at the end of the drain (every flow of the old
              version is idle by then: the stamp is what each would start with anyway),
              which freezes the tables for the census;
    census  - each root counted the entries of the change's generation it made and that
              left their slot; what is missing from its table was evicted (an LRU of
              FLOW_SLOTS flows drops entries silently when full). An old-version entry
              evicted means its flow may have moved to the new version before it was
              idle: the record then says per-packet achieved, with how many (an upper
              bound: an evicted flow that was idle, or came back before the flip, did not
              move).
  A device whose root has no flow table makes the change per-packet, said. Devices that
  keep flows also have holds_flows(), set_flow_tracking() and flow_census().

A bmv2 switch holds both versions in one pipeline generated from the two programs
(compiler/p4_dual.py, targets/bmv2_two_phase.py): install loads it, retire loads the new
program alone. A device that cannot hold two versions (a bmv2 switch whose two programs
one pipeline cannot merge, a host's XDP or tc-ingress hook, a change of table defaults
only, which live in maps both versions share) is changed per-device at the flip, and the
record of the change says `per-device` with the reason: never a silent downgrade.

Devices are duck-typed (plan imports no target): a device that holds two versions has
holds_two_versions(), stamp, set_stamp(), set_tagging(), set_trust(), set_port_tag(),
version_counts(), install_spare(), remove_spare(), promote_spare(), demote(), retire_old();
one whose drain reading is a request and a reply (bmv2) also drain_request(), drain_counts().
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, replace

from ..errors import OptionError
from .execute import (ChangeRecord, Checks, _after_commit, _released, apply_programs,
                      restore, save_for_undo)

LEVELS = ("per-device", "per-packet", "per-flow")
SWITCH_KINDS = ("ebpf", "bmv2")   # switches whose ports carry the version tag
PREPARE_THREADS = 2
BMV2_THREADS = 6


def check_level(level: str) -> str:
    """The consistency level named, or OptionError naming the choices."""
    if level not in LEVELS:
        raise OptionError("consistency", f"{str(level)[:30]!r} is not a level "
                          f"(use {' or '.join(LEVELS)})")
    return level


@dataclass(frozen=True)
class DrainPolicy:
    """When the old version is known to be gone. Every hop between eBPF switches is a
    bpf_redirect_peer, processed in the same softirq as the hop before it, so a packet
    crosses the switches in microseconds; the only queues on the way are a CPU's backlog
    (a packet a host's tc egress stamped, waiting to enter its first switch) and the qdisc
    of a shaped host link. A quiet time of 1 ms covers the backlog; a shaped link needs its
    queue's drain time (queue bytes / rate) as min_ms."""
    quiet_ms: float = 1.0
    min_ms: float = 1.0
    max_ms: float = 200.0
    poll_ms: float = 0.25
    idle_ms: float = 100.0        # per-flow: a flow silent this long is over
    flow_max_ms: float = 1000.0   # per-flow: the drain's bound (flows still active move)


def two_phase_capable(dev) -> bool:
    fn = getattr(dev, "holds_two_versions", None)
    return bool(fn and fn())


def apply_changes(changes: list[tuple[str, object, object, str]], level: str, network: dict,
                  fabric, undo: list, drain: DrainPolicy | None = None,
                  checks: Checks | None = None) -> list[ChangeRecord]:
    """Replace the programs of several devices as one change at `level`.
    changes: (name, device, new program, description); network: every device handle by
    name (the untouched eBPF switches carry the tag too); `undo` gets (what, callable) for
    everything done, so the caller can put every device back if a later step fails.
    checks: the caller's Checks, which already validated and planned these programs (each
    distinct program is then validated once per change, not twice)."""
    check_level(level)
    checks = checks or Checks()
    if level == "per-device" or not changes:
        return _named(apply_programs([(d, p, desc) for _, d, p, desc in changes], undo,
                                     checks), [n for n, *_ in changes])
    if level == "per-flow":
        return _PerFlow(changes, network, fabric, undo, drain or DrainPolicy(), checks).run()
    return _TwoPhase(changes, network, fabric, undo, drain or DrainPolicy(), checks).run()


def weak_record(op: str, reason: str, level: str = "per-packet") -> ChangeRecord:
    """The record of a per-packet (or per-flow) change that could only be per-device (no
    program swap: table entries live in maps both versions share)."""
    return ChangeRecord("*", op, "entries", at=time.time(), consistency="per-device",
                        notes=[f"{level} requested; per-device achieved: {reason}"])


def _named(records: list[ChangeRecord], names: list[str]) -> list[ChangeRecord]:
    for rec, n in zip(records, names):
        rec.device = n
    return records


class _TwoPhase:
    def __init__(self, changes, network: dict, fabric, undo: list, drain: DrainPolicy,
                 checks: Checks):
        self.network, self.fabric, self.undo, self.drain = network, fabric, undo, drain
        self.checks = checks
        self.two, self.weak = [], []
        for name, dev, prog, desc in changes:
            plan = checks.change(dev, prog)
            reason = _weak_reason(name, dev, plan, prog)
            (self.weak if reason else self.two).append((name, dev, prog, desc, plan, reason))
        self.switches = tag_switches(network)
        # a switch that queues packets in its own threads (bmv2) needs a longer quiet time;
        # polled 5 times per quiet time (the counters only grow, so no movement is missed
        # between polls): a poll asks every switch, and the switches need the cores
        floor = max((getattr(d, "drain_floor_ms", 0.0) for d in self.switches.values()),
                    default=0.0)
        if floor > self.drain.quiet_ms:
            self.drain = replace(self.drain, quiet_ms=floor,
                                 min_ms=max(self.drain.min_ms, 2 * floor),
                                 max_ms=max(self.drain.max_ms, 100 * floor),
                                 poll_ms=max(self.drain.poll_ms, floor / 5))
        # ingress points: every eBPF switch (packets from hosts) and the sending hosts whose
        # tc egress function changes
        self.hosts = {n: d for n, d, *_ in self.two if getattr(d, "kind", "") == "host"}
        # a bmv2 switch loads whole pipelines (tens of ms, mostly waiting on its own
        # process): up to six at once, each switch's process parsing its pipeline while the
        # others do (with three, a switch the machine starved for a while held up the
        # switches queued behind it: 6 was as fast or faster under the benchmark's traffic)
        self.threads = BMV2_THREADS if any(getattr(d, "kind", "") == "bmv2"
                                           for _, d, *_ in self.two) else 1
        self.points = {**self.switches, **self.hosts}

    def run(self) -> list[ChangeRecord]:
        t0 = time.perf_counter()
        if not self.two:  # nothing can hold two versions: say so, change per device
            recs = _named(apply_programs([(d, p, desc) for _, d, p, desc, *_ in self.weak],
                                         self.undo, self.checks), [w[0] for w in self.weak])
            for rec, w in zip(recs, self.weak):
                rec.notes.append(f"per-packet requested; per-device achieved: {w[5]}")
            return recs
        old_slot = self._align_epoch()
        new_slot = 1 - old_slot
        prepared, saves = self._prepare()
        self._tagging(True)
        t1 = time.perf_counter()
        done, err = _each(len(self.two), lambda i: self.two[i][1].install_spare(prepared[i]),
                          self.threads)
        for (name, dev, *_), ok in zip(self.two, done):
            if ok:
                self.undo.append((f"{name}: new version out of the spare slot", dev.remove_spare))
        if err is not None:
            raise err
        weak_recs = _named(apply_programs([(d, p, desc) for _, d, p, desc, *_ in self.weak],
                                          self.undo, self.checks), [w[0] for w in self.weak])
        t2 = time.perf_counter()
        at = time.time()
        olds = [dev.program for _, dev, *_ in self.two]
        self.undo.append(("ingress points stamp the old version again",
                          lambda: self._unflip(old_slot)))
        for dev in self.switches.values():   # bmv2: no load resets the link counts now
            if hasattr(dev, "set_link_counting"):
                dev.set_link_counting(True)
        for dev in self.points.values():
            dev.set_stamp(new_slot)
        for _, dev, *_ in self.two:
            dev.promote_spare()
        t3 = time.perf_counter()
        drain = self._drain(old_slot)
        t4 = time.perf_counter()
        records = []
        done, err = _each(len(self.two), lambda i: self.two[i][1].retire_old(), self.threads)
        for (name, dev, *_), old, saved, ok in zip(self.two, olds, saves, done):
            if ok:
                self.undo.append((f"{name}: {old.name} back",
                                  lambda dev=dev, old=old, saved=saved: restore(dev, old, saved)))
        if err is not None:
            raise err
        for (name, dev, prog, desc, plan, _), prep in zip(self.two, prepared):
            rec = ChangeRecord(name, desc, plan.kind, plan=plan, at=at, done=time.time(),
                               compile_ms=prep.compile_ms, load_ms=prep.load_ms,
                               consistency="per-packet", version=prep.version)
            _after_commit(dev, prog, plan, rec)
            records.append(rec)
        self._tagging(False)
        t5 = time.perf_counter()
        level = "per-packet" if not self.weak else "per-device"
        phases = {"install_ms": round((t2 - t1) * 1e3, 3), "flip_ms": round((t3 - t2) * 1e3, 3),
                  "drain_ms": round((t4 - t3) * 1e3, 3), "retire_ms": round((t5 - t4) * 1e3, 3),
                  "prepare_ms": round((t1 - t0) * 1e3, 3), "total_ms": round((t5 - t0) * 1e3, 3),
                  "ingress_points": len(self.points), "old_slot": old_slot, **drain}
        # per-flow: its own bound moves the flows still active, then a per-packet drain
        bounded = drain.get("move_drain_bounded", drain["drain_bounded"])
        bounded_note = ""
        if bounded and level == "per-packet":
            # old-version packets may still be on their way: they could meet the new
            # version on the rest of their path, so per-packet is not what was achieved
            level = "per-device"
            bounded_note = (
                f"per-packet requested; per-device achieved: the drain reached its bound "
                f"({self.drain.max_ms:g} ms) with old-version packets still moving or "
                f"{drain.get('old_in_flight_left', 0)} still between two bmv2 switches")
        for rec in records:
            rec.phases = phases
            rec.total_ms = phases["total_ms"]
            rec.consistency = level
            if bounded_note:
                rec.notes.append(bounded_note)
            if self.weak:
                rec.notes.append("per-packet requested; per-device achieved because "
                                 + "; ".join(f"{w[0]}: {w[5]}" for w in self.weak))
        for rec, w in zip(weak_recs, self.weak):
            rec.phases = phases
            rec.notes.append(f"per-packet requested; per-device achieved: {w[5]}")
        return records + weak_recs

    # --- steps ----------------------------------------------------------------------------
    def _align_epoch(self) -> int:
        """The slot every ingress point stamps now. They agree at rest; one that does not
        (a change cut short) is set to the majority, harmless at rest: both slots of every
        device then hold the same version."""
        stamps = [d.stamp for d in self.switches.values()]
        slot = max((0, 1), key=stamps.count) if stamps else 0
        for d in self.points.values():
            if d.stamp != slot:
                d.set_stamp(slot)
        return slot

    def _prepare(self) -> tuple[list, list]:
        """Every new version loaded, two at a time (this thread and one more, taking the
        next device as each finishes): the kernel verifier runs with the GIL released, so
        two loads overlap on two cores. Also read, per device, what undoing the change
        would need (save_for_undo: nothing is staged before the install). One refusal:
        every version loaded is released and the error raised; nothing on any device
        changed. Returns the prepared versions and the saves."""
        results: list = [None] * len(self.two)
        saves: list = [None] * len(self.two)

        def load(i: int) -> None:
            _, dev, prog, _, plan, _ = self.two[i]
            saves[i] = save_for_undo(dev, plan)
            # a bmv2 switch compiles a pipeline holding both versions
            results[i] = getattr(dev, "prepare_spare", dev.prepare)(prog)

        _, exc = _each(len(self.two), load, PREPARE_THREADS)
        if exc is not None:
            for (_, dev, *_), prep in zip(self.two, results):
                if prep is not None:
                    dev.abort(prep)
            _released(exc, [n for (n, *_), prep in zip(self.two, results) if prep is not None])
            raise exc
        return results, saves

    def _tagging(self, on: bool) -> None:
        """Switch ports towards eBPF switches push the tag and trust it; a host whose
        egress stamps is trusted by its switch's port; every ingress point counts."""
        fab = self.fabric
        link_switches(self.switches, fab)
        for name in self.hosts:
            h = fab.hosts.get(name.split(":")[0])
            sw = self.switches.get(h.switch) if h else None
            if sw is not None:
                ifname = fab.switches[h.switch].ports[h.port][0]
                if on:
                    sw.set_trust(ifname, True)
                    self.undo.append((f"{h.switch}: stops trusting tags from {h.name}",
                                      lambda sw=sw, i=ifname: sw.set_trust(i, False)))
        for dev in self.points.values():
            dev.set_tagging(on)
        if on:
            self.undo.append(("version tagging off", lambda: [d.set_tagging(False)
                                                              for d in self.points.values()]))
        else:  # host ports trust nothing at rest: their hosts' tags are forged by definition
            for name in self.hosts:
                h = fab.hosts.get(name.split(":")[0])
                sw = self.switches.get(h.switch) if h else None
                if sw is not None:
                    sw.set_trust(fab.switches[h.switch].ports[h.port][0], False)

    def _unflip(self, old_slot: int) -> None:
        for dev in self.points.values():
            dev.set_stamp(old_slot)
        for _, dev, *_ in self.two:
            dev.demote()

    def _drain(self, old_slot: int) -> dict:
        """Wait until the old version's packet counters of every ingress point and switch
        stop moving (quiet_ms), at least min_ms after the flip, at most max_ms."""
        p = self.drain
        t0 = time.perf_counter()
        devs = list(self.points.values())
        last, last_in_flight = _drain_reading(devs, old_slot)
        first, quiet_since, polls = last, t0, 0
        while True:
            time.sleep(p.poll_ms / 1e3)
            polls += 1
            now = time.perf_counter()
            # bmv2: old packets still between two switches (in_flight), where no counter
            # moves, hold the drain until they arrive or the bound: on a starved machine
            # they wait in a receive buffer well over 10 quiet times, and one retired
            # before they arrive would run them on the new version (a mixed packet)
            cur, in_flight = _drain_reading(devs, old_slot)
            if cur != last or in_flight != last_in_flight:
                last, last_in_flight, quiet_since = cur, in_flight, now
            waited = (now - t0) * 1e3
            quiet = (now - quiet_since) * 1e3
            if quiet >= p.quiet_ms and waited >= p.min_ms and in_flight <= 0:
                return {"drain_polls": polls, "old_packets_after_flip": cur - first,
                        "drain_bounded": False, "old_in_flight_left": max(0, in_flight)}
            if waited >= p.max_ms:
                return {"drain_polls": polls, "old_packets_after_flip": cur - first,
                        "drain_bounded": True, "old_in_flight_left": max(0, in_flight)}


def _drain_reading(devs: list, slot: int) -> tuple[int, int]:
    """The old version's packets counted by every device, and (bmv2) those between two
    switches. A device with drain_request() is asked first and read after the others were
    asked (each bmv2 switch answers in its own process, at the same time)."""
    asked = [d for d in devs if hasattr(d, "drain_request")]
    for d in asked:
        d.drain_request()
    count = in_flight = 0
    for d in devs:
        if hasattr(d, "drain_counts"):
            c, f = d.drain_counts(slot)
            count, in_flight = count + c, in_flight + f
        else:
            count += d.version_counts()[slot]
    return count, in_flight


def _each(n: int, fn, threads: int) -> tuple[list[bool], BaseException | None]:
    """fn(i) for i in range(n) on this thread and threads - 1 more, each taking the next i
    as it finishes (no pool per call: a change is short); no new i is taken once one
    failed (one thread: in order, stopping at the first failure). Which calls worked, and
    the error of the first (lowest i) that failed."""
    done, errors = [False] * n, []
    todo = iter(range(n))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None or errors:
                return
            try:
                fn(i)
                done[i] = True
            except BaseException as exc:  # kept: raised in the caller's thread
                errors.append((i, exc))

    helpers = [threading.Thread(target=work, name=f"each-{k}", daemon=True)
               for k in range(min(threads, n) - 1)]
    for t in helpers:
        t.start()
    work()
    for t in helpers:
        t.join()
    return done, (min(errors, key=lambda e: e[0])[1] if errors else None)


def tag_switches(network: dict) -> dict:
    """The switches of `network` (device handles by name) that know the version tag."""
    return {n: d for n, d in network.items()
            if getattr(d, "kind", "") in SWITCH_KINDS and two_phase_capable(d)}


def rest_trust(switches: dict, fabric) -> dict[str, set[str]]:
    """Per tag-knowing switch, the interfaces that trust the tag when no change runs: those
    towards another such switch (link_switches sets them). A host port is trusted only
    during a change whose host function stamps (TwoPhase._tagging)."""
    out: dict[str, set[str]] = {}
    for name in switches:
        desc = fabric.switches.get(name)
        out[name] = {desc.ports[port][0] for port, peer in (desc.peers.items() if desc else ())
                     if peer in switches}
    return out


def link_switches(switches: dict, fabric) -> None:
    """Ports between two switches that know the tag (eBPF, bmv2) push the version tag (only
    while tagging is on) and trust it; set once, kept (idempotent: the devices remember
    what they set)."""
    for name, sw in switches.items():
        desc = fabric.switches.get(name)
        for port, peer in (desc.peers.items() if desc else ()):
            if peer in switches:
                sw.set_port_tag(port, True)
                sw.set_trust(desc.ports[port][0], True)
                if hasattr(sw, "count_link") and hasattr(switches[peer], "count_link"):
                    sw.count_link(port)   # two bmv2 switches count what is between them


def _weak_reason(name: str, dev, plan, prog) -> str:
    """Why this device's part cannot be per-packet ('' when it can)."""
    if plan.kind not in ("pipeline", "full_swap"):
        return "only table defaults change, and they live in maps both versions share"
    if getattr(dev, "kind", "") == "bmv2":
        refusal = getattr(dev, "spare_refusal", None)
        return refusal(prog) if refusal else f"{name} (bmv2) holds one pipeline at a time"
    if not two_phase_capable(dev):
        return f"{name} is a receiving host's hook: it sees no version tag"
    return ""


class _PerFlow(_TwoPhase):
    """The per-flow level: the two-phase update with the ingress points' flow tables on
    from before the loads to the end of the drain, a learn wait before the flip, a drain
    until the old version's flows are idle and a census of the flows the tables evicted.
    Without a flow table on every ingress point it is the per-packet update, and the
    records say why."""

    def __init__(self, changes, network: dict, fabric, undo: list, drain: DrainPolicy,
                 checks: Checks):
        super().__init__(changes, network, fabric, undo, drain, checks)
        self.lacking = sorted(n for n, d in self.points.items()
                              if not (getattr(d, "holds_flows", None) and d.holds_flows()))
        self.on = bool(self.two) and not self.lacking
        self.armed_at = 0.0
        self.learn_ms = 0.0
        self.gen = 0
        self.tagged = False

    def run(self) -> list[ChangeRecord]:
        records = super().run()
        for rec in records:
            rec.notes = [n.replace("per-packet requested", "per-flow requested")
                         for n in rec.notes]
            if rec.consistency != "per-packet":   # a per-device fallback, already said
                continue
            ph = rec.phases
            if self.lacking:
                rec.notes.append("per-flow requested; per-packet achieved: "
                                 f"{', '.join(self.lacking)[:200]} has no flow table (a root "
                                 "loaded before the per-flow level existed)")
            else:
                if ph.get("drain_bounded"):
                    rec.notes.append(
                        f"per-flow requested; per-packet achieved: the drain was bounded at "
                        f"{self.drain.flow_max_ms:g} ms with flows of the old version still "
                        f"active ({ph['old_packets_last_idle']} old-version packets in its "
                        f"last {self.drain.idle_ms:g} ms, {ph['old_packets_after_flip']} "
                        "since the flip): they moved to the new version")
                if ph.get("flows_evicted"):
                    rec.notes.append(
                        f"per-flow requested; per-packet achieved: the flow tables overflowed "
                        f"({ph['flow_table_slots']} flows per ingress point; "
                        f"{ph['flow_entries']} flow entries made during the change): "
                        f"{ph['flows_evicted']} flows of the old version were evicted (most "
                        f"at {ph['flows_evicted_at']}) and may have moved to the new version "
                        "before they were idle")
                if not (ph.get("drain_bounded") or ph.get("flows_evicted")):
                    rec.consistency = "per-flow"
        return records

    # --- the steps that differ ------------------------------------------------------------
    def _prepare(self) -> tuple[list, list]:
        """Flow tracking on at every ingress point before the loads (a fresh generation:
        entries of an earlier change count as new flows), so the learn wait overlaps them.
        Tagging goes on first: a packet between two switches then carries the version and
        its next root does not take it for a flow entering the network (a transit flow's
        entry there would only fill the table)."""
        if self.on:
            super()._tagging(True)
            self.tagged = True
            self.gen = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF | 1
            idle_us = int(self.drain.idle_ms * 1e3)
            self.undo.append(("flow tracking off", self._flows_off))
            for dev in self.points.values():
                dev.set_flow_tracking(self.gen, idle_us)
            self.armed_at = time.perf_counter()
        return super()._prepare()

    def _tagging(self, on: bool) -> None:
        if not (on and self.tagged):
            super()._tagging(on)
        if on and self.on:   # before the flip every active flow has been seen (learn)
            p = self.drain
            wait = p.idle_ms + p.quiet_ms - (time.perf_counter() - self.armed_at) * 1e3
            self.learn_ms = round(max(0.0, wait), 3)
            if wait > 0:
                time.sleep(wait / 1e3)

    def _flows_off(self) -> None:
        """Tracking off at every ingress point; one that fails does not keep the others
        on (its error is raised once all were tried)."""
        err = None
        for dev in self.points.values():
            try:
                dev.set_flow_tracking(0)
            except Exception as exc:   # kept: raised after the other points
                err = err or exc
        if err is not None:
            raise err

    def _census(self, old_slot: int) -> dict:
        """Once tracking is off (the tables no longer change; 1 ms for a packet still in
        a root on another CPU): the flow entries this change made, and the old-version
        entries evicted, summed over the ingress points, and where most were evicted."""
        t0 = time.perf_counter()
        time.sleep(0.001)
        made, evicted = 0, {}
        slots = 0
        for name, dev in self.points.items():
            c = dev.flow_census(self.gen)
            made += sum(c["made"])
            slots = c["slots"]
            if c["evicted"][old_slot]:
                evicted[name] = c["evicted"][old_slot]
        worst = max(evicted, key=evicted.get) if evicted else ""
        return {"flow_entries": made, "flows_evicted": sum(evicted.values()),
                "flows_evicted_at": worst, "flow_table_slots": slots,
                "census_ms": round((time.perf_counter() - t0) * 1e3, 3)}

    def _drain(self, old_slot: int) -> dict:
        """Wait until the old version's packet counters of every ingress point and switch
        have not moved for idle_ms (+ quiet_ms for packets in flight), counted from the
        flip: every flow of the old version is then idle, and its next packet starts anew
        with the new version. At most flow_max_ms. Then tracking off and the census."""
        if not self.on:
            return super()._drain(old_slot)
        p = self.drain
        quiet = p.idle_ms + p.quiet_ms
        poll = max(p.poll_ms, p.idle_ms / 50)   # a long wait: fewer reads
        devs = list(self.points.values())
        t0 = time.perf_counter()
        last = sum(d.version_counts()[old_slot] for d in devs)
        first, quiet_since, polls = last, t0, 0
        recent = deque([(t0, last)])            # (time, count) over the last idle_ms
        while True:
            time.sleep(poll / 1e3)
            polls += 1
            now = time.perf_counter()
            cur = sum(d.version_counts()[old_slot] for d in devs)
            if cur != last:
                last, quiet_since = cur, now
            recent.append((now, cur))
            while len(recent) > 1 and recent[1][0] <= now - p.idle_ms / 1e3:
                recent.popleft()
            waited = (now - t0) * 1e3
            out = {"drain_polls": polls, "old_packets_after_flip": cur - first,
                   "old_packets_last_idle": cur - recent[0][1], "drain_bounded": False,
                   "idle_ms": p.idle_ms, "learn_ms": self.learn_ms}
            if (now - quiet_since) * 1e3 >= quiet and waited >= p.min_ms:
                self._flows_off()
                return {**out, **self._census(old_slot)}
            if waited >= p.flow_max_ms:
                return {**out, **self._move_active_flows(old_slot), **self._census(old_slot)}

    def _move_active_flows(self, old_slot: int) -> dict:
        """The bound reached with flows of the old version still active: every ingress
        point stops keeping flows (each entering packet runs the new stamp from this one
        write per point), then the per-packet drain, so that no old-tagged packet is in
        flight when the devices retire one after the other (a packet never meets the old
        version on one hop and the new one on the next)."""
        t0 = time.perf_counter()
        self._flows_off()
        moved = super()._drain(old_slot)
        return {"drain_bounded": True, "move_drain_ms": round((time.perf_counter() - t0) * 1e3, 3),
                "move_drain_bounded": moved["drain_bounded"],
                "old_packets_after_move": moved["old_packets_after_flip"]}
