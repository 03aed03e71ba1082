"""Load a compiled eBPF object (an ELF file as `clang -target bpf -O2 -g` writes it) with
libbpf, the kernel's own loader library, called through its C API with ctypes.

Why libbpf this way rather than `bpftool prog load` (Debian 12: bpftool 7.1 on libbpf 1.1):
bpftool loads every program of an object (one broken section fails the others), pins only
the first or all of them, reuses a map only by pin and without checking that it fits, and
reports failures as text on stderr. Through the API one call sequence opens the object,
loads only the section asked for, binds the running version's maps by fd where name, type
and sizes match (so counters survive a swap), keeps the verifier log of a refusal, and
creates nothing that is not released when any step fails. Relocations (map references,
BPF-to-BPF calls, CO-RE against /sys/kernel/btf/vmlinux) are libbpf's.

libbpf 1.x no longer reads the legacy `maps` section (`struct bpf_map_def`): such an object
is refused before anything is loaded, with a message that says how to declare the maps."""
from __future__ import annotations

import ctypes
import hashlib
import os
import struct
from dataclasses import dataclass, field

from ..errors import EnvironmentMissing, ObjectError
from .bpf_syscall import Bpf, MapSpec, PROG_SCHED_CLS, PROG_XDP

EM_BPF = 247
PROG_TYPES = {"xdp": PROG_XDP, "tc": PROG_SCHED_CLS}
_TYPE_NAMES = {0: "unspecified", 1: "socket_filter", 2: "kprobe", 3: "tc (sched_cls)",
               4: "tc action (sched_act)", 5: "tracepoint", 6: "xdp", 7: "perf_event",
               8: "cgroup_skb", 26: "tracing", 29: "ext", 31: "struct_ops", 32: "ext"}
_MAP_TYPE_NAMES = {1: "hash", 2: "array", 3: "prog_array", 5: "percpu_hash",
                   6: "percpu_array", 9: "lru_hash", 11: "lpm_trie", 27: "ringbuf"}
CHAIN_MAP = "flx_next"      # a function's tail-call slot to the next function on its hook


def map_type_name(t: int) -> str:
    return _MAP_TYPE_NAMES.get(t, f"type {t}")


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def elf_sections(path: str, data: bytes | None = None) -> list[str]:
    """Section names of an eBPF ELF object; ObjectError when the file is not one. Only
    the header and section table are read: loading is libbpf's."""
    short = os.path.basename(path)
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ObjectError(short, "file", f"cannot read it: {exc.strerror}") from None
    if data[:4] != b"\x7fELF":
        raise ObjectError(short, "ELF header", "not an ELF file (compile it with "
                          "`clang -O2 -g -target bpf -c prog.c -o prog.o`)")
    if len(data) < 64 or data[4] != 2 or data[5] != 1:
        raise ObjectError(short, "ELF header", "not a 64-bit little-endian ELF object")
    machine = struct.unpack_from("<H", data, 18)[0]
    if machine != EM_BPF:
        raise ObjectError(short, "ELF header", f"machine {machine} is not BPF (247): "
                          "compiled for the host CPU? use `clang -target bpf`")
    shoff = struct.unpack_from("<Q", data, 40)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
    if shentsize != 64 or shoff + shnum * 64 > len(data) or shstrndx >= max(shnum, 1):
        raise ObjectError(short, "section table", "truncated or corrupt")
    def sh(i):
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64)
    str_off, str_size = sh(shstrndx)[4], sh(shstrndx)[5]
    if str_off + str_size > len(data):
        raise ObjectError(short, "section table", "truncated or corrupt")
    names = []
    for i in range(shnum):
        n = sh(i)[0]
        end = data.find(b"\0", str_off + n)
        names.append(data[str_off + n:end].decode(errors="replace"))
    return names


@dataclass(frozen=True)
class ProgramInfo:
    section: str
    name: str
    prog_type: int


@dataclass
class LoadedObject:
    """One program of an object, loaded; fds are this process's own (dup'ed from libbpf's)."""
    path: str
    section: str
    name: str
    prog_fd: int
    maps: dict[str, int]                 # map name -> fd (those the program uses)
    specs: dict[str, MapSpec]
    created: list[str]                   # maps made by this load (not carried over)
    notes: list[str] = field(default_factory=list)
    load_ms: float = 0.0


