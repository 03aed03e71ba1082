"""Thin wrappers over the bpf(2) system call (x86_64), with ctypes.

bcc compiles; these calls create maps, load already-compiled instructions, pin and read
objects. Owning these steps lets one compiled program be instantiated on many devices
(fresh maps each) in milliseconds, and lets a new program version bind the maps of the
running one so their contents survive a swap.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

_SYS_BPF = 321  # x86_64

MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
PROG_LOAD, OBJ_PIN, OBJ_GET = 5, 6, 7
PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 13, 14, 15
MAP_LOOKUP_BATCH = 24

# map types
MAP_HASH, MAP_ARRAY, MAP_PROG_ARRAY, MAP_PERCPU_HASH, MAP_PERCPU_ARRAY = 1, 2, 3, 5, 6
MAP_LPM_TRIE = 11
# program types
PROG_SCHED_CLS, PROG_XDP = 3, 6

BPF_F_NO_PREALLOC = 1
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_PSEUDO_MAP_FD = 1
_ATTR_SIZE = 128


class BpfCallError(OSError):
    """A bpf(2) command failed; carries errno and, for loads, the verifier log."""

    def __init__(self, what: str, err: int, log: str = ""):
        self.log = log
        super().__init__(err, f"{what}: {os.strerror(err)}")


@dataclass(frozen=True)
class MapSpec:
    """What it takes to create a map; two specs that compare equal are interchangeable."""
    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0


class Bpf:
    """The bpf(2) entry point. Holds only the libc handle; no global state."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def _call(self, cmd: int, attr: ctypes.Array, what: str) -> int:
        ret = self._libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), _ATTR_SIZE)
        if ret < 0:
            raise BpfCallError(what, ctypes.get_errno())
        return ret

    # --- maps -------------------------------------------------------------------------
    def map_create(self, spec: MapSpec) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("IIIII", attr, 0, spec.map_type, spec.key_size, spec.value_size,
                         spec.max_entries, spec.flags)
        struct.pack_into("16s", attr, 28, spec.name.encode()[:15])
        return self._call(MAP_CREATE, attr, f"create map {spec.name}")

    def _elem(self, cmd: int, fd: int, key: bytes, value: ctypes.Array | None, flags: int,
              what: str) -> None:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        kbuf = ctypes.create_string_buffer(key, len(key))
        vaddr = ctypes.addressof(value) if value is not None else 0
        struct.pack_into("IIQQQ", attr, 0, fd, 0, ctypes.addressof(kbuf), vaddr, flags)
        self._call(cmd, attr, what)

    def lookup(self, fd: int, key: bytes, value_size: int) -> bytes | None:
        value = ctypes.create_string_buffer(value_size)
        try:
            self._elem(MAP_LOOKUP_ELEM, fd, key, value, 0, "map lookup")
        except BpfCallError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return value.raw

    def update(self, fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        vbuf = ctypes.create_string_buffer(value, len(value))
        self._elem(MAP_UPDATE_ELEM, fd, key, vbuf, flags, "map update")

    def delete(self, fd: int, key: bytes) -> bool:
        try:
            self._elem(MAP_DELETE_ELEM, fd, key, None, 0, "map delete")
        except BpfCallError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def keys(self, fd: int, key_size: int) -> list[bytes]:
        """All keys of a hash/LPM map (GET_NEXT_KEY walk from no key)."""
        out: list[bytes] = []
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        nxt = ctypes.create_string_buffer(key_size)
        cur: ctypes.Array | None = None
        while True:
            struct.pack_into("IIQQ", attr, 0, fd, 0,
                             ctypes.addressof(cur) if cur is not None else 0,
                             ctypes.addressof(nxt))
            ret = self._libc.syscall(_SYS_BPF, MAP_GET_NEXT_KEY, ctypes.byref(attr), _ATTR_SIZE)
            if ret < 0:
                err = ctypes.get_errno()
                if err == errno.ENOENT:
                    return out
                raise BpfCallError("map get_next_key", err)
            out.append(nxt.raw)
            cur = ctypes.create_string_buffer(nxt.raw, key_size)

    def items(self, fd: int, key_size: int, value_size: int, max_entries: int
              ) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of an array or hash map, read in batches of up to max_entries
        per call (BPF_MAP_LOOKUP_BATCH): one system call for a whole sketch instead of one
        per slot. A map the kernel cannot batch (an LPM trie) is walked key by key."""
        out: list[tuple[bytes, bytes]] = []
        for count, kraw, vraw in self._batches(fd, key_size, value_size, max_entries):
            out += [(kraw[i * key_size:(i + 1) * key_size],
                     vraw[i * value_size:(i + 1) * value_size]) for i in range(count)]
        return out

    def array_values(self, fd: int, value_size: int, max_entries: int) -> bytes:
        """The values of an array map, slot 0 first, as one byte string (batch reads: an
        array's batches come in index order)."""
        return b"".join(vraw[:count * value_size] for count, _, vraw
                        in self._batches(fd, 4, value_size, max_entries))

    def _batches(self, fd: int, key_size: int, value_size: int, max_entries: int):
        n = max(1, max_entries)
        keys = ctypes.create_string_buffer(key_size * n)
        values = ctypes.create_string_buffer(value_size * n)
        # the batch token is the last key read (arrays) or a u32 bucket (hashes)
        tok_in = ctypes.create_string_buffer(max(8, key_size))
        tok_out = ctypes.create_string_buffer(max(8, key_size))
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        first = True
        while True:
            struct.pack_into("QQQQII", attr, 0, 0 if first else ctypes.addressof(tok_in),
                             ctypes.addressof(tok_out), ctypes.addressof(keys),
                             ctypes.addressof(values), n, fd)
            ret = self._libc.syscall(_SYS_BPF, MAP_LOOKUP_BATCH, ctypes.byref(attr), _ATTR_SIZE)
            err = ctypes.get_errno() if ret < 0 else 0
            if ret < 0 and err != errno.ENOENT:
                if first and err in (errno.EINVAL, errno.EOPNOTSUPP, 524):  # 524: ENOTSUPP
                    pairs = [(k, self.lookup(fd, k, value_size)) for k in self.keys(fd, key_size)]
                    pairs = [(k, v) for k, v in pairs if v is not None]
                    yield (len(pairs), b"".join(k for k, _ in pairs),
                           b"".join(v for _, v in pairs))
                    return
                raise BpfCallError("map lookup batch", err)
            count = struct.unpack_from("I", attr, 32)[0]
            if count:
                yield count, keys.raw[:count * key_size], values.raw[:count * value_size]
            if ret < 0:   # ENOENT: nothing after this batch
                return
            ctypes.memmove(tok_in, tok_out, len(tok_out))
            first = False

    # --- programs ---------------------------------------------------------------------
    def prog_load(self, prog_type: int, insns: bytes, name: str, license: str = "GPL") -> int:
        """Load instructions; on failure the verifier log is in the raised error."""
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        code = ctypes.create_string_buffer(insns, len(insns))
        lic = ctypes.create_string_buffer(license.encode())
        struct.pack_into("IIQQ", attr, 0, prog_type, len(insns) // 8, ctypes.addressof(code),
                         ctypes.addressof(lic))
        struct.pack_into("16s", attr, 48, name.encode()[:15])
        ret = self._libc.syscall(_SYS_BPF, PROG_LOAD, ctypes.byref(attr), _ATTR_SIZE)
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        # retry with a log buffer only on failure: logging slows every successful load
        logbuf = ctypes.create_string_buffer(1 << 20)
        struct.pack_into("IIQ", attr, 24, 1, len(logbuf), ctypes.addressof(logbuf))
        self._libc.syscall(_SYS_BPF, PROG_LOAD, ctypes.byref(attr), _ATTR_SIZE)
        raise BpfCallError(f"load program {name}", err, logbuf.value.decode(errors="replace"))

    # --- objects ----------------------------------------------------------------------
    def pin(self, fd: int, path: str) -> None:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        pbuf = ctypes.create_string_buffer(path.encode())
        struct.pack_into("QI", attr, 0, ctypes.addressof(pbuf), fd)
        self._call(OBJ_PIN, attr, f"pin {path}")

    def obj_get(self, path: str) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        pbuf = ctypes.create_string_buffer(path.encode())
        struct.pack_into("Q", attr, 0, ctypes.addressof(pbuf))
        return self._call(OBJ_GET, attr, f"open pin {path}")

    def prog_id(self, fd: int) -> int:
        """The kernel id of a loaded program (bpf_prog_info.id)."""
        info = ctypes.create_string_buffer(256)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
        self._call(OBJ_GET_INFO_BY_FD, attr, "program info")
        return struct.unpack_from("I", info, 4)[0]

    def prog_fd_by_id(self, prog_id: int) -> int:
        """A new fd for the loaded program with kernel id `prog_id`."""
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("I", attr, 0, prog_id)
        return self._call(PROG_GET_FD_BY_ID, attr, f"open program id {prog_id}")

    def map_fd_by_id(self, map_id: int) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("I", attr, 0, map_id)
        return self._call(MAP_GET_FD_BY_ID, attr, f"open map id {map_id}")

    def prog_map_ids(self, fd: int) -> list[int]:
        """Kernel ids of the maps a loaded program uses (bpf_prog_info.map_ids)."""
        ids = (ctypes.c_uint32 * 64)()
        info = ctypes.create_string_buffer(256)
        struct.pack_into("<IQ", info, 52, 64, ctypes.addressof(ids))
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
        self._call(OBJ_GET_INFO_BY_FD, attr, "program info")
        n = struct.unpack_from("I", info, 52)[0]
        return list(ids[:min(n, 64)])

    def map_id(self, fd: int) -> int:
        """The kernel id of a map (bpf_map_info.id)."""
        info = ctypes.create_string_buffer(128)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
        self._call(OBJ_GET_INFO_BY_FD, attr, "map info")
        return struct.unpack_from("I", info, 4)[0]

    def map_info(self, fd: int) -> MapSpec:
        """Spec of an existing map (bpf_map_info)."""
        info = ctypes.create_string_buffer(128)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
        self._call(OBJ_GET_INFO_BY_FD, attr, "map info")
        mtype, _id, ksz, vsz, maxe, flags = struct.unpack_from("IIIIII", info, 0)
        name = struct.unpack_from("16s", info, 24)[0].split(b"\0")[0].decode()
        return MapSpec(name, mtype, ksz, vsz, maxe, flags)

    @staticmethod
    def close(fd: int) -> None:
        try:
            os.close(fd)
        except OSError:
            pass
