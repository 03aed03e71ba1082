"""A bmv2 switch running a user's own P4 program (compiler/p4_user.py) instead of a program
of the lab's model: same process, sockets and scratch-load check as Bmv2Switch, but its
tables, actions and entries are the P4Info's (full names), its entries come from the
runtime JSON and the controller, and its program is replaced by another user program
with bmv2's hitless path:

  1. everything the new pipeline must hold is built for the new P4Info first (an entry it
     cannot hold fails here, nothing touched); the pipeline is loaded once by a scratch
     simple_switch (what bmv2 refuses is refused with its message);
  2. VERIFY_AND_SAVE: the new pipeline is saved beside the running one;
  3. its entries, table defaults and multicast groups are written (they land in the saved
     pipeline: bmv2's runtime calls address it until the commit);
  4. COMMIT: bmv2 swaps pipelines between two packets.
A failure in 3 commits the saved pipeline and puts the old program back the same way.
Which entries the new program keeps (carried: same table name, keys and action) and which
come from the new runtime file is the controller's decision (control/p4_swap.py).
"""
from __future__ import annotations

import os
import shutil
import time

from ..compiler.p4_user import (EXACT, LPM, RANGE, TERNARY, P4Info, UserP4, dont_care,
                                parse_p4info)
from ..errors import EnvironmentMissing, TargetError
from .bmv2_switch import QUIET_LOG, Bmv2Prepared, Bmv2Switch, _election_id
from .ebpf_datapath import Entry


class _Named:
    """What Bmv2Switch's load check names in its messages (a user program has no model)."""

    def __init__(self, name: str):
        self.name = name