class LibBpf:
    """libbpf.so.1 with the prototypes this module calls. No global state of ours; libbpf's
    own printing is switched off (errors come back as values and the verifier log)."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as exc:
            raise EnvironmentMissing("libbpf.so.1 not found: install Debian's libbpf1 "
                                     "(libbpf-dev pulls it in)") from exc
        vp, cp, i, u = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
        for fn, res, args in (
                ("bpf_object__open", vp, [cp]), ("bpf_object__load", i, [vp]),
                ("bpf_object__close", None, [vp]),
                ("bpf_object__next_program", vp, [vp, vp]),
                ("bpf_object__next_map", vp, [vp, vp]),
                ("bpf_program__section_name", cp, [vp]), ("bpf_program__name", cp, [vp]),
                ("bpf_program__type", i, [vp]), ("bpf_program__set_type", i, [vp, i]),
                ("bpf_program__set_autoload", i, [vp, ctypes.c_bool]),
                ("bpf_program__set_expected_attach_type", i, [vp, i]),
                ("bpf_program__set_log_buf", i, [vp, vp, ctypes.c_size_t]),
                ("bpf_program__fd", i, [vp]),
                ("bpf_map__name", cp, [vp]), ("bpf_map__type", i, [vp]),
                ("bpf_map__key_size", u, [vp]), ("bpf_map__value_size", u, [vp]),
                ("bpf_map__max_entries", u, [vp]), ("bpf_map__map_flags", u, [vp]),
                ("bpf_map__is_internal", ctypes.c_bool, [vp]),
                ("bpf_map__reuse_fd", i, [vp, i]), ("bpf_map__fd", i, [vp]),
                ("libbpf_set_print", vp, [vp])):
            f = getattr(lib, fn)
            f.restype, f.argtypes = res, args
        lib.libbpf_set_print(None)
        self.lib = lib

    def _programs(self, obj) -> list:
        out, p = [], None
        while True:
            p = self.lib.bpf_object__next_program(obj, p)
            if not p:
                return out
            out.append(p)

    def _maps(self, obj) -> list:
        out, m = [], None
        while True:
            m = self.lib.bpf_object__next_map(obj, m)
            if not m:
                return out
            out.append(m)

    def _spec(self, m) -> MapSpec:
        lib = self.lib
        return MapSpec(lib.bpf_map__name(m).decode(), lib.bpf_map__type(m),
                       lib.bpf_map__key_size(m), lib.bpf_map__value_size(m),
                       lib.bpf_map__max_entries(m), lib.bpf_map__map_flags(m))

    def _open(self, path: str):
        short = os.path.basename(path)
        sections = elf_sections(path)
        if "maps" in sections:
            raise ObjectError(short, "section maps", "legacy map definitions (struct "
                              "bpf_map_def in SEC(\"maps\")) are not read by libbpf 1.x; "
                              "declare the maps BTF-style in SEC(\".maps\") (see "
                              "ebpf/examples/proto_count.c)")
        obj = self.lib.bpf_object__open(os.fsencode(path))
        if not obj:
            err = ctypes.get_errno()
            raise ObjectError(short, "ELF object", f"libbpf cannot open it: "
                              f"{os.strerror(err) if err else 'malformed'} (no BTF or "
                              "relocations it cannot read?)")
        return obj

    def inspect(self, path: str) -> tuple[list[ProgramInfo], list[MapSpec]]:
        """The object's programs (by section) and maps, without loading anything."""
        obj = self._open(path)
        try:
            progs = [ProgramInfo(self.lib.bpf_program__section_name(p).decode(),
                                 self.lib.bpf_program__name(p).decode(),
                                 self.lib.bpf_program__type(p)) for p in self._programs(obj)]
            maps = [self._spec(m) for m in self._maps(obj)
                    if not self.lib.bpf_map__is_internal(m)]
            return progs, maps
        finally:
            self.lib.bpf_object__close(obj)

    def load(self, path: str, hook: str, section: str | None, reuse: dict[str, int],
             bpf: Bpf, label: str | None = None) -> LoadedObject:
        """Load the program of `section` (default: the only program of the hook's type)
        with the maps of `reuse` bound by name where type and sizes match. Refusals raise
        ObjectError naming the file (`label`) and the field; nothing stays loaded."""
        import time
        short = label or os.path.basename(path)
        want = PROG_TYPES[hook]
        obj = self._open(path)
        try:
            progs = self._programs(obj)
            infos = [(p, self.lib.bpf_program__section_name(p).decode(),
                      self.lib.bpf_program__type(p)) for p in progs]
            if not infos:
                raise ObjectError(short, "sections", "no program in the object (a function "
                                  "needs SEC(\"xdp\") or SEC(\"tc\"))")
            have = ", ".join(sorted({s for _, s, _ in infos}))
            if section is not None:
                chosen = [x for x in infos if x[1] == section]
                if not chosen:
                    raise ObjectError(short, f"section {section[:40]}",
                                      f"no such program section (has {have})")
                if len(chosen) > 1:
                    raise ObjectError(short, f"section {section[:40]}", "holds several "
                                      "programs; give each its own section")
            else:
                chosen = [x for x in infos if x[2] == want] or \
                    ([infos[0]] if len(infos) == 1 else [])
                if len(chosen) != 1:
                    raise ObjectError(short, "section", f"{len(chosen) or 'no'} programs "
                                      f"for {hook} (sections: {have}); name one with "
                                      "--section NAME")
            prog, sec, ptype = chosen[0]
            if sec.endswith(".frags"):
                raise ObjectError(short, f"section {sec}", "multi-buffer (frags) programs "
                                  "cannot be tail-called from the lab's root program")
            if ptype == 0:   # a section name libbpf does not know: take the hook's type
                self.lib.bpf_program__set_type(prog, want)
            elif ptype != want:
                raise ObjectError(short, f"section {sec}", f"a {_TYPE_NAMES.get(ptype, ptype)}"
                                  f" program cannot run on the {hook} hook (use "
                                  f"SEC(\"{'xdp' if hook == 'xdp' else 'tc'}\"))")
            # the root program (and a prog array's owner) has no expected attach type;
            # libbpf gives SEC("xdp") BPF_XDP, which the kernel's tail-call slot refuses
            self.lib.bpf_program__set_expected_attach_type(prog, 0)
            for p, _, _ in infos:
                self.lib.bpf_program__set_autoload(p, p == prog)
            notes, specs = [], {}
            for m in self._maps(obj):
                if self.lib.bpf_map__is_internal(m):
                    continue
                spec = self._spec(m)
                specs[spec.name] = spec
                fd = reuse.get(spec.name)
                if fd is None:
                    continue
                running = bpf.map_info(fd)
                if (running.map_type, running.key_size, running.value_size,
                        running.max_entries, running.flags) == (
                        spec.map_type, spec.key_size, spec.value_size, spec.max_entries,
                        spec.flags):
                    if self.lib.bpf_map__reuse_fd(m, fd) != 0:
                        raise ObjectError(short, f"map {spec.name}", "cannot bind the running "
                                          f"map: {os.strerror(ctypes.get_errno())}")
                elif spec.name == CHAIN_MAP:
                    raise ObjectError(short, f"map {CHAIN_MAP}", "must be a prog_array of "
                                      "one u32 slot (include ebpf/include/flexnet_chain.h)")
                else:
                    notes.append(f"map {spec.name} not carried over: "
                                 f"{map_type_name(spec.map_type)} {spec.key_size}/"
                                 f"{spec.value_size}x{spec.max_entries} here, "
                                 f"{map_type_name(running.map_type)} {running.key_size}/"
                                 f"{running.value_size}x{running.max_entries} running")
            log = ctypes.create_string_buffer(1 << 20)
            self.lib.bpf_program__set_log_buf(prog, log, len(log))
            t0 = time.perf_counter()
            if self.lib.bpf_object__load(obj) != 0:
                err = ctypes.get_errno()
                text = log.value.decode(errors="replace")
                if text:
                    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:]
                    raise ObjectError(short, f"section {sec}", "the kernel verifier refused "
                                      f"the program: {(last[0] if last else '')[:160]}",
                                      text)
                raise ObjectError(short, f"section {sec}", "libbpf could not load it: "
                                  f"{os.strerror(err) if err else 'error'}")
            load_ms = (time.perf_counter() - t0) * 1e3
            prog_fd = os.dup(self.lib.bpf_program__fd(prog))
            used = set(bpf.prog_map_ids(prog_fd))
            maps, created = {}, []
            for m in self._maps(obj):
                fd = self.lib.bpf_map__fd(m)
                if fd < 0 or self.lib.bpf_map__is_internal(m):
                    continue
                name = self.lib.bpf_map__name(m).decode()
                if bpf.map_id(fd) not in used:
                    continue
                if name in reuse and reuse[name] >= 0 and bpf.map_id(reuse[name]) == \
                        bpf.map_id(fd):
                    maps[name] = reuse[name]
                else:
                    maps[name] = os.dup(fd)
                    created.append(name)
            return LoadedObject(path, sec, self.lib.bpf_program__name(prog).decode(),
                                prog_fd, maps, specs, created, notes, load_ms)
        finally:
            self.lib.bpf_object__close(obj)

