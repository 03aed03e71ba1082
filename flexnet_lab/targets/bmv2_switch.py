"""A bmv2 switch: simple_switch_grpc in the switch's own namespace, driven over P4Runtime.

Its gRPC server listens on a unix socket in the run's folder (the controller reaches it
from its own namespace); bmv2's thrift server, which always binds 0.0.0.0:9090, is then
reachable only inside the switch's namespace. The program comes from the same model as
the eBPF switch's, compiled by the P4 backend and p4c-bm2-ss.

A program change is prepare (generate P4, compile with p4c; nothing reaches the switch)
then commit: entries of tables the new program drops are deleted first (PI cannot
reconcile entries of a table that disappears), then RECONCILE_AND_COMMIT swaps the
pipeline per packet and replays the surviving tables' entries. PI also replays P4 counter
entries as INSERTs, which fails; that is why the P4 backend encodes counters as registers.
bmv2 starts the new pipeline with registers at zero: carrying them over (thrift) is not
done yet, and every change says so in its record.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from ..compiler.p4 import write_p4
from ..errors import EnvironmentMissing, TargetError
from ..program.model import Program
from .ebpf_datapath import Entry
from .p4runtime import P4RuntimeClient

CONTROL = "ingress"


@dataclass
class Bmv2Prepared:
    program: Program
    p4info: str
    device_json: bytes
    compile_ms: float
    load_ms: float = 0.0
    created: tuple = ()


class Bmv2Switch:
    """Switch target on bmv2 (simple_switch_grpc) over P4Runtime."""

    kind = "bmv2"
    hook = "p4"

    def __init__(self, name: str, node, ports: dict[int, tuple[str, bool]], run_dir: str,
                 compiled: dict | None = None):
        self.device, self.node, self.ports, self.run_dir = name, node, ports, run_dir
        self.program: Program | None = None
        self.last_notes: list[str] = []
        # p4c outputs per program, shared by the lab's bmv2 switches (one compile each)
        self._compiled: dict[Program, Bmv2Prepared] = {} if compiled is None else compiled
        self._proc = None
        self._client: P4RuntimeClient | None = None
        self.log_path = os.path.join(run_dir, f"{name}.bmv2.log")

    # --- life cycle -----------------------------------------------------------------------
    def boot(self, program: Program, timeout_s: float = 15.0) -> None:
        exe = shutil.which("simple_switch_grpc")
        if exe is None:
            raise EnvironmentMissing("simple_switch_grpc not found: install p4lang-bmv2")
        prepared = self.prepare(program)
        sock = os.path.join(self.run_dir, f"{self.device}.grpc")
        args = [exe, "--no-p4", "--device-id", "0"]
        for number, (ifname, _) in sorted(self.ports.items()):
            args += ["-i", f"{number}@{ifname}"]
        args += ["--", "--grpc-server-addr", f"unix:{sock}"]
        log = open(self.log_path, "w")
        self._proc = self.node.popen(args, stdout=log, stderr=log)
        try:
            self._client = P4RuntimeClient(self.device, f"unix:{sock}", timeout_s=timeout_s)
        except TargetError as exc:
            raise TargetError(self.device, f"simple_switch_grpc did not come up: {exc.message}; "
                              f"log ends: {self._log_tail()}") from exc
        self._client.set_pipeline(prepared.p4info, prepared.device_json, "VERIFY_AND_COMMIT")
        # default actions come with the P4 source (declared from the model, not const)
        self.program = program

    def _log_tail(self) -> str:
        try:
            with open(self.log_path) as fh:
                return fh.read()[-400:].strip() or "(empty)"
        except OSError:
            return "(no log)"

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # the server may be gone already
                pass
            self._client = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    # --- program changes ------------------------------------------------------------------
    def prepare(self, program: Program) -> Bmv2Prepared:
        """Compile (p4c, ~1 s; cached per program) — nothing reaches the switch."""
        if program not in self._compiled:
            self._compiled[program] = self._compile(program)
        cached = self._compiled[program]
        return Bmv2Prepared(program, cached.p4info, cached.device_json, 0.0)

    def _compile(self, program: Program) -> Bmv2Prepared:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=self.run_dir) as tmp:
            paths = write_p4(program, tmp)
            info = next((p for p in paths if ".p4info" in p), None)
            js = next((p for p in paths if p.endswith(".json")), None)
            if info is None or js is None:
                raise EnvironmentMissing("p4c-bm2-ss not found: install p4lang-p4c")
            with open(info) as fh, open(js, "rb") as fj:
                prepared = Bmv2Prepared(program, fh.read(), fj.read(), 0.0)
        prepared.compile_ms = (time.perf_counter() - t0) * 1e3
        return prepared

    def commit(self, prepared: Bmv2Prepared) -> float:
        """Delete entries of dropped tables, then reconcile-and-commit: returns ms.