class P4ProgramSwitch(Bmv2Switch):
    """Switch target on bmv2 running a user's P4 program."""

    def __init__(self, name: str, node, ports: dict, run_dir: str):
        super().__init__(name, node, ports, run_dir)
        self.p4: UserP4 | None = None
        self.info: P4Info | None = None
        self.last_notes: list[str] = []

    # --- life cycle -----------------------------------------------------------------------
    def boot_p4(self, ref: UserP4, entries=(), timeout_s: float = 15.0) -> None:
        """Start simple_switch_grpc with the program, its defaults, groups and entries."""
        exe = shutil.which("simple_switch_grpc")
        if exe is None:
            raise EnvironmentMissing("simple_switch_grpc not found: install p4lang-bmv2")
        sock = os.path.join(self.run_dir, f"{self.device}.grpc")
        args = [exe, "--no-p4", "--device-id", "0", "--thrift-port", "9090", *QUIET_LOG]
        for number, (ifname, _) in sorted(self.ports.items()):
            args += ["-i", f"{number}@{ifname}"]
        args += ["--", "--grpc-server-addr", f"unix:{sock}"]
        self._args = tuple(args)
        self._launch(self._prepared(ref), timeout_s)
        self._use(ref)
        self._write(self._extras(ref, self.info) + self._inserts_for(entries, self.info))

    def _prepared(self, ref: UserP4) -> Bmv2Prepared:
        info_text, device_json = ref.read()
        return Bmv2Prepared(_Named(ref.name), info_text, device_json, 0.0,
                            info=parse_p4info(info_text, ref.p4info_path))

    def _use(self, ref: UserP4) -> None:
        self.p4 = ref
        self.info = P4Info(parse_p4info(ref.read()[0], ref.p4info_path))

    def descriptor(self) -> dict:
        return {**super().descriptor(), "p4": self.p4.to_json() if self.p4 else {}}

    @classmethod
    def adopt_running(cls, desc, ports: dict, run_dir: str, ref: UserP4,
                      env: dict[str, str]) -> "P4ProgramSwitch":
        """Take over a running switch (a new P4Runtime session with a higher election id);
        a dead one is left for health()/heal()."""
        from .netlink import NamespaceNode
        sw = cls(desc.name, NamespaceNode(desc.netns, env), ports, run_dir)
        sw._args, sw._pid = tuple(desc.args), desc.pid
        sw._use(ref)
        if sw._alive():
            from .p4runtime import P4RuntimeClient
            sw._client = P4RuntimeClient(desc.name, desc.grpc, election_id=_election_id())
            sw._client.p4info = sw._client.get_p4info()
            sw._thrift = sw._connect_thrift(10.0)
        return sw

    def heal(self, problems: list[str]) -> list[str]:
        """Restart a dead switch with its program, defaults and groups (the controller
        puts its entries back)."""
        if "dead" not in problems:
            return []
        self.release()
        self._launch(self._prepared(self.p4))
        self._pid = self._proc.pid
        self._write(self._extras(self.p4, self.info))
        return [f"simple_switch_grpc was dead: restarted (pid {self._pid}) with {self.p4.name}"]

    def running_p4(self) -> str:
        """The sha256 of the program the switch runs, as far as the lab knows."""
        return self.p4.sha256 if self.p4 else ""

    # --- replacing the program ------------------------------------------------------------
    def load_p4(self, ref: UserP4) -> None:
        """VERIFY_AND_COMMIT of a program with its defaults and groups, no entries (a
        repair: the controller puts the entries back)."""
        prepared = self._prepared(ref)
        self._check_loadable(prepared)
        self._client.set_pipeline(prepared.info, prepared.device_json, "VERIFY_AND_COMMIT")
        self._use(ref)
        self._write(self._extras(ref, self.info))

    def swap_p4(self, ref: UserP4, entries) -> tuple[float, float]:
        """Replace the running program by `ref` holding `entries` (steps 1-4 above).
        Returns (ms from the save to the commit, ms of the scratch load check)."""
        prepared = self._prepared(ref)
        new_info = P4Info(prepared.info)
        updates = self._extras(ref, new_info) + self._inserts_for(entries, new_info)  # step 1
        load_ms = self._check_loadable(prepared)
        old, old_entries = self.p4, self._read_all()
        t0 = time.perf_counter()
        self._client.set_pipeline(prepared.info, prepared.device_json, "VERIFY_AND_SAVE")
        try:
            self._write(updates)
        except TargetError as exc:
            self._put_back(old, old_entries, exc)
            raise
        self._client.set_pipeline(None, None, "COMMIT")
        ms = (time.perf_counter() - t0) * 1e3
        self._use(ref)
        return ms, load_ms

    def _put_back(self, old: UserP4, entries, cause: TargetError) -> None:
        try:
            self._client.set_pipeline(None, None, "COMMIT")
            prepared = self._prepared(old)
            info = P4Info(prepared.info)
            self._client.set_pipeline(prepared.info, prepared.device_json, "VERIFY_AND_SAVE")
            self._write(self._extras(old, info) + self._inserts_for(entries, info))
            self._client.set_pipeline(None, None, "COMMIT")
            self._use(old)
        except TargetError as exc:
            raise TargetError(self.device, f"{cause.message}; putting {old.name} back failed "
                              f"too: {exc.message}") from exc

    def prepare(self, program):
        raise TargetError(self.device, f"runs its own P4 program {self.p4.name if self.p4 else ''}"
                          ": replace it with `swap SWITCH new.p4 [runtime.json]`, not a "
                          "program of the lab's model")

    stage = commit = prepare

    def abort(self, prepared) -> None:
        pass

    # --- messages -------------------------------------------------------------------------
    def _table(self, info: P4Info, name: str):
        t = info.table(name)
        if t is None:
            raise TargetError(self.device, f"no table {name!r} in program "
                              f"{self.p4.name if self.p4 else '(none)'}")
        return t

    def _entry_msg(self, info: P4Info, e: Entry, with_action: bool = True):
        pb = self._client._pb
        t = self._table(info, e.table)
        msg = pb.TableEntry(table_id=t.preamble.id)
        for mf, value in zip(t.match_fields, e.match):
            if value == dont_care(mf):
                continue            # P4Runtime: a don't-care key is left out
            width = (mf.bitwidth + 7) // 8
            fm = msg.match.add(field_id=mf.id)
            if mf.match_type == LPM:
                fm.lpm.value, fm.lpm.prefix_len = int(value[0]).to_bytes(width, "big"), value[1]
            elif mf.match_type == TERNARY:
                fm.ternary.value = int(value[0]).to_bytes(width, "big")
                fm.ternary.mask = int(value[1]).to_bytes(width, "big")
            elif mf.match_type == RANGE:
                fm.range.low = int(value[0]).to_bytes(width, "big")
                fm.range.high = int(value[1]).to_bytes(width, "big")
            else:
                fm.exact.value = int(value).to_bytes(width, "big")
        if e.priority:
            msg.priority = e.priority
        if with_action:
            self._action_msg(info, msg, e.action, e.args)
        return msg

    def _action_msg(self, info: P4Info, msg, action: str, args) -> None:
        a = info.actions.get(action)
        if a is None:
            raise TargetError(self.device, f"no action {action!r} in program {self.p4.name}")
        msg.action.action.action_id = a.preamble.id
        for p, v in zip(a.params, args):
            msg.action.action.params.add(param_id=p.id,
                                         value=int(v).to_bytes((p.bitwidth + 7) // 8, "big"))

    def _inserts_for(self, entries, info: P4Info) -> list:
        return [("table", "INSERT", self._entry_msg(info, e))
                for e in sorted(entries, key=repr)]

    def _extras(self, ref: UserP4, info: P4Info) -> list:
        """Table defaults and multicast groups of the program's runtime file."""
        pb = self._client._pb if self._client else None
        out = []
        for table, action, args in ref.defaults:
            msg = pb.TableEntry(table_id=self._table(info, table).preamble.id,
                                is_default_action=True)
            self._action_msg(info, msg, action, args)
            out.append(("table", "MODIFY", msg))
        for gid, replicas in ref.multicast:
            pre = pb.PacketReplicationEngineEntry()
            pre.multicast_group_entry.multicast_group_id = gid
            for port, inst in replicas:
                pre.multicast_group_entry.replicas.add(egress_port=port, instance=inst)
            out.append(("pre", "INSERT", pre))
        return out

    def _write(self, updates: list) -> None:
        """Table entries through the client's Write (its errors name the entry); multicast
        groups in a Write of their own."""
        tables = [(kind, msg) for what, kind, msg in updates if what == "table"]
        if tables:
            self._client.write(tables)
        pre = [(kind, msg) for what, kind, msg in updates if what == "pre"]
        if pre:
            c = self._client
            req = c._pb.WriteRequest(device_id=c.device_id, election_id=c.election)
            for kind, msg in pre:
                u = req.updates.add(type=getattr(c._pb.Update, kind))
                u.entity.packet_replication_engine_entry.CopyFrom(msg)
            c._call("multicast groups", c._stub.Write, req)

    # --- tables ---------------------------------------------------------------------------
    def insert(self, table: str, match: tuple, action: str, args: tuple = (),
               priority: int = 0, modify: bool = False) -> None:
        e = Entry(table, tuple(match), action, tuple(args), priority)
        self._client.write([("MODIFY" if modify else "INSERT", self._entry_msg(self.info, e))])

    def delete(self, table: str, match: tuple, priority: int = 0) -> None:
        e = Entry(table, tuple(match), "", (), priority)
        self._client.write([("DELETE", self._entry_msg(self.info, e, with_action=False))])

    def set_default(self, table: str, action: str, args: tuple = ()) -> None:
        pb = self._client._pb
        msg = pb.TableEntry(table_id=self._table(self.info, table).preamble.id,
                            is_default_action=True)
        self._action_msg(self.info, msg, action, args)
        self._client.write([("MODIFY", msg)])

    def default(self, table: str) -> tuple[str, tuple[int, ...]]:
        t = self._table(self.info, table).preamble.name
        for tb, action, args in self.p4.defaults:
            if tb == t:
                return action, tuple(args)
        return "(the program's own)", ()

    def entries(self, table: str) -> list[Entry]:
        t = self._table(self.info, table).preamble.name
        return [e for e in self._read_all() if e.table == t]

    def _read_all(self) -> list[Entry]:
        """Every table's entries in one Read, as Entry with the P4Info's names and every
        key (a key a read leaves out is a don't-care)."""
        info = self.info
        out = []
        for msg in self._client.read_entries(None):
            if msg.is_default_action:
                continue
            t = info.table_ids.get(msg.table_id)
            if t is None:
                continue
            given = {fm.field_id: fm for fm in msg.match}
            match = []
            for mf in t.match_fields:
                fm = given.get(mf.id)
                if fm is None:
                    match.append(dont_care(mf))
                    continue
                kind = fm.WhichOneof("field_match_type")
                m = getattr(fm, kind)
                if kind == "lpm":
                    match.append((int.from_bytes(m.value, "big"), m.prefix_len))
                elif kind == "ternary":
                    match.append((int.from_bytes(m.value, "big"), int.from_bytes(m.mask, "big")))
                elif kind == "range":
                    match.append((int.from_bytes(m.low, "big"), int.from_bytes(m.high, "big")))
                else:
                    match.append(int.from_bytes(m.value, "big"))
            act = msg.action.action
            a = info.by_id.get(act.action_id)
            out.append(Entry(t.preamble.name, tuple(match),
                             a.preamble.name if a else str(act.action_id),
                             tuple(int.from_bytes(p.value, "big")
                                   for p in sorted(act.params, key=lambda p: p.param_id)),
                             msg.priority))
        return sorted(out, key=lambda x: (x.table, repr(x.match)))

    def describe(self) -> dict:
        """The program's tables as the prompt's `tables` shows them."""
        info = self.info
        kinds = {EXACT: "exact", LPM: "lpm", TERNARY: "ternary", RANGE: "range"}
        held = self._read_all()
        tables = []
        for t in info.msg.tables:
            name = t.preamble.name
            tables.append({"name": name,
                           "keys": [f"{mf.name}:{kinds.get(mf.match_type, mf.match_type)}"
                                    for mf in t.match_fields],
                           "actions": list(info.table_actions(t)),
                           "default": self.default(name)[0], "size": t.size,
                           "entries": sum(1 for e in held if e.table == name)})
        return {"device": self.device, "kind": "bmv2", "program": self.p4.name,
                "parser": [], "tables": tables,
                "maps": [r.preamble.name for r in info.msg.registers],
                "notes": [f"a P4 program of the user's own ({os.path.basename(self.p4.source)}, "
                          f"sha256 {self.p4.sha256[:12]}); its parser is its own"]}

    # --- state ----------------------------------------------------------------------------
    def read_map(self, name: str):
        """A register array of the program (full name or alias), read over thrift."""
        regs = {r.preamble.name: r for r in self.info.msg.registers}
        regs.update({r.preamble.alias: r for r in self.info.msg.registers})
        if name not in regs:
            raise TargetError(self.device, f"no register {name!r} in program {self.p4.name} "
                              f"(registers: {', '.join(sorted(regs)) or 'none'})")
        full = regs[name].preamble.name
        return self._thrift.read_registers([full])[full]

    def write_map(self, name: str, index: int, value: int) -> None:
        self.read_map(name)
        self._thrift.write_registers({name: {index: value}})

    def port_counters(self) -> dict:
        """A user's program has no per-port counters of the lab's (those are registers of
        the lab's own program, and bmv2 keeps none of its own): its P4 counter arrays'
        non-zero cells instead, read over P4Runtime."""
        info = self.info
        if not info.msg.counters:
            return {"note": f"program {self.p4.name} declares no P4 counters; per-port "
                    "counters exist only in the lab's own program (bmv2 keeps none)"}
        pb = self._client._pb
        req = pb.ReadRequest(device_id=self._client.device_id)
        req.entities.add().counter_entry.counter_id = 0      # every counter array
        out = {}
        try:
            for resp in self._client._stub.Read(req):
                for ent in resp.entities:
                    c = ent.counter_entry
                    if c.data.packet_count or c.data.byte_count:
                        name = next((x.preamble.name for x in info.msg.counters
                                     if x.preamble.id == c.counter_id), str(c.counter_id))
                        out[f"{name}[{c.index.index}]"] = {"packets": c.data.packet_count,
                                                           "bytes": c.data.byte_count}
        except self._client._grpc.RpcError as exc:
            raise TargetError(self.device, f"counter read: {exc.code().name}: "
                              f"{exc.details()}") from exc
        return out or {"note": "every counter cell is 0"}
