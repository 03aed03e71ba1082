"""A host hook running an ordered list of functions: compiled ELF objects (loaded with
libbpf, bpf_object.py) and programs of the lab's model, in a stated order.

The lab's own dispatcher, not libxdp's: the root program on the interface never changes and
tail-calls slot 0 of its program array (as on every eBPF device of the lab); each function
has its own one-slot program array `flx_next`, and where it would pass a packet it
tail-calls that slot instead (generated functions do so; hand-written ones call
FLX_NEXT_XDP/FLX_NEXT_TC from ebpf/include/flexnet_chain.h). An empty slot makes the tail
call fall through, so the last function passes the packet. Why not libxdp: its dispatcher
is XDP only (tc hooks would need a second mechanism), it replaces functions by re-attaching
a new dispatcher through freplace links, and the lab's swap is already one map write that
the kernel makes atomic per packet; here every change to the list is one write too:

  replace function i   the new version binds function i's maps and its `flx_next` (so
                       what follows it stays), then the slot pointing at i is written;
  insert at i          the new function's `flx_next` already holds function i, then the
                       slot pointing at i is written;
  remove function i    the slot pointing at i is given function i+1 (or emptied).

A function is a *position* with pins under PIN/HOOK/pN/ (prog, flx_next, its maps); a
restarted controller finds the order by walking the slots from the root's."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field, replace

from ..compiler.ebpf import NEXT_MAP, PIPE_MAP, SLOT_MAP, root_source
from ..errors import TargetError
from ..program.model import Program
from ..program.yaml_form import program_from_dict, program_to_dict
from .bcc_compile import Compiler
from .bpf_object import LibBpf, LoadedObject
from .bpf_syscall import (MAP_ARRAY, MAP_PERCPU_ARRAY, MAP_PERCPU_HASH, MAP_PROG_ARRAY, Bpf,
                          BpfCallError, MapSpec)
from .ebpf_datapath import EbpfDatapath, Entry
from .netlink import Netns

ZERO = (0).to_bytes(4, "little")


@dataclass(frozen=True)
class HookFunction:
    """One function on a host hook: a model program, or a compiled ELF object (path as the
    user named it, the section loaded, the file's sha256 and the run folder's copy that is
    loaded). prog_id, the kernel id of what runs, is not part of its identity."""
    name: str
    program: Program | None = None
    path: str = ""
    section: str = ""
    sha256: str = ""
    copy: str = ""
    prog_id: int = field(default=0, compare=False)

    @property
    def is_object(self) -> bool:
        return self.program is None

    def describe(self) -> str:
        if self.is_object:
            return f"{self.name} ({os.path.basename(self.path)} [{self.section}] " \
                   f"sha256 {self.sha256[:12]})"
        return self.name

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "section": self.section,
                "sha256": self.sha256, "copy": self.copy, "prog_id": self.prog_id,
                "program": program_to_dict(self.program) if self.program else None}

    @classmethod
    def from_json(cls, d: dict) -> "HookFunction":
        prog = program_from_dict(d["program"], f"store:{d['name']}") if d.get("program") else None
        return cls(d["name"], prog, d.get("path", ""), d.get("section", ""),
                   d.get("sha256", ""), d.get("copy", ""), int(d.get("prog_id", 0)))


@dataclass
class _Pos:
    """A function's place on the hook. It owns next_fd; the function's program and maps
    are in `dp` (model) or prog_fd/maps (object)."""
    pid: str
    fn: HookFunction
    next_fd: int
    prog_fd: int = -1
    maps: dict[str, int] = field(default_factory=dict)      # object maps, without flx_next
    dp: EbpfDatapath | None = None

    def current_prog_fd(self) -> int:
        return self.dp._running.prog_fd if self.dp is not None else self.prog_fd

    def current_maps(self) -> dict[str, int]:
        if self.dp is not None:
            return {n: fd for n, fd in self.dp._running.maps.items() if n != NEXT_MAP}
        return self.maps


@dataclass
class ChainChange:
    """A prepared change of the list: what to write where, and what was loaded for it."""
    functions: tuple[HookFunction, ...]
    op: str                                  # same | replace | insert | remove
    index: int = 0
    new_pos: _Pos | None = None              # replace/insert: the loaded function
    prepared: object = None                  # model: the datapath's Prepared
    created: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compile_ms: float = 0.0
    load_ms: float = 0.0


class FunctionHook:
    """A host hook (HOST:HOOK:DIRECTION) running an ordered list of functions; implements
    control.target.Target (table operations go to the model function holding the table)."""

    kind = "host"

    def __init__(self, device: str, netns: Netns, hook: str, direction: str,
                 compiler: Compiler, bpf: Bpf, libbpf: LibBpf, pin_dir: str):
        self.device, self.netns, self.hook, self.direction = device, netns, hook, direction
        self._compiler, self._bpf, self._libbpf, self._pin_dir = compiler, bpf, libbpf, pin_dir
        self._root = EbpfDatapath(device, netns, hook, "host", compiler, bpf, pin_dir, direction)
        self._positions: list[_Pos] = []
        self.last_notes: list[str] = []

    # --- what runs ----------------------------------------------------------------------
    @property
    def program(self) -> Program | None:
        """Target protocol: a hook of functions has no single model program."""
        return None

    @property
    def functions(self) -> tuple[HookFunction, ...]:
        return tuple(replace(p.fn, prog_id=self._bpf.prog_id(p.current_prog_fd()))
                     for p in self._positions)

    def running_prog_id(self) -> int:
        return self._bpf.prog_id(self._positions[0].current_prog_fd()) if self._positions else 0

    def versions(self) -> dict[str, int]:
        """The load number of each model function here (what the oracle's probes record),
        by its place DEVICE/pid; an object file's function records none."""
        return {f"{self.device}/{p.pid}": p.dp.version for p in self._positions
                if p.dp is not None}

    # --- life cycle ---------------------------------------------------------------------
    def start(self, functions: tuple[HookFunction, ...], interfaces: list[str]) -> None:
        """Load every function (last first, each bound to the next), then the root, then
        attach. A refusal releases everything loaded so far."""
        root = self._compiler.compile(root_source(self.hook), ["root"])
        r = self._root
        try:
            for i in reversed(range(len(functions))):
                pos = self._new_pos(functions[i])
                change = ChainChange((), "insert", 0)
                try:
                    self._load_into(pos, functions[i], None, change)
                except BaseException:
                    self._bpf.close(pos.next_fd)
                    raise
                if self._positions:
                    self._bpf.update(pos.next_fd, ZERO,
                                     self._positions[0].current_prog_fd().to_bytes(4, "little"))
                self._positions.insert(0, pos)
                self._pin_pos(pos, change.created)
            r._pipe_fd = self._bpf.map_create(root.maps[PIPE_MAP])
            r._slot_fd = self._bpf.map_create(root.maps[SLOT_MAP])
            r._root_fd = r._load(root, "root", {PIPE_MAP: r._pipe_fd, SLOT_MAP: r._slot_fd})
            r._pin(r._pipe_fd, PIPE_MAP)
            r._pin(r._root_fd, "root")
            if self._positions:
                self._bpf.update(r._pipe_fd, ZERO,
                                 self._positions[0].current_prog_fd().to_bytes(4, "little"))
            for ifname in interfaces:
                r._attach(ifname)
        except BaseException:
            self.stop()
            raise

    def _new_pos(self, fn: HookFunction) -> _Pos:
        used = {p.pid for p in self._positions}
        pid = next(f"p{k}" for k in range(len(used) + 1) if f"p{k}" not in used)
        spec = MapSpec(NEXT_MAP, MAP_PROG_ARRAY, 4, 4, 1)
        return _Pos(pid, fn, self._bpf.map_create(spec))

    def _load_into(self, pos: _Pos, fn: HookFunction, old: _Pos | None,
                   change: ChainChange) -> None:
        """Load `fn` for position `pos` (not running yet), binding `old`'s maps of the same
        name, type and size, and pos.next_fd as its flx_next."""
        if fn.is_object:
            reuse = dict(old.current_maps()) if old is not None else {}
            reuse[NEXT_MAP] = pos.next_fd
            t0 = time.perf_counter()
            lo: LoadedObject = self._libbpf.load(fn.copy or fn.path, self.hook, fn.section,
                                                 reuse, self._bpf, os.path.basename(fn.path))
            if NEXT_MAP not in lo.maps:
                lo.notes.append(f"{fn.name} has no {NEXT_MAP} map: functions after it do "
                                "not run")
            pos.prog_fd = lo.prog_fd
            pos.maps = {n: fd for n, fd in lo.maps.items() if n != NEXT_MAP}
            change.created += [n for n in lo.created if n != NEXT_MAP]
            change.notes += lo.notes
            change.load_ms = (time.perf_counter() - t0) * 1e3
            if old is not None:
                kept = sorted(n for n in pos.maps if n not in lo.created)
                change.notes.append("maps carried over: " + (", ".join(kept) or "none"))
            return
        if old is not None and old.dp is not None:
            # model -> model in the same place: the same datapath binds the old maps by
            # name; the controller's commit makes the new version run
            dp = old.dp
            prepared = dp.prepare(fn.program)
            change.prepared = prepared
        else:
            dp = EbpfDatapath(f"{self.device}/{pos.pid}", self.netns, self.hook, "host",
                              self._compiler, self._bpf, self._pin_dir, self.direction)
            dp.chained, dp.bound = True, {NEXT_MAP: pos.next_fd}
            prepared = dp.prepare(fn.program)
            dp.commit(prepared)    # not reachable from the root yet: its bookkeeping only
        change.compile_ms, change.load_ms = prepared.compile_ms, prepared.load_ms
        pos.dp = dp
        change.created += [n for n in prepared.created if n != NEXT_MAP]

    def _pin_pos(self, pos: _Pos, created: list[str]) -> None:
        d = os.path.join(self._pin_dir, self.device, pos.pid)
        os.makedirs(d, exist_ok=True)
        for name, fd in [("prog", pos.current_prog_fd()), (NEXT_MAP, pos.next_fd)] + \
                sorted(pos.current_maps().items()):
            path = os.path.join(d, name)
            if os.path.exists(path):
                os.unlink(path)
            self._bpf.pin(fd, path)

    # --- replacement (prepare / commit) -------------------------------------------------
    def prepare(self, functions: tuple[HookFunction, ...]) -> ChainChange:
        """Load what the new list needs beside what runs; nothing on the hook changes. One
        function at a time: replaced, inserted or removed."""
        old = [p.fn for p in self._positions]
        new = list(functions)
        change = ChainChange(tuple(functions), "same")
        if new == old:
            return change
        if len(new) == len(old):
            diff = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
            if len(diff) == 1:
                change.op, change.index = "replace", diff[0]
        elif len(new) == len(old) + 1:
            i = next((i for i in range(len(new)) if new[:i] + new[i + 1:] == old), None)
            if i is not None:
                change.op, change.index = "insert", i
        elif len(new) == len(old) - 1:
            i = next((i for i in range(len(old)) if old[:i] + old[i + 1:] == new), None)
            if i is not None:
                change.op, change.index = "remove", i
        if change.op == "same":
            raise TargetError(self.device, "change one function at a time (replace, insert "
                              "or remove one); the order of the others stays")
        i = change.index
        if change.op == "replace":
            cur = self._positions[i]
            pos = _Pos(cur.pid, new[i], cur.next_fd)
            self._load_into(pos, new[i], cur, change)
            change.new_pos = pos
        elif change.op == "insert":
            pos = self._new_pos(new[i])
            try:
                self._load_into(pos, new[i], None, change)
            except BaseException:
                self._bpf.close(pos.next_fd)
                raise
            change.new_pos = pos
        return change

    def stage(self, change: ChainChange) -> None:
        """Nothing to stage: the loaded function already binds what it keeps."""

    def commit(self, change: ChainChange) -> float:
        """The one write that makes the new list run; returns its time in ms."""
        i = change.index
        entry_fd = self._root._pipe_fd if i == 0 else self._positions[i - 1].next_fd
        if change.op == "same":
            return 0.0
        if change.op == "insert" and i < len(self._positions):
            self._bpf.update(change.new_pos.next_fd, ZERO,
                             self._positions[i].current_prog_fd().to_bytes(4, "little"))
        t0 = time.perf_counter()
        if change.op in ("replace", "insert"):
            target = change.prepared.prog_fd if change.prepared is not None \
                else change.new_pos.current_prog_fd()
            self._bpf.update(entry_fd, ZERO, target.to_bytes(4, "little"))
        elif i + 1 < len(self._positions):
            self._bpf.update(entry_fd, ZERO,
                             self._positions[i + 1].current_prog_fd().to_bytes(4, "little"))
        else:
            self._bpf.delete(entry_fd, ZERO)
        ms = (time.perf_counter() - t0) * 1e3
        self.last_notes = list(change.notes)
        if change.op == "replace":
            cur, pos = self._positions[i], change.new_pos
            if change.prepared is not None:       # same datapath, model -> model
                cur.dp.commit(change.prepared)
            else:
                self._release_fn(cur, keep=set(pos.current_maps().values()))
            cur.fn, cur.prog_fd, cur.maps, cur.dp = pos.fn, pos.prog_fd, pos.maps, pos.dp
            self._repin(cur)
        elif change.op == "insert":
            self._positions.insert(i, change.new_pos)
            self._pin_pos(change.new_pos, change.created)
        else:
            gone = self._positions.pop(i)
            self._release_fn(gone, keep=set())
            self._bpf.close(gone.next_fd)
            shutil.rmtree(os.path.join(self._pin_dir, self.device, gone.pid), ignore_errors=True)
        return ms

    def abort(self, change: ChainChange) -> None:
        pos = change.new_pos
        if pos is None:
            return
        if change.prepared is not None:
            pos.dp.abort(change.prepared)
            return
        keep = set()
        if change.op == "replace":
            keep = set(self._positions[change.index].current_maps().values())
        self._release_fn(pos, keep)
        if change.op == "replace":
            self._repin(self._positions[change.index])
        if change.op == "insert":
            self._bpf.close(pos.next_fd)
            shutil.rmtree(os.path.join(self._pin_dir, self.device, pos.pid), ignore_errors=True)

    def _release_fn(self, pos: _Pos, keep: set[int]) -> None:
        """Close a function's program and the maps not in `keep` (never flx_next)."""
        if pos.dp is not None:
            run = pos.dp._running
            if run is not None:
                self._bpf.close(run.prog_fd)
                for n, fd in run.maps.items():
                    if n != NEXT_MAP and fd not in keep:
                        self._bpf.close(fd)
            pos.dp._running = None
            return
        self._bpf.close(pos.prog_fd)
        for fd in pos.maps.values():
            if fd not in keep:
                self._bpf.close(fd)

    def _repin(self, pos: _Pos) -> None:
        d = os.path.join(self._pin_dir, self.device, pos.pid)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if name not in ("prog", NEXT_MAP) and name not in pos.current_maps():
                os.unlink(os.path.join(d, name))
        self._pin_pos(pos, [])

    def adopt(self, functions) -> None:
        """Entries-only changes do not exist for a list of functions."""

    # --- tables: the model function that holds the table ---------------------------------
    def _owner(self, table: str) -> EbpfDatapath:
        for p in self._positions:
            if p.dp is not None and p.dp.program.table(table) is not None:
                return p.dp
        raise TargetError(self.device, f"no function on this hook has a table {table[:40]!r}")

    def insert(self, table, match, action, args=(), priority=0, modify=False) -> None:
        self._owner(table).insert(table, match, action, args, priority, modify)

    def delete(self, table, match, priority=0) -> None:
        self._owner(table).delete(table, match, priority)

    def entries(self, table) -> list[Entry]:
        return self._owner(table).entries(table)

    def set_default(self, table, action, args=()) -> None:
        self._owner(table).set_default(table, action, args)

    def default(self, table):
        return self._owner(table).default(table)

    def tables(self) -> list[tuple[str, str]]:
        """(function, table) of every model function's tables."""
        return [(p.fn.name, t.name) for p in self._positions if p.dp is not None
                for t in p.fn.program.tables]

    # --- maps -----------------------------------------------------------------------------
    def map_names(self) -> list[str]:
        out = []
        for p in self._positions:
            if p.dp is not None:
                out += [m.name for m in p.fn.program.maps]
            else:
                out += sorted(p.maps)
        return out

    def read_map(self, name: str):
        """A map's contents. NAME or FUNCTION/NAME (two functions may both have NAME).
        Object maps: arrays as a list of ints (per-CPU ones summed), hashes as {key: value}
        (ints where they fit 8 bytes, else hex)."""
        fn_name, _, map_name = name.rpartition("/")
        for p in self._positions:
            if fn_name and p.fn.name != fn_name:
                continue
            if p.dp is not None and p.fn.program.map(map_name) is not None:
                return p.dp.read_map(map_name)
            if p.dp is None and map_name in p.maps:
                return self._read_raw(p.maps[map_name])
        raise TargetError(self.device, f"no map {name[:40]!r} (has "
                          f"{', '.join(self.map_names()) or 'none'})")

    def _read_raw(self, fd: int):
        spec = self._bpf.map_info(fd)
        ncpu = os.cpu_count() or 1
        percpu = spec.map_type in (MAP_PERCPU_ARRAY, MAP_PERCPU_HASH)
        vsz = ((spec.value_size + 7) // 8 * 8) * ncpu if percpu else spec.value_size

        def value(raw: bytes):
            if percpu:
                step = (spec.value_size + 7) // 8 * 8
                parts = [raw[i * step:i * step + spec.value_size] for i in range(ncpu)]
                if spec.value_size <= 8:
                    return sum(int.from_bytes(x, "little") for x in parts)
                return [x.hex() for x in parts]
            return int.from_bytes(raw, "little") if spec.value_size <= 8 else raw.hex()

        if spec.map_type in (MAP_ARRAY, MAP_PERCPU_ARRAY):
            out = []
            for i in range(spec.max_entries):
                raw = self._bpf.lookup(fd, i.to_bytes(4, "little"), vsz)
                out.append(value(raw) if raw is not None else 0)
            return out
        if spec.map_type == MAP_PROG_ARRAY:
            raise TargetError(self.device, "a program array holds programs, not values")
        result = {}
        for raw in self._bpf.keys(fd, spec.key_size):
            val = self._bpf.lookup(fd, raw, vsz)
            if val is not None:
                key = int.from_bytes(raw, "little") if spec.key_size <= 8 else raw.hex()
                result[key] = value(val)
        return result

    def write_map(self, name: str, index: int, value: int) -> None:
        fn_name, _, map_name = name.rpartition("/")
        for p in self._positions:
            if p.dp is not None and (not fn_name or p.fn.name == fn_name) and \
                    p.fn.program.map(map_name) is not None:
                return p.dp.write_map(map_name, index, value)
        raise TargetError(self.device, f"no register map {name[:40]!r} of a model function")

    # --- drift ----------------------------------------------------------------------------
    def health(self) -> list[str]:
        """`detached IFNAME`, `slot N` (the slot before function N holds another program),
        `pin PATH` (a pin is gone)."""
        problems = [p for p in self._root.health() if p.startswith("detached")
                    or p in ("pin root", f"pin {PIPE_MAP}")]
        slot_fd = self._root._pipe_fd
        for i, pos in enumerate(self._positions):
            raw = self._bpf.lookup(slot_fd, ZERO, 4)
            want = self._bpf.prog_id(pos.current_prog_fd())
            if raw is None or int.from_bytes(raw, "little") != want:
                problems.append(f"slot {i}")
            slot_fd = pos.next_fd
            d = os.path.join(self._pin_dir, self.device, pos.pid)
            for name in ["prog", NEXT_MAP] + sorted(pos.current_maps()):
                if not os.path.exists(os.path.join(d, name)):
                    problems.append(f"pin {pos.pid}/{name}")
        if self._positions and self._bpf.lookup(self._positions[-1].next_fd, ZERO, 4):
            problems.append(f"slot {len(self._positions)}")
        return problems

    def heal(self, problems: list[str]) -> list[str]:
        done = []
        for p in problems:
            what, _, arg = p.partition(" ")
            if what == "detached" or arg in ("root", PIPE_MAP):
                done += self._root.heal([p])
            elif what == "slot":
                i = int(arg)
                fd = self._root._pipe_fd if i == 0 else self._positions[i - 1].next_fd
                if i < len(self._positions):
                    self._bpf.update(fd, ZERO, self._positions[i].current_prog_fd()
                                     .to_bytes(4, "little"))
                    done.append(f"put {self._positions[i].fn.name} back as function {i}")
                else:
                    self._bpf.delete(fd, ZERO)
                    done.append("emptied the slot after the last function")
            elif what == "pin":
                pid = arg.split("/")[0]
                pos = next((x for x in self._positions if x.pid == pid), None)
                if pos is not None:
                    self._pin_pos(pos, [])
                    done.append(f"pinned {pid}'s objects again")
        return done

    # --- adoption (a controller restarted) ----------------------------------------------
    def adopt_pinned(self, functions: tuple[HookFunction, ...], interfaces: list[str]) -> None:
        """Take over a hook another process started: the root and the functions from the
        pins, in the order the slots link them. `functions` is what the intent says runs;
        a function whose program id differs is reported by health() as a slot problem and
        loaded again by the controller."""
        d = os.path.join(self._pin_dir, self.device)
        r = self._root
        try:
            r._root_fd = self._bpf.obj_get(os.path.join(d, "root"))
            r._pipe_fd = self._bpf.obj_get(os.path.join(d, PIPE_MAP))
        except BpfCallError as exc:
            raise TargetError(self.device, f"cannot adopt: {exc.strerror} ({d})") from exc
        r._running = None
        r._attached = [self.netns.ifindex(i) for i in interfaces]
        pins = {}
        for pid in sorted(os.listdir(d)):
            sub = os.path.join(d, pid)
            if os.path.isdir(sub) and os.path.exists(os.path.join(sub, "prog")):
                fds = {n: self._bpf.obj_get(os.path.join(sub, n)) for n in os.listdir(sub)
                       if not os.path.isdir(os.path.join(sub, n))}
                pins[self._bpf.prog_id(fds["prog"])] = (pid, fds)
        slot_fd = r._pipe_fd
        for fn in functions:
            raw = self._bpf.lookup(slot_fd, ZERO, 4)
            found = pins.pop(int.from_bytes(raw, "little"), None) if raw else None
            if found is None:
                break
            pid, fds = found
            pos = _Pos(pid, fn, fds.pop(NEXT_MAP))
            prog_fd = fds.pop("prog")
            if fn.is_object:
                pos.prog_fd, pos.maps = prog_fd, fds
            else:
                dp = EbpfDatapath(f"{self.device}/{pid}", self.netns, self.hook, "host",
                                  self._compiler, self._bpf, self._pin_dir, self.direction)
                dp.chained, dp.bound = True, {NEXT_MAP: pos.next_fd}
                dp.adopt_loaded(fn.program, prog_fd, {**fds, NEXT_MAP: pos.next_fd})
                pos.dp = dp
            self._positions.append(pos)
            slot_fd = pos.next_fd
        for _, fds in pins.values():          # pinned but not linked: not ours to run
            for fd in fds.values():
                self._bpf.close(fd)
        if len(self._positions) != len(functions):
            self.release()
            raise TargetError(self.device, "cannot adopt: the pinned functions do not "
                              "match the intent")

    # --- teardown -------------------------------------------------------------------------
    def release(self) -> None:
        """Close this process's fds; the hook keeps running (pins and attachments stay)."""
        for p in self._positions:
            self._release_fn(p, keep=set())
            self._bpf.close(p.next_fd)
        self._positions.clear()
        self._root.release()

    def stop(self) -> None:
        """Detach the root and release everything, pins included."""
        for p in self._positions:
            self._release_fn(p, keep=set())
            self._bpf.close(p.next_fd)
        self._positions.clear()
        self._root.stop()

    def attachments(self) -> list[dict]:
        return [{"ifindex": i, "hook": self.hook, "direction": self.direction,
                 "functions": [p.fn.name for p in self._positions]}
                for i in self._root._attached]
