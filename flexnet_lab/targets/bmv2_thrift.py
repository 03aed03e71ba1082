"""bmv2's thrift runtime interface, the few register calls the lab needs (and the
simple_switch service's egress queue depth).

P4Runtime (PI) cannot read or write bmv2 registers; bmv2's thrift server can. It speaks
thrift's binary protocol over a plain TCP stream, multiplexed by service name
("standard:<call>"), so a small encoder does instead of bmv2's generated Python modules
(which the p4lang packages do not always install). Calls may be pipelined: requests go
out back to back and replies come back in order on the one connection.

The server binds 0.0.0.0 in the switch's own namespace; the caller hands us a connected
socket opened inside that namespace.

Note (bmv2 context.cpp): register calls act on the *runtime* configuration — after a
pipeline is saved and before it is committed, that is the saved one, not the one
carrying packets.
"""
from __future__ import annotations

import socket
import struct

from ..errors import TargetError

_CALL, _REPLY, _EXCEPTION = 1, 2, 3
_VERSION_1 = 0x80010000
# thrift type ids
_STOP, _BOOL, _BYTE, _DOUBLE, _I16, _I32, _I64, _STRING, _STRUCT, _MAP, _SET, _LIST = (
    0, 2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15)
_FIXED = {_BOOL: 1, _BYTE: 1, _DOUBLE: 8, _I16: 2, _I32: 4, _I64: 8}
_MASK64 = (1 << 64) - 1
_REGISTER_ERRORS = {1: "invalid register name", 2: "invalid index", 3: "error"}
_BATCH = 2048          # calls per round trip (their replies, ~40 bytes each, fit a socket)


class _Reader:
    """Reads thrift binary values from a socket."""

    def __init__(self, sock: socket.socket):
        self._sock, self._buf, self._pos = sock, bytearray(), 0

    def take(self, n: int) -> bytes:
        # an offset into one buffer: a 65,536-slot register reply is 512 KiB, and slicing
        # the rest off at every value made reading it quadratic
        while len(self._buf) - self._pos < n:
            chunk = self._sock.recv(262144)
            if not chunk:
                raise ConnectionError("thrift server closed the connection")
            if self._pos:
                del self._buf[:self._pos]
                self._pos = 0
            self._buf += chunk
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return out

    def i32(self) -> int:
        return struct.unpack("!i", self.take(4))[0]

    def i64(self) -> int:
        return struct.unpack("!q", self.take(8))[0]

    def string(self) -> bytes:
        return self.take(self.i32())

    def fields(self, ftype: int) -> dict:
        """The rest of a struct whose first field type byte was `ftype`: {field id: value}."""
        fields = {}
        while ftype != _STOP:
            fid = struct.unpack("!h", self.take(2))[0]
            fields[fid] = self.value(ftype)
            ftype = self.take(1)[0]
        return fields

    def value(self, ttype: int):
        """One value of `ttype`; structs come back as {field id: value}."""
        if ttype == _I32:
            return self.i32()
        if ttype == _I64:
            return self.i64()
        if ttype == _STRING:
            return self.string()
        if ttype in _FIXED:
            return self.take(_FIXED[ttype])
        if ttype == _STRUCT:
            return self.fields(self.take(1)[0])
        if ttype in (_LIST, _SET):
            etype, n = self.take(1)[0], self.i32()
            if etype == _I64:   # register contents: one unpack for the whole list
                return list(struct.unpack(f"!{n}q", self.take(8 * n)))
            return [self.value(etype) for _ in range(n)]
        if ttype == _MAP:
            kt, vt, n = self.take(1)[0], self.take(1)[0], self.i32()
            return {self.value(kt): self.value(vt) for _ in range(n)}
        raise ConnectionError(f"thrift: unknown type {ttype}")


def _field(ttype: int, fid: int, payload: bytes) -> bytes:
    return struct.pack("!bh", ttype, fid) + payload


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!i", len(b)) + b


