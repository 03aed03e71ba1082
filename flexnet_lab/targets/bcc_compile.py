"""Compile eBPF C with bcc once; instantiate the result many times with the bpf(2) layer.

bcc (clang in-process) costs 0.3-0.5 s per compile. A lab of 20 switches runs one program
20 times, so the compiled instructions are kept as an image with its map relocations, and
each device gets its own maps patched into a copy of the instructions (a few ms).
"""
from __future__ import annotations

import ctypes
import glob
import os
import platform
import threading
from dataclasses import dataclass, field

from ..errors import CompileError, EnvironmentMissing
from .bpf_syscall import BPF_PSEUDO_MAP_FD, MapSpec

_KSRC_CACHE = "/var/cache/flexnet"
MADE_KEPT = 256


def kernel_source_dir(cache_root: str = _KSRC_CACHE) -> str:
    """A kernel header tree bcc accepts when the running kernel has no headers.

    Debian splits headers into -common and -amd64; bcc needs them merged. The merged tree
    (symlinks: common first, arch over it) is built once and cached.
    """
    running = f"/lib/modules/{platform.release()}/build"
    if os.path.isdir(running):
        return running
    commons = sorted(glob.glob("/usr/src/linux-headers-*-common"))
    if not commons:
        raise EnvironmentMissing(
            "no kernel headers: install Debian's linux-headers-amd64 (bcc needs a header tree)")
    common = commons[-1]
    arch = common[: -len("-common")] + "-amd64"
    if not os.path.isdir(arch):
        raise EnvironmentMissing(f"{arch} missing: install Debian's linux-headers-amd64")
    dest = os.path.join(cache_root, "kernel-src-" + os.path.basename(arch))
    if os.path.exists(os.path.join(dest, ".complete")):
        return dest
    tmp = dest + f".tmp{os.getpid()}"
    for src in (common, arch):
        _overlay(src, tmp)
    open(os.path.join(tmp, ".complete"), "w").close()
    try:
        os.rename(tmp, dest)
    except OSError:  # another process won the race; theirs is as good
        pass
    return dest


def _overlay(src: str, dst: str) -> None:
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        target = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(target, exist_ok=True)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            link = os.path.join(target, name)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(os.path.join(root, name), link)


@dataclass(frozen=True)
class Function:
    """One compiled BPF function: instructions plus where each map's fd goes."""
    name: str
    insns: bytes
    relocs: tuple[tuple[int, str], ...]  # (instruction index, map name)


@dataclass(frozen=True)
class Image:
    """A compiled program: functions and the specs of the maps they reference."""
    functions: dict[str, Function]
    maps: dict[str, MapSpec]
    source: str = field(repr=False, default="")

    def patched(self, func: str, fds: dict[str, int]) -> bytes:
        """The function's instructions with each map reference pointing at fds[map]."""
        fn = self.functions[func]
        code = bytearray(fn.insns)
        for idx, name in fn.relocs:
            code[idx * 8 + 4: idx * 8 + 8] = fds[name].to_bytes(4, "little", signed=True)
        return bytes(code)


class Compiler:
    """Compiles C sources with bcc. One per lab; caches images by source text."""

    def __init__(self, cflags: tuple[str, ...] = ()) -> None:
        self._cflags = list(cflags)
        self._cache: dict[str, Image] = {}
        self._made: dict[tuple, Image] = {}
        self._lock = threading.Lock()
        # bcc's clang front end is not thread-safe: two BPF() at once in one process
        # crash it (SIGSEGV); compiles take turns, the loads (verifier) still overlap
        self._bcc_lock = threading.Lock()

    def compile_made(self, key: tuple, make_source, functions: list[str]) -> Image:
        """compile(make_source(), functions), remembered by `key` (e.g. program, hook,
        role): 20 switches given one program generate its C once, not 20 times. Only the
        compiled instructions are shared; every device still loads its own copy."""
        with self._lock:
            image = self._made.get(key)
        if image is not None:
            return image
        image = self.compile(make_source(), functions)
        with self._lock:
            if len(self._made) >= MADE_KEPT:   # bounded: a long session makes many programs
                self._made.clear()
            self._made[key] = image
        return image

    def compile(self, source: str, functions: list[str]) -> Image:
        key = source + "\0" + ",".join(functions)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        with self._bcc_lock:
            with self._lock:
                if key in self._cache:   # compiled by another thread meanwhile
                    return self._cache[key]
            image = self._compile(source, functions)
        with self._lock:
            self._cache[key] = image
        return image

    def _compile(self, source: str, functions: list[str]) -> Image:
        try:
            from bcc import BPF, libbcc
        except ImportError as exc:
            raise EnvironmentMissing(
                "bcc is not importable: install Debian's python3-bpfcc and use a venv made "
                "with --system-site-packages") from exc
        os.environ.setdefault("BCC_KERNEL_SOURCE", kernel_source_dir())
        try:
            bpf = BPF(text=source.encode(), cflags=self._cflags + ["-w"])
        except Exception as exc:  # bcc raises bare Exception on clang errors
            raise CompileError(f"bcc could not compile the program: {exc}") from exc
        try:
            return _extract(bpf, _bcc_abi(libbcc.lib._name), functions, source)
        finally:
            bpf.cleanup()


def _bcc_abi(path: str) -> ctypes.CDLL:
    """Our own handle on libbcc with full prototypes (pointers must not pass as int)."""
    lib = ctypes.CDLL(path)
    vp, u = ctypes.c_void_p, ctypes.c_size_t
    for fn, res in (("bpf_num_tables", u), ("bpf_table_name", ctypes.c_char_p),
                    ("bpf_table_fd_id", ctypes.c_int), ("bpf_table_type_id", ctypes.c_int),
                    ("bpf_table_key_size_id", u), ("bpf_table_leaf_size_id", u),
                    ("bpf_table_max_entries_id", u), ("bpf_table_flags_id", ctypes.c_int)):
        f = getattr(lib, fn)
        f.restype = res
        f.argtypes = [vp] if fn == "bpf_num_tables" else [vp, u]
    for fn, res in (("bpf_function_start", vp), ("bpf_function_size", u)):
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, [vp, ctypes.c_char_p]
    return lib


def _extract(bpf, lib, functions: list[str], source: str) -> Image:
    mod = bpf.module
    maps: dict[str, MapSpec] = {}
    fd_to_name: dict[int, str] = {}
    for i in range(lib.bpf_num_tables(mod)):
        name = lib.bpf_table_name(mod, i).decode()
        maps[name] = MapSpec(name[:15], lib.bpf_table_type_id(mod, i),
                             lib.bpf_table_key_size_id(mod, i),
                             lib.bpf_table_leaf_size_id(mod, i),
                             lib.bpf_table_max_entries_id(mod, i),
                             lib.bpf_table_flags_id(mod, i))
        fd_to_name[lib.bpf_table_fd_id(mod, i)] = name
    out: dict[str, Function] = {}
    for fn in functions:
        start = lib.bpf_function_start(mod, fn.encode())
        if not start:
            raise CompileError(f"function {fn} not found in the compiled program")
        code = ctypes.string_at(start, lib.bpf_function_size(mod, fn.encode()))
        relocs = []
        for idx in range(len(code) // 8):
            op, regs = code[idx * 8], code[idx * 8 + 1]
            if op == 0x18 and (regs >> 4) == BPF_PSEUDO_MAP_FD:
                fd = int.from_bytes(code[idx * 8 + 4: idx * 8 + 8], "little")
                relocs.append((idx, fd_to_name[fd]))
        out[fn] = Function(fn, code, tuple(relocs))
    return Image(out, maps, source)