"""
        old = self.program
        gone = [t.name for t in old.tables if prepared.program.table(t.name) is None] if old else []
        for table in gone:
            for e in self._client.read_entries(f"{CONTROL}.{table}"):
                self._client.write([("DELETE", e)])
        t0 = time.perf_counter()
        self._client.set_pipeline(prepared.p4info, prepared.device_json, "RECONCILE_AND_COMMIT")
        elapsed = (time.perf_counter() - t0) * 1e3
        self.program = prepared.program
        maps = [m.name for m in prepared.program.maps]
        self.last_notes = ([f"bmv2 reset the state of {', '.join(maps)} (registers are not "
                            "carried across a pipeline change yet)"] if maps else [])
        return elapsed

    def abort(self, prepared: Bmv2Prepared) -> None:
        """Nothing was loaded on the device by prepare()."""

    def adopt(self, program: Program) -> None:
        self.program = program

    # --- tables ---------------------------------------------------------------------------
    def _check(self, table: str) -> None:
        if self.program is None or self.program.table(table) is None:
            raise TargetError(self.device, f"no table {table!r} in program "
                              f"{self.program.name if self.program else '(none)'}")

    def insert(self, table: str, match: tuple, action: str, args: tuple = (),
               priority: int = 0, modify: bool = False) -> None:
        self._check(table)
        entry = self._client.table_entry(f"{CONTROL}.{table}", match, f"{CONTROL}.{action}",
                                         tuple(args), priority)
        self._client.write([("MODIFY" if modify else "INSERT", entry)])

    def delete(self, table: str, match: tuple, priority: int = 0) -> None:
        self._check(table)
        self._client.write([("DELETE", self._client.table_entry(f"{CONTROL}.{table}", match,
                                                                priority=priority))])

    def set_default(self, table: str, action: str, args: tuple = ()) -> None:
        self._check(table)
        entry = self._client.table_entry(f"{CONTROL}.{table}", (), f"{CONTROL}.{action}",
                                         tuple(args))
        entry.is_default_action = True
        self._client.write([("MODIFY", entry)])

    def default(self, table: str) -> tuple[str, tuple[int, ...]]:
        t = self.program.table(table)
        return t.default_action, tuple(t.default_args)

    def entries(self, table: str) -> list[Entry]:
        """Entries read back from the switch over P4Runtime."""
        self._check(table)
        info = self._client.p4info
        tinfo = next(t for t in info.tables if t.preamble.name == f"{CONTROL}.{table}")
        kinds = {mf.id: mf.match_type for mf in tinfo.match_fields}
        actions = {a.preamble.id: a.preamble.name.split(".", 1)[-1] for a in info.actions}
        out = []
        for e in self._client.read_entries(f"{CONTROL}.{table}"):
            if e.is_default_action:
                continue
            match = []
            for fm in e.match:
                kind = kinds[fm.field_id]
                if kind == 3:      # P4Info MatchType LPM
                    match.append((int.from_bytes(fm.lpm.value, "big"), fm.lpm.prefix_len))
                elif kind == 4:    # TERNARY
                    match.append((int.from_bytes(fm.ternary.value, "big"),
                                  int.from_bytes(fm.ternary.mask, "big")))
                else:
                    match.append(int.from_bytes(fm.exact.value, "big"))
            act = e.action.action
            out.append(Entry(table, tuple(match), actions.get(act.action_id, str(act.action_id)),
                             tuple(int.from_bytes(p.value, "big") for p in act.params),
                             e.priority))
        return sorted(out, key=lambda x: repr(x.match))

    def port_counters(self) -> dict:
        """Not read from bmv2 yet (P4Runtime counter reads): empty."""
        return {}
