"""Apps by URI: deploy, remove, show, migrate, scale.

An app is a function in the program model (a host function: flow counter, sketch, ACL...)
or a delta. A function app is placed by the placer on the first candidate device that can
hold it (the placer says why): on a switch it becomes a table of the switch's pipeline
(with its maps), on a host an XDP program. A delta app applies to the switches its `on`
pattern names. Each operation is computed as new device intents and handed to
Controller.change, so it happens on every device or on none."""
from __future__ import annotations

import os
import time
from dataclasses import replace

from ..compiler.placement import (HOST_STATE_BUDGET, SWITCH_STATE_BUDGET, WORK_BUDGET, Device,
                                  PlacementError, as_switch_delta, per_packet_work, place,
                                  state_bytes)
from ..compiler.ebpf import CAPABILITIES
from ..errors import AppError, FlexNetError
from ..program import library
from ..program.delta import Delta, RemoveActions, RemoveMaps, RemoveTables, load_delta
from ..program.model import Program
from ..program.yaml_form import load_program
from ..program.library import infrastructure
from .intent import AppRecord, DeviceIntent, slot_name
from .uri import AppUri, excerpt

SPEC_KEYS = {"function", "params", "delta", "on", "serves", "replicas", "entries",
             "switch_state_kb"}


def load_function(name: str, base: str = ".", params: dict | None = None) -> Program:
    """A function by library name (rate_limiter takes rate_mbit) or a program YAML file."""
    params = params or {}
    if name in library.HOST_PROGRAMS:
        if name == "rate_limiter" and "rate_mbit" in params:
            rate = int(float(params["rate_mbit"]) * 1e6 / 8)
            return library.rate_limiter(rate, max(rate // 8, 150_000))
        return library.HOST_PROGRAMS[name]()
    path = os.path.join(base, name)
    if not os.path.isfile(path):
        raise AppError(excerpt(name), "function: not a library function "
                       f"({', '.join(sorted(library.HOST_PROGRAMS))}) nor a program file")
    return load_program(path)


class AppPlanner:
    def __init__(self, ctl):
        self.ctl = ctl

    # --- checking a request -----------------------------------------------------------------
    def _spec(self, uri: AppUri, spec) -> dict:
        if not isinstance(spec, dict):
            raise AppError(str(uri), "the app's spec must be a mapping")
        unknown = set(spec) - SPEC_KEYS
        if unknown:
            raise AppError(str(uri), f"spec: unknown field {excerpt(sorted(unknown)[0])} "
                           f"(known: {', '.join(sorted(SPEC_KEYS))})")
        if ("function" in spec) == ("delta" in spec):
            raise AppError(str(uri), "spec: give exactly one of function, delta")
        on = spec.get("on")
        if on is not None and not (isinstance(on, str) or
                                   (isinstance(on, list) and all(isinstance(x, str) for x in on))):
            raise AppError(str(uri), "spec.on: a device, a pattern or a list of devices")
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 64:
            raise AppError(str(uri), "spec.replicas: a whole number 1..64")
        serves = spec.get("serves")
        if serves is not None:
            if not (isinstance(serves, list) and len(serves) == 2 and
                    all(isinstance(h, str) and h in self.ctl.fabric.hosts for h in serves)):
                raise AppError(str(uri), "spec.serves: [SRC_HOST, DST_HOST] of this lab")
        return spec

    def _candidates(self, uri: AppUri, spec: dict) -> list[str]:
        on = spec.get("on")
        if on is None and spec.get("serves"):
            src, dst = spec["serves"]
            return self.ctl.fabric.path_between(src, dst) + [dst, src]
        if on is None:
            raise AppError(str(uri), "spec: say where it may run (on: [devices]) or which "
                           "traffic it serves (serves: [src, dst])")
        names = on if isinstance(on, list) else on.split(",")
        for n in names:
            if n not in self.ctl.fabric.switches and n not in self.ctl.fabric.hosts:
                raise AppError(str(uri), f"spec.on: no device {excerpt(n)} in this lab")
        return names

    def _devices(self, names: list[str], spec: dict, skip: set[str]) -> tuple[list[Device], list[str]]:
        """Placer devices with what they already use; hosts whose XDP hook is taken and
        devices in `skip` are passed over with a reason."""
        base = state_bytes(infrastructure())
        budget = int(float(spec.get("switch_state_kb", SWITCH_STATE_BUDGET / 1024)) * 1024)
        out, notes = [], []
        for n in names:
            if n in skip:
                notes.append(f"{n} passed over: the app already runs there")
                continue
            if n in self.ctl.fabric.switches:
                di = self.ctl.intent.devices.get(n)
                if di is None or di.program is None:
                    notes.append(f"{n} passed over: it runs no program of the lab")
                    continue
                h = self.ctl.devices.handles[n]
                caps = _caps(h)
                out.append(Device(n, "switch", frozenset(caps), budget, WORK_BUDGET,
                                  max(0, state_bytes(di.program) - base),
                                  per_packet_work(di.program)))
            else:
                slot = slot_name(n, "xdp", "ingress")
                if self.ctl.intent.devices.get(slot) is not None:
                    notes.append(f"{n} passed over: its xdp hook runs "
                                 f"{self.ctl.intent.devices[slot].program.name}")
                    continue
                out.append(Device(n, "host", frozenset(CAPABILITIES["xdp"]),
                                  HOST_STATE_BUDGET, WORK_BUDGET))
        return out, notes

    def _function(self, uri: AppUri, spec: dict) -> Program:
        try:
            return load_function(spec["function"], ".", spec.get("params") or {})
        except AppError:
            raise
        except FlexNetError as exc:
            raise AppError(str(uri), f"spec.function: {exc}") from exc

    # --- placing one replica ----------------------------------------------------------------
    def _place_one(self, uri: AppUri, fn: Program, spec: dict, candidates: list[str],
                   skip: set[str], after: dict) -> tuple[str, dict, list[str]]:
        """Where one replica goes and the device intent there; adds it to `after`."""
        devices, notes = self._devices(candidates, spec, skip)
        try:
            where = place(fn, devices)
        except PlacementError as exc:
            why = [" ".join(line.split()) for line in notes + str(exc).splitlines()]
            raise AppError(str(uri), "no device can hold it: " + "; ".join(why)) from exc
        reasons = notes + where.reasons
        if where.kind == "switch":
            cur = after.get(where.device) or self.ctl.intent.devices[where.device]
            try:
                new, _ = as_switch_delta(fn).apply(cur.program)
            except FlexNetError as exc:
                raise AppError(str(uri), f"cannot go into {where.device}'s pipeline: {exc}") from exc
            after[where.device] = cur.with_program(new)
            return where.device, _added(cur.program, new), reasons
        slot = slot_name(where.device, "xdp", "ingress")
        after[slot] = DeviceIntent(slot, "host", fn)
        return slot, {}, reasons

    # --- operations -----------------------------------------------------------------------
    def deploy(self, uri: AppUri, spec) -> dict:
        key = str(uri)
        if key in self.ctl.intent.apps:
            raise AppError(key, "already deployed (remove it first, or migrate/scale it)")
        spec = self._spec(uri, spec)
        after: dict = {}
        if "delta" in spec:
            rec = self._deploy_delta(uri, spec, after)
        else:
            fn = self._function(uri, spec)
            candidates = self._candidates(uri, spec)
            placed, added, reasons = [], {}, []
            for _ in range(spec.get("replicas", 1)):
                dev, add, why = self._place_one(uri, fn, spec, candidates, set(placed), after)
                placed.append(dev)
                added = add or added
                reasons += why
            rec = AppRecord(key, spec, tuple(placed), tuple(added.get("tables", ())),
                            tuple(added.get("actions", ())), tuple(added.get("maps", ())),
                            tuple(reasons), state_bytes(fn), per_packet_work(fn), time.time())
        records = self.ctl.change(f"deploy {key}", after, {key: rec})
        return {"uri": key, "devices": list(rec.devices), "reasons": list(rec.reasons),
                "changes": [r.to_json() for r in records]}

    def _deploy_delta(self, uri: AppUri, spec: dict, after: dict) -> AppRecord:
        try:
            delta = load_delta(spec["delta"])
        except FlexNetError as exc:
            raise AppError(str(uri), f"spec.delta: {exc}") from exc
        on = spec.get("on")
        if not isinstance(on, str):
            raise AppError(str(uri), "spec.on: a switch or a pattern of switches for a delta app")
        added: dict = {}
        names = self.ctl.switches(on)
        for n in names:
            cur = self.ctl.intent.devices[n]
            try:
                new, _ = delta.apply(cur.program)
            except FlexNetError as exc:
                raise AppError(str(uri), f"spec.delta on {n}: {exc}") from exc
            after[n] = cur.with_program(new)
            added = _added(cur.program, new)
        if added.get("other"):
            raise AppError(str(uri), "spec.delta: an app's delta may only add tables, actions "
                           "and maps (so that removing it is exact)")
        return AppRecord(str(uri), spec, tuple(names), tuple(added.get("tables", ())),
                         tuple(added.get("actions", ())), tuple(added.get("maps", ())),
                         (f"delta on the switches matching {on}",), 0, 0, time.time())

    def _without(self, rec: AppRecord, device: str, after: dict) -> None:
        """The device intent with every trace of the app gone."""
        cur = after.get(device) or self.ctl.intent.devices.get(device)
        if cur is None:
            return
        if cur.kind == "host":
            after[device] = None
            return
        ops = tuple(RemoveTables(f"{t}") for t in rec.tables) + \
            tuple(RemoveActions(a) for a in rec.actions) + tuple(RemoveMaps(m) for m in rec.maps)
        new, _ = Delta(ops, f"remove {rec.uri}").apply(cur.program)
        after[device] = cur.with_program(new)

    def remove(self, uri: AppUri) -> dict:
        rec = self.ctl.app(uri)
        after: dict = {}
        for d in rec.devices:
            self._without(rec, d, after)
        records = self.ctl.change(f"remove {rec.uri}", after, {rec.uri: None})
        return {"uri": rec.uri, "removed_from": list(rec.devices),
                "changes": [r.to_json() for r in records]}

    def show(self, uri: AppUri) -> dict:
        rec = self.ctl.app(uri)
        where = []
        for d in rec.devices:
            h = self.ctl.devices.handles.get(d)
            item = {"device": d, "kind": h.kind if h else "?", "tables": {}, "maps": {}}
            if h is not None:
                prog = h.program
                names = rec.tables if h.kind != "host" else tuple(t.name for t in prog.tables)
                for t in names:
                    if prog.table(t) is not None:
                        item["tables"][t] = [
                            {"match": [list(m) if isinstance(m, tuple) else m for m in e.match],
                             "action": e.action, "args": list(e.args)} for e in h.entries(t)]
                maps = rec.maps if h.kind != "host" else tuple(m.name for m in prog.maps)
                for m in maps:
                    if prog.map(m) is not None:
                        item["maps"][m] = _summary(h.read_map(m))
                if h.kind == "host" or rec.tables:
                    item["counters"] = _counters(h, rec)
            where.append(item)
        return {"uri": rec.uri, "spec": rec.spec, "runs_on": where, "reasons": list(rec.reasons),
                "resources": {"state_bytes_per_replica": rec.state_bytes,
                              "work_per_packet": rec.work, "replicas": len(rec.devices)},
                "deployed": rec.deployed}

    def migrate(self, uri: AppUri, to: str) -> dict:
        rec = self.ctl.app(uri)
        if "function" not in rec.spec:
            raise AppError(rec.uri, "only function apps migrate (a delta app names its switches)")
        if to not in self.ctl.fabric.switches and to not in self.ctl.fabric.hosts:
            raise AppError(rec.uri, f"--to: no device {excerpt(to)} in this lab")
        here = {d.split(":")[0] for d in rec.devices}
        if to in here:
            raise AppError(rec.uri, f"--to: it already runs on {to}")
        fn = self._function(uri, rec.spec)
        after: dict = {}
        old = rec.devices[0]
        self._without(rec, old, after)
        dev, added, reasons = self._place_one(uri, fn, rec.spec, [to], here - {old.split(":")[0]},
                                              after)
        new_rec = _moved(rec, [dev if d == old else d for d in rec.devices], added,
                         rec.reasons + tuple(f"migrated {old} -> {dev}: {r}" for r in reasons))
        records = self.ctl.change(f"migrate {rec.uri} to {to}", after, {rec.uri: new_rec})
        return {"uri": rec.uri, "from": old, "to": dev, "reasons": reasons,
                "state": "not carried (stateless migration)",
                "changes": [r.to_json() for r in records]}

    def scale(self, uri: AppUri, to: int) -> dict:
        rec = self.ctl.app(uri)
        if "function" not in rec.spec:
            raise AppError(rec.uri, "only function apps scale")
        if not isinstance(to, int) or isinstance(to, bool) or not 1 <= to <= 64:
            raise AppError(rec.uri, "--to: a whole number 1..64")
        fn = self._function(uri, rec.spec)
        after: dict = {}
        devices = list(rec.devices)
        added: dict = {}
        reasons = list(rec.reasons)
        if to > len(devices):
            candidates = self._candidates(uri, rec.spec)
            for _ in range(to - len(devices)):
                dev, add, why = self._place_one(uri, fn, rec.spec, candidates,
                                                {d.split(":")[0] for d in devices}, after)
                devices.append(dev)
                added = add or added
                reasons += [f"scaled out to {dev}: {w}" for w in why]
        else:
            for d in devices[to:]:
                self._without(rec, d, after)
            devices = devices[:to]
        new_rec = _moved(rec, devices, added, tuple(reasons))
        records = self.ctl.change(f"scale {rec.uri} to {to}", after, {rec.uri: new_rec})
        return {"uri": rec.uri, "devices": devices, "changes": [r.to_json() for r in records]}


def _caps(h) -> set[str]:
    from ..plan.execute import capabilities
    return capabilities(h)


def _added(old: Program, new: Program) -> dict:
    """Names the new program has that the old one does not."""
    def names(items):
        return [x.name for x in items]
    out = {"tables": [n for n in names(new.tables) if n not in names(old.tables)],
           "actions": [n for n in names(new.actions) if n not in names(old.actions)],
           "maps": [n for n in names(new.maps) if n not in names(old.maps)]}
    out["other"] = (new.parser != old.parser or new.headers != old.headers
                    or new.metadata != old.metadata)
    return out


def _moved(rec: AppRecord, devices: list[str], added: dict, reasons: tuple) -> AppRecord:
    return replace(rec, devices=tuple(devices),
                   tables=rec.tables or tuple(added.get("tables", ())),
                   actions=rec.actions or tuple(added.get("actions", ())),
                   maps=rec.maps or tuple(added.get("maps", ())), reasons=tuple(reasons))


def _summary(value):
    """A map's contents, short: non-zero slots of an array, entries of a hash."""
    if isinstance(value, list):
        nz = {i: v for i, v in enumerate(value) if v not in (0, (0, 0))}
        return {"size": len(value), "non_zero": len(nz),
                "first": {str(i): v for i, v in list(nz.items())[:8]}}
    return {"entries": len(value), "first": {str(k): v for k, v in list(value.items())[:8]}}


def _counters(h, rec: AppRecord) -> dict:
    """Packets the app's device counted: a host program's `pkts` counter, or on a switch
    the packets its ports received (the app's table sees each one)."""
    prog = h.program
    if h.kind == "host" and prog.map("pkts") is not None:
        v = h.read_map("pkts")
        return {"packets": sum(p for p, _ in v) if isinstance(v, list) else 0}
    if h.kind != "host":
        return {"packets": sum(c.get("rx_packets", 0) for c in h.port_counters().values())}
    return {}
