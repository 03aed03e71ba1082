"""Binary layouts of tables and maps on eBPF targets, shared by the C generator (which
declares them) and the control plane (which encodes entries into them and reads them back).

Every key field is carried as a u64 (host order) except in LPM keys, which the kernel wants
as a prefix length followed by big-endian bytes. Every table value is an action record:
action id, priority, four u64 arguments — so adding or removing an action never changes a
table's value size, and entries survive action changes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ..program.model import Map, Program, Table

ACTION_RECORD = struct.Struct("<II4Q")   # action id, priority, args[4]
COUNTER = struct.Struct("<QQ")            # packets, bytes
METER = struct.Struct("<QQ")              # tokens, last refill (ns)
MAX_ARGS = 4


def lpm_bytes(bits: int) -> int:
    return (bits + 7) // 8


def key_words(m: Map) -> int:
    return max(1, (m.key_bits + 63) // 64)


@dataclass(frozen=True)
class TableLayout:
    """How one table is stored: map kind, key size, value size."""
    name: str
    kind: str               # exact | lpm | ternary
    nkeys: int
    key_bits: tuple[int, ...]
    size: int

    @property
    def key_size(self) -> int:
        if self.kind == "lpm":
            return 4 + lpm_bytes(self.key_bits[0])
        if self.kind == "ternary":
            return 4
        return 8 * self.nkeys

    @property
    def value_size(self) -> int:
        if self.kind == "ternary":
            return ACTION_RECORD.size + 16 * self.nkeys
        return ACTION_RECORD.size

    def encode_key(self, values: tuple[int, ...], prefixlen: int | None = None) -> bytes:
        if self.kind == "lpm":
            nbytes = lpm_bytes(self.key_bits[0])
            shift = nbytes * 8 - self.key_bits[0]
            plen = self.key_bits[0] if prefixlen is None else prefixlen
            return struct.pack("<I", plen + 0) + (values[0] << shift).to_bytes(nbytes, "big")
        return struct.pack(f"<{self.nkeys}Q", *values)

    def decode_key(self, raw: bytes) -> tuple[tuple[int, ...], int | None]:
        if self.kind == "lpm":
            nbytes = lpm_bytes(self.key_bits[0])
            shift = nbytes * 8 - self.key_bits[0]
            plen = struct.unpack_from("<I", raw)[0]
            return (int.from_bytes(raw[4:4 + nbytes], "big") >> shift,), plen
        return struct.unpack(f"<{self.nkeys}Q", raw[: 8 * self.nkeys]), None

    @staticmethod
    def encode_action(action_id: int, args: tuple[int, ...], priority: int = 0) -> bytes:
        padded = tuple(args) + (0,) * (MAX_ARGS - len(args))
        return ACTION_RECORD.pack(action_id, priority, *padded)

    @staticmethod
    def decode_action(raw: bytes) -> tuple[int, int, tuple[int, ...]]:
        aid, prio, *args = ACTION_RECORD.unpack_from(raw)
        return aid, prio, tuple(args)

    def encode_ternary(self, values, masks, action_id, args, priority) -> bytes:
        return (self.encode_action(action_id, args, priority)
                + struct.pack(f"<{self.nkeys}Q{self.nkeys}Q", *values, *masks))

    def decode_ternary(self, raw: bytes):
        aid, prio, args = self.decode_action(raw)
        vm = struct.unpack_from(f"<{2 * self.nkeys}Q", raw, ACTION_RECORD.size)
        return aid, prio, args, vm[: self.nkeys], vm[self.nkeys:]


def table_layout(program: Program, table: Table) -> TableLayout:
    kinds = {k.kind for k in table.keys}
    kind = "ternary" if "ternary" in kinds else ("lpm" if "lpm" in kinds else "exact")
    bits = tuple(program.field_bits(k.field) or 64 for k in table.keys)
    return TableLayout(table.name, kind, len(table.keys), bits, table.size)


def map_c_name(kind: str, name: str) -> str:
    """C (and bcc table) name of a map: t_ tables, d_ table defaults, m_ program maps."""
    return f"{kind}_{name}"
