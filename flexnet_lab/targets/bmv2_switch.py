"""A bmv2 switch: simple_switch_grpc in the switch's own namespace, driven over P4Runtime.

Its gRPC server listens on a unix socket in the run's folder (the controller reaches it
from its own namespace); bmv2's thrift server, which always binds 0.0.0.0, is then
reachable only inside the switch's namespace, where the controller opens its register
connection. The program comes from the same model as the eBPF switch's, compiled by the
P4 backend and p4c-bm2-ss.

A program change is prepare (generate P4, compile with p4c; nothing reaches the switch),
stage (steps 1-4) and commit (step 5): every surviving entry and register value is in the
new pipeline before it carries a packet. A change of several switches stages all of them,
then commits them back to back.
  1. read the surviving tables' entries (P4Runtime) and build them for the new P4Info —
     an entry the new pipeline cannot hold fails here, with nothing touched;
  2. read the surviving maps' registers (thrift; P4Runtime cannot);
  3. VERIFY_AND_SAVE: bmv2 loads the new pipeline beside the running one. bmv2 1.15 does
     not recover from a pipeline it cannot load here (the half-built one stays "saved" and
     wedges its runtime interface), so each new pipeline is first loaded by a scratch
     `simple_switch` in the switch's namespace: what bmv2 refuses is refused there, with
     its message, and the running switch is never touched;
  4. write the entries (P4Runtime) and register values (thrift) — both land in the saved
     pipeline, since bmv2's runtime calls address the saved one until the commit;
  5. COMMIT: bmv2 swaps pipelines between packets (it drains the packets in flight).
Register increments the old pipeline counts between steps 2 and 5 are not carried; each
change records that window. Every load also writes the version tag's registers (stamp,
tagging, trusted and tag ports, a fresh version number for the oracle) before the commit;
per-packet changes hold two versions in one pipeline (bmv2_two_phase.py). (RECONCILE_AND_COMMIT does 3-5 for entries alone, and PI
replays P4 counter entries as INSERTs, which fails: so maps are registers on bmv2.)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from ..compiler.p4 import VCOUNT_REG, map_objects, tag_support, write_p4
from ..errors import EnvironmentMissing, TargetError
from ..program.model import Map, Program
from .bmv2_thrift import Bmv2Thrift
from .ebpf_datapath import Entry
from .netlink import in_namespace
from .p4runtime import P4RuntimeClient
from .port_counters import read_port_counters
from .bmv2_two_phase import TwoVersions, fresh_version

CONTROL = "ingress"
THRIFT_PORT = 9090      # inside the switch's own namespace only
SCRATCH_THRIFT_PORT = 9091
EGRESS_QUEUE_PKTS = 1024
# Without --log-console/--log-file bmv2 logs into a null sink, but at its default level
# (trace) it still formats every per-packet message first (spdlog formats before it hands a
# message to its sinks): 40 % of a switch's CPU per packet, measured here (25 -> 14 % of a
# core per 1,000 packets/s), for nothing written anywhere. Off, nothing is formatted.
QUIET_LOG = ("--log-level", "off")
_ENCODED = "encoded"     # key of the shared cache's encoded pipeline configs (_save)


@dataclass
class Bmv2Prepared:
    program: Program
    p4info: str
    device_json: bytes
    compile_ms: float
    load_ms: float = 0.0
    created: tuple = ()
    info: object = None          # the parsed P4Info, filled on first use
    staged: _Staged | None = None
    version: int = 0             # the number probes record for this load (fresh per load)


@dataclass
class _Staged:
    """What stage() did, for commit() and abort()."""
    t0: float
    t_read: float
    entries: list                # the running pipeline's entries
    values: dict                 # its register values, read at t_read
    dropped: int
    carried: int
    arrays: int


class Bmv2Switch(TwoVersions):
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
        self._thrift: Bmv2Thrift | None = None
        self._loadable: set[bytes] = set()     # digests of pipelines bmv2 has loaded
        self._args: tuple = ()
        self._pid = 0
        self.log_path = os.path.join(run_dir, f"{name}.bmv2.log")
        self._init_two_versions()

    # --- life cycle -----------------------------------------------------------------------
    def boot(self, program: Program, timeout_s: float = 15.0) -> None:
        exe = shutil.which("simple_switch_grpc")
        if exe is None:
            raise EnvironmentMissing("simple_switch_grpc not found: install p4lang-bmv2")
        prepared = self._compiled_copy(program)   # a fresh switch: nothing to protect
        sock = os.path.join(self.run_dir, f"{self.device}.grpc")
        args = [exe, "--no-p4", "--device-id", "0", "--thrift-port", str(THRIFT_PORT),
                *QUIET_LOG]
        for number, (ifname, _) in sorted(self.ports.items()):
            args += ["-i", f"{number}@{ifname}"]
        args += ["--", "--grpc-server-addr", f"unix:{sock}"]
        self._args = tuple(args)
        self._launch(prepared, timeout_s)
        # default actions come with the P4 source (declared from the model, not const)
        self.program = program

    def _launch(self, prepared: Bmv2Prepared, timeout_s: float = 15.0) -> None:
        """Start simple_switch_grpc with self._args, connect, load the pipeline."""
        sock = self._args[-1].split("unix:", 1)[1]
        if os.path.exists(sock):
            os.unlink(sock)
        self._offloads_off()
        log = open(self.log_path, "a")
        self._proc = self.node.popen(list(self._args), stdout=log, stderr=log)
        log.close()
        try:
            self._client = P4RuntimeClient(self.device, f"unix:{sock}", timeout_s=timeout_s,
                                           election_id=_election_id())
        except TargetError as exc:
            raise TargetError(self.device, f"simple_switch_grpc did not come up: {exc.message}; "
                              f"log ends: {self._log_tail()}") from exc
        self._thrift = self._connect_thrift(timeout_s)
        self._thrift.set_egress_queue_depth(EGRESS_QUEUE_PKTS)
        self._client.set_pipeline(self._info(prepared), prepared.device_json,
                                  "VERIFY_AND_COMMIT")
        # a user's own P4 program (bmv2_p4.py) has no tag; a lab program's version number is
        # written after the load (so one compiled pipeline serves every load)
        if isinstance(prepared.program, Program) and tag_support(prepared.program):
            self._version = fresh_version()
            self._thrift.write_registers(self._tag_values(self._version))

    def _offloads_off(self) -> None:
        """Segmentation and receive offloads off on the switch's ports, before bmv2 opens
        them. libpcap (1.10.3, Debian 12) sizes its receive ring's slots at activation: for
        a port with any offload on (tso, gso, gro) a slot holds a whole snaplen (256 KiB),
        so its 2 MiB buffer gives a ring of 8 frames, and a burst of 9 TCP segments that
        arrives while bmv2's receive thread is off the CPU is dropped in the kernel (the
        frames counted by the veth never reach the pipeline). With offloads off, slots are
        MTU-sized: some 1,300 frames. Checksums off too: bmv2 writes raw frames."""
        for ifname, _ in self.ports.values():
            proc = self.node.popen(["ethtool", "-K", ifname, "tx", "off", "tso", "off",
                                    "gso", "off", "gro", "off"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, err = proc.communicate()
            if proc.returncode != 0:
                msg = (err or b"").decode(errors="replace").strip()[:200]
                raise TargetError(self.device, f"ethtool -K {ifname} (offloads off, needed "
                                  f"before bmv2 opens the port) failed: {msg}")

    # --- a controller in another process ------------------------------------------------
    def descriptor(self) -> dict:
        """How a controller in another process reaches and, if need be, restarts it."""
        return {"grpc": self._args[-1], "pid": self._proc.pid if self._proc else 0,
                "args": self._args}

    def release(self) -> None:
        """Close this process's P4Runtime and thrift sessions; the switch keeps running
        (close() still stops the process this object started)."""
        if self._thrift is not None:
            self._thrift.close()
            self._thrift = None
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # the server may be gone already
                pass
            self._client = None

    @classmethod
    def adopt_running(cls, desc, ports: dict, run_dir: str, program: Program,
                      env: dict[str, str], compiled: dict | None = None) -> "Bmv2Switch":
        """Take over a running simple_switch_grpc (desc: the lab's fabric entry; env: the
        run-tagged environment for a restart): a new
        P4Runtime session with a higher election id, its P4Info read back. A dead one is
        left for health()/heal() to restart."""
        from .netlink import NamespaceNode
        sw = cls(desc.name, NamespaceNode(desc.netns, env), ports, run_dir, compiled)
        sw._args, sw.program = tuple(desc.args), program
        # the process may have been restarted since the lab wrote its pid: find it
        sw._pid = _switch_pid(desc.netns) or desc.pid
        if sw._alive():
            sw._client = P4RuntimeClient(desc.name, desc.grpc, election_id=_election_id())
            sw._client.p4info = sw._client.get_p4info()
            sw._thrift = sw._connect_thrift(10.0)
            sw._adopt_tag_state()
        return sw

    def warm(self) -> None:
        """Compile the running program's pipeline into the cache (p4c, ~1 s)."""
        try:
            self._compiled_copy(self.program)
        except Exception:  # a restart compiles it then, and reports what fails
            pass

    def _alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        try:
            with open(f"/proc/{self._pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False

    def health(self) -> list[str]:
        """["dead"] when the simple_switch_grpc process is gone, or dying: its P4Runtime
        socket refuses connections (a killed process takes a moment to be reaped)."""
        return [] if self._alive() and self._answers() else ["dead"]

    def _answers(self) -> bool:
        sock = self._args[-1].split("unix:", 1)[1] if self._args else ""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def heal(self, problems: list[str]) -> list[str]:
        """Restart a dead switch with its pipeline (entries and registers are the
        controller's to put back)."""
        if "dead" not in problems:
            return []
        self.release()
        self._finish_off()
        self._launch(self._compiled_copy(self.program))
        self._pid = self._proc.pid
        return [f"simple_switch_grpc was dead: restarted (pid {self._pid}) with "
                f"{self.program.name}"]

    def _finish_off(self, timeout_s: float = 2.0) -> None:
        """A dying or hung simple_switch_grpc is killed and gone before another starts
        on the same ports."""
        pid = self._proc.pid if self._proc is not None else self._pid
        if not pid:
            return
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if not fh.read().startswith("simple_switch_g"):
                    return      # gone, and its pid taken by another process: not ours
            os.kill(pid, 9)
        except FileNotFoundError:
            return
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def restore_map(self, name: str, values) -> int:
        """Write a map's snapshot (as read_map returned it) back; returns slots written."""
        m = self._map(name)
        objs = self._map_objects(m)
        if m.kind == "counter":
            cols = [{i: v[k] for i, v in enumerate(values) if v[k]} for k in range(2)]
            return self._thrift.write_registers(dict(zip(objs, cols)))
        if m.kind in ("register", "sketch"):
            return self._thrift.write_registers({objs[0]: {i: v for i, v in enumerate(values) if v}})
        return 0

    def _connect_thrift(self, timeout_s: float) -> Bmv2Thrift:
        """bmv2's register interface, a TCP connection opened in the switch's namespace."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock = in_namespace(self.node.netns_path, lambda: socket.create_connection(
                    ("127.0.0.1", THRIFT_PORT), timeout=timeout_s))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return Bmv2Thrift(self.device, sock)
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise TargetError(self.device, f"bmv2's thrift port {THRIFT_PORT} did not "
                                      f"open: {exc}; log ends: {self._log_tail()}") from exc
                time.sleep(0.05)

    def _info(self, prepared: Bmv2Prepared):
        if prepared.info is None:
            prepared.info = self._client.parse_p4info(prepared.p4info)
            cached = self._compiled.get(prepared.program)
            if cached is not None:
                cached.info = prepared.info
        return prepared.info

    def _save(self, prepared: Bmv2Prepared) -> None:
        """VERIFY_AND_SAVE of `prepared`, its request's pipeline part encoded once per
        pipeline and kept in the shared cache (checked by identity: a pipeline whose JSON
        or P4Info object was replaced is encoded anew)."""
        info = self._info(prepared)
        store = self._compiled.setdefault(_ENCODED, {})
        key = (id(prepared.device_json), id(info))
        hit = store.get(key)
        if hit is None or hit[0] is not prepared.device_json or hit[1] is not info:
            hit = store[key] = (prepared.device_json, info,
                                self._client.pipeline_config(info, prepared.device_json))
        self._client.set_pipeline(info, None, "VERIFY_AND_SAVE", config=hit[2])

    def _log_tail(self) -> str:
        try:
            with open(self.log_path) as fh:
                return fh.read()[-400:].strip() or "(empty)"
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the switch this object started, then its sessions. Closing the gRPC
        channel can block for good after a signal interrupted the process (seen with
        grpcio 1.85 on SIGTERM right after bring-up), so teardown gives it 2 s."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        closer = threading.Thread(target=self.release, daemon=True, name=f"close-{self.device}")
        closer.start()
        closer.join(2.0)

    # --- program changes ------------------------------------------------------------------
    def prepare(self, program: Program) -> Bmv2Prepared:
        """Compile (p4c, ~1 s; cached per program) and check that bmv2 loads the result
        (a scratch simple_switch, ~30 ms once per pipeline) — nothing reaches the switch."""
        prepared = self._compiled_copy(program)
        prepared.load_ms = self._check_loadable(prepared)
        return prepared

    def _compiled_copy(self, program: Program) -> Bmv2Prepared:
        if program not in self._compiled:
            self._compiled[program] = self._compile(program)
        cached = self._compiled[program]
        return Bmv2Prepared(program, cached.p4info, cached.device_json, 0.0, info=cached.info)

    def _compile(self, program: Program) -> Bmv2Prepared:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=self.run_dir) as tmp:
            paths = write_p4(program, tmp)
            info = next((p for p in paths if ".p4info" in p), None)
            js = next((p for p in paths if p.endswith(".json")), None)
            if info is None or js is None:
                raise EnvironmentMissing("p4c-bm2-ss not found: install p4lang-p4c")
            with open(info) as fh, open(js, "rb") as fj:
                prepared = Bmv2Prepared(program, fh.read(), compact_pipeline(fj.read()), 0.0)
        prepared.compile_ms = (time.perf_counter() - t0) * 1e3
        return prepared

    def stage(self, prepared: Bmv2Prepared) -> None:
        """Steps 1-4: the new pipeline saved beside the running one, holding every
        surviving entry and register value; the running one still carries traffic. A
        change of several switches stages them all, then commits them back to back."""
        new, info = prepared.program, self._info(prepared)
        self._check_loadable(prepared)     # done by prepare() unless the pipeline changed
        t0 = time.perf_counter()
        entries = self._read_entries()     # every table's, one Read
        updates, dropped = self._inserts(entries, new, info)   # unbuildable: nothing touched
        registers = self._carried_registers(new)
        t_read = time.perf_counter()
        values = self._read_for_load(registers)
        if not tag_support(new):
            values.pop(f"{CONTROL}.{VCOUNT_REG}", None)
        prepared.version = fresh_version()
        self._save(prepared)
        try:
            carried = self._fill(updates, values, self._tag_values(prepared.version)
                                 if tag_support(new) else None)
        except TargetError as exc:
            self._revert(entries, values, exc)
            raise
        prepared.staged = _Staged(t0, t_read, entries, values, dropped, carried,
                                  len(registers))

    def commit(self, prepared: Bmv2Prepared) -> float:
        """Step 5 (staging first if that was not done); returns ms from reading the
        entries to the new pipeline carrying traffic."""
        if prepared.staged is None:
            self.stage(prepared)
        st, prepared.staged = prepared.staged, None
        self._client.set_pipeline(None, None, "COMMIT")
        t_swap = time.perf_counter()
        self.program = prepared.program
        self._version = prepared.version
        self.last_notes = []
        if st.dropped:
            self.last_notes.append(f"{st.dropped} entries not carried (their table or action "
                                   "is gone)")
        if st.arrays:
            self.last_notes.append(
                f"registers carried: {st.arrays} arrays, {st.carried} non-zero slots; "
                f"increments in the last {(t_swap - st.t_read) * 1e3:.1f} ms before the swap "
                "(after the read) are not carried")
        return (t_swap - st.t0) * 1e3

    def abort(self, prepared: Bmv2Prepared) -> None:
        """Undo prepare() (nothing on the device) or stage(): bmv2 cannot drop a saved
        pipeline, so it is committed and the old program put back the same hitless way."""
        st, prepared.staged = prepared.staged, None
        if st is not None:
            self._revert(st.entries, st.values, None)

    def _fill(self, updates: list, values: dict[str, list[int]],
              tag: dict | None = None) -> int:
        """Entries and register values into the saved pipeline (and the version tag's
        registers, `tag`: written, not counted); register slots written."""
        slots = {n: {i: v for i, v in enumerate(vals) if v} for n, vals in values.items()}
        # one round trip, answered while the entries are written (P4Runtime)
        self._thrift.write_registers(slots, tag or {}, wait=False)
        try:
            if updates:
                self._client.write(updates)
        except TargetError:
            try:
                self._thrift.finish()
            except TargetError:     # the entries' error is the one to report
                pass
            raise
        self._thrift.finish()
        return sum(len(v) for v in slots.values())

    def _save_fill_commit(self, prepared: Bmv2Prepared, updates: list,
                          values: dict[str, list[int]], tag: dict | None) -> None:
        """One whole load: `prepared` saved beside the running pipeline, filled (entries,
        register values, the tag's registers), committed."""
        self._save(prepared)
        self._fill(updates, values, tag)
        self._client.set_pipeline(None, None, "COMMIT")

    def _inserts(self, entries: list[Entry], program: Program, info) -> tuple[list, int]:
        """INSERTs of the entries `program` can hold, built for its P4Info; how many not."""
        updates, dropped = [], 0
        for e in entries:
            t = program.table(e.table)
            if t is None or e.action not in t.actions:
                dropped += 1
                continue
            updates.append(("INSERT", self._client.table_entry(
                f"{CONTROL}.{e.table}", e.match, f"{CONTROL}.{e.action}", e.args, e.priority,
                p4info=info)))
        return updates, dropped

    def _revert(self, entries: list[Entry], values: dict, cause: TargetError | None) -> None:
        """A pipeline is saved: commit it, then the running program again with its entries
        and register values (save, fill, commit)."""
        old = self.program
        try:
            self._client.set_pipeline(None, None, "COMMIT")
            back = self._compiled_copy(old)
            updates, _ = self._inserts(entries, old, self._info(back))
            self._save_fill_commit(back, updates, values, self._tag_values(self._version)
                                   if tag_support(old) else None)
        except TargetError as exc:
            what = f"{cause.message}; " if cause else ""
            raise TargetError(self.device, f"{what}putting {old.name} back failed too: "
                              f"{exc.message}") from exc

    def _check_loadable(self, prepared: Bmv2Prepared, timeout_s: float = 10.0) -> float:
        """Load the pipeline in a scratch simple_switch (no ports; its thrift port inside
        this switch's namespace); TargetError quoting bmv2 when it cannot. Returns ms."""
        digest = hashlib.sha256(prepared.device_json).digest()
        exe = shutil.which("simple_switch")
        if digest in self._loadable or exe is None:
            return 0.0
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=self.run_dir) as tmp:
            path = os.path.join(tmp, "pipeline.json")
            with open(path, "wb") as fh:
                fh.write(prepared.device_json)
            log_path = os.path.join(tmp, "scratch.log")
            with open(log_path, "w") as log:
                # its own notifications socket: two switches check pipelines at once
                proc = self.node.popen([exe, "--device-id", "99", "--thrift-port",
                                        str(SCRATCH_THRIFT_PORT), "--notifications-addr",
                                        f"ipc://{tmp}/notifications.ipc", path],
                                       stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + timeout_s
                while proc.poll() is None and time.monotonic() < deadline:
                    if self._scratch_listening():
                        break
                    time.sleep(0.01)
                else:
                    with open(log_path, errors="replace") as fh:
                        tail = " ".join(fh.read().split())[-300:] or "(no output)"
                    raise TargetError(self.device, f"bmv2 refuses the pipeline of "
                                      f"{prepared.program.name} (nothing was changed): {tail}")
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        self._loadable.add(digest)
        return (time.perf_counter() - t0) * 1e3

    def _scratch_listening(self) -> bool:
        try:
            in_namespace(self.node.netns_path, lambda: socket.create_connection(
                ("127.0.0.1", SCRATCH_THRIFT_PORT), timeout=0.2)).close()
            return True
        except OSError:
            return False

    def _carried_registers(self, new: Program) -> list[str]:
        """Register arrays of maps both programs hold with the same shape."""
        out = []
        for m in new.maps:
            old = self.program.map(m.name) if self.program else None
            if old is not None and _shape(old) == _shape(m) and m.kind != "meter":
                out += [f"{CONTROL}.{n}" for n in map_objects(m)]
        return out

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
        self._entries_changed()
        entry = self._client.table_entry(self._p4("tables", table), match,
                                         self._p4("actions", action), tuple(args), priority)
        self._client.write([("MODIFY" if modify else "INSERT", entry)])

    def delete(self, table: str, match: tuple, priority: int = 0) -> None:
        self._check(table)
        self._entries_changed()
        self._client.write([("DELETE", self._client.table_entry(self._p4("tables", table),
                                                                match, priority=priority))])

    def set_default(self, table: str, action: str, args: tuple = ()) -> None:
        self._check(table)
        self._entries_changed()
        entry = self._client.table_entry(self._p4("tables", table), (),
                                         self._p4("actions", action), tuple(args))
        entry.is_default_action = True
        self._client.write([("MODIFY", entry)])

    def default(self, table: str) -> tuple[str, tuple[int, ...]]:
        t = self.program.table(table)
        return t.default_action, tuple(t.default_args)

    def entries(self, table: str) -> list[Entry]:
        """Entries read back from the switch over P4Runtime."""
        self._check(table)
        return self._read_entries(table)

    def _read_entries(self, table: str | None = None) -> list[Entry]:
        """One table's entries, or every table's in one Read, as the model's Entry (of
        the running version's tables when the pipeline holds two)."""
        raw = self._read_raw(self._p4("tables", table) if table else None)
        if not self._names:
            return raw
        tabs = {v: k for k, v in self._names["tables"].items()}
        acts = {v: k for k, v in self._names["actions"].items()}
        return sorted((Entry(tabs[e.table], e.match, acts.get(e.action, e.action), e.args,
                             e.priority) for e in raw if e.table in tabs),
                      key=lambda x: (x.table, repr(x.match)))

    def _read_raw(self, table: str | None = None, started=None) -> list[Entry]:
        """Entries with the pipeline's own names (P4Info names without the control's);
        started: the Read of every table as P4RuntimeClient.start_read() sent it."""
        info = self._client.p4info
        tables = {t.preamble.id: t.preamble.name.split(".", 1)[-1] for t in info.tables}
        actions = {a.preamble.id: a.preamble.name.split(".", 1)[-1] for a in info.actions}
        out = []
        if started is None:
            started = self._client.start_read(table)
        for e in self._client.finish_read(started):
            if e.is_default_action:
                continue
            match = []
            for fm in e.match:
                kind = fm.WhichOneof("field_match_type")
                if kind == "lpm":
                    match.append((int.from_bytes(fm.lpm.value, "big"), fm.lpm.prefix_len))
                elif kind == "ternary":
                    match.append((int.from_bytes(fm.ternary.value, "big"),
                                  int.from_bytes(fm.ternary.mask, "big")))
                else:
                    match.append(int.from_bytes(fm.exact.value, "big"))
            act = e.action.action
            out.append(Entry(tables[e.table_id], tuple(match),
                             actions.get(act.action_id, str(act.action_id)),
                             tuple(int.from_bytes(p.value, "big") for p in act.params),
                             e.priority))
        return sorted(out, key=lambda x: (x.table, repr(x.match)))

    # --- state ----------------------------------------------------------------------------
    def read_map(self, name: str):
        """A map's contents, shaped as on the eBPF targets: counter -> [(packets, bytes)],
        register/sketch -> [int]; hash -> {slot: (packets, bytes)} for used slots (bmv2
        keeps slots, not keys)."""
        m = self._map(name)
        if m.kind == "meter":
            raise TargetError(self.device, f"map {name}: bmv2 meter state is not readable")
        names = self._map_objects(m)
        values = self._thrift.read_registers(names)
        if m.kind in ("counter", "hash"):
            pairs = list(zip(values[names[0]], values[names[1]]))
            if m.kind == "counter":
                return pairs
            return {i: p for i, p in enumerate(pairs) if p != (0, 0)}
        return values[names[0]]

    def write_map(self, name: str, index: int, value: int) -> None:
        """Set a register slot (state carried by a migration uses this)."""
        m = self._map(name)
        if m.kind not in ("register", "sketch"):
            raise TargetError(self.device, f"no register or sketch map {name!r}")
        size = m.size * (m.rows if m.kind == "sketch" else 1)
        if not 0 <= index < size:
            raise TargetError(self.device, f"map {name}: index {index} outside 0..{size - 1}")
        self._thrift.write_registers({self._map_objects(m)[0]: {index: value}})

    def _map(self, name: str) -> Map:
        m = self.program.map(name) if self.program else None
        if m is None:
            raise TargetError(self.device, f"no map {name!r}")
        return m

    def port_counters(self) -> dict[int, dict[str, int]]:
        return read_port_counters(self)


def compact_pipeline(device_json: bytes) -> bytes:
    """p4c's bmv2 JSON without its "source_info" objects (file, line and source text of
    each expression, which bmv2 only prints in its logs and debugger) and without
    indentation: a third of the bytes, and of bmv2's JSON parsing at every pipeline load
    (a VERIFY_AND_SAVE here: 12 -> 9 ms for a two-version pipeline)."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k != "source_info"}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    return json.dumps(strip(json.loads(device_json)), separators=(",", ":")).encode()


def _switch_pid(netns_path: str) -> int:
    """The simple_switch_grpc running in the namespace at `netns_path` (0: none)."""
    try:
        ino = os.stat(netns_path).st_ino
    except OSError:
        return 0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if not fh.read().startswith("simple_switch_g"):
                    continue
            if os.stat(f"/proc/{pid}/ns/net").st_ino == ino:
                return int(pid)
        except OSError:
            continue
    return 0


def _election_id() -> int:
    """Higher for every new session, so a restarted controller becomes primary."""
    return int(time.time() * 1000) & 0xFFFFFFFFFFFF


def _shape(m: Map) -> tuple:
    return (m.kind, m.size, m.rows, m.key_bits)