class Bmv2Thrift:
    """Register access on one bmv2 switch (context 0) over a connected thrift socket."""

    def __init__(self, device: str, sock: socket.socket):
        self.device, self._sock = device, sock
        self._reader = _Reader(sock)
        self._seq = 0
        self._pending: list[tuple[str, str]] = []   # sent, reply not read yet (in order)

    def _request(self, call: str, args: bytes) -> bytes:
        """`call` is "<service>:<name>" or a bare name of the "standard" service."""
        self._seq += 1
        name = call if ":" in call else f"standard:{call}"
        return (struct.pack("!I", _VERSION_1 | _CALL) + _str(name)
                + struct.pack("!i", self._seq) + args + bytes([_STOP]))

    def _reply(self, call: str, what: str):
        head = self._reader.i32() & 0xFF
        self._reader.string()
        self._reader.i32()
        first = self._reader.take(1)[0]
        if first == _STOP and head == _REPLY:   # a void call that worked (a register write)
            return None
        body = self._reader.fields(first)
        if head == _EXCEPTION:
            raise TargetError(self.device, f"thrift {call} ({what}): "
                              f"{body.get(1, b'').decode(errors='replace')}")
        if 1 in body:   # the declared InvalidRegisterOperation
            code = body[1].get(1, 3)
            raise TargetError(self.device, f"{what}: {_REGISTER_ERRORS.get(code, code)}")
        return body.get(0)

    def _calls(self, calls: list[tuple[str, bytes, str]]) -> list:
        """Send every request, then read every reply (pipelined, in order; _BATCH a round
        trip: all at once, the replies could fill the socket while requests still go out)."""
        out: list = []
        for k in range(0, len(calls), _BATCH):
            self._send(calls[k:k + _BATCH])
            out += self._receive()
        return out

    def _send(self, calls: list[tuple[str, bytes, str]]) -> None:
        """Requests out; their replies are read by _receive() (a reply still unread from
        an earlier send is read and dropped first: replies come back in order)."""
        if self._pending:
            try:
                self._receive()
            except TargetError:
                pass
        try:
            self._sock.sendall(b"".join(self._request(c, a) for c, a, _ in calls))
        except OSError as exc:
            raise TargetError(self.device, f"thrift: {exc}") from exc
        self._pending = [(c, what) for c, _, what in calls]

    @property
    def waiting(self) -> bool:
        """Requests were sent whose replies were not read yet (send_read)."""
        return bool(self._pending)

    def _receive(self) -> list:
        pending, self._pending = self._pending, []
        try:
            out = []
            for k, (c, what) in enumerate(pending):
                try:
                    out.append(self._reply(c, what))
                except TargetError:     # the rest still arrive: read them before raising
                    for c2, what2 in pending[k + 1:]:
                        try:
                            self._reply(c2, what2)
                        except TargetError:
                            pass
                    raise
            return out
        except (OSError, ConnectionError) as exc:
            raise TargetError(self.device, f"thrift: {exc}") from exc

    def read_registers(self, names: list[str]) -> dict[str, list[int]]:
        """Every slot of each named register array (one round trip for all)."""
        self.send_read(names)
        return self.receive_read(names)

    def send_read(self, names: list[str]) -> None:
        """The first half of read_registers(): the requests go out, and the switch answers
        while the caller asks other switches; receive_read(names) takes the replies."""
        self._send([("bm_register_read_all", _field(_I32, 1, struct.pack("!i", 0))
                     + _field(_STRING, 2, _str(n)), f"register {n}") for n in names])

    def receive_read(self, names: list[str]) -> dict[str, list[int]]:
        replies = self._receive()
        return {n: [v & _MASK64 for v in (r or [])] for n, r in zip(names, replies)}

    def write_registers(self, *values: dict[str, dict[int, int]], wait: bool = True) -> int:
        """Set register slots {name: {index: value}}, each dict after the one before (the
        switch runs a connection's calls in order), in one round trip; returns how many.
        wait=False: the requests are sent and finish() takes the replies (the caller asks
        another server meanwhile)."""
        calls = []
        for v in values:
            for name, slots in v.items():
                head = _field(_I32, 1, struct.pack("!i", 0)) + _field(_STRING, 2, _str(name))
                for index, value in sorted(slots.items()):
                    args = head + struct.pack("!bhibhq", _I32, 3, index, _I64, 4, _i64(value))
                    calls.append(("bm_register_write", args, f"register {name}[{index}]"))
        if wait or len(calls) > _BATCH:
            self._calls(calls)
        else:
            self._send(calls)
        return len(calls)

    def finish(self) -> None:
        """The replies of requests sent without waiting (their errors raised here)."""
        if self._pending:
            self._receive()

    def set_egress_queue_depth(self, depth_pkts: int) -> None:
        """Every egress queue of the switch holds up to depth_pkts packets (simple_switch
        service; bmv2's default is 64, and a full queue drops without a counter)."""
        self._calls([("simple_switch:set_all_egress_queue_depths",
                      _field(_I32, 1, struct.pack("!i", depth_pkts)),
                      f"egress queue depth {depth_pkts}")])

    def close(self) -> None:
        self._sock.close()


def _i64(value: int) -> int:
    """bmv2 carries register values as thrift i64: a bit<64> above 2^63 wraps."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value
