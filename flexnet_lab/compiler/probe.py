"""The consistency oracle's probe on the wire: what the sender builds (verify/probe_agent.py),
what every recording pipeline writes into (compiler/ebpf.py, compiler/p4.py) and what the
receiver and the oracle decode (verify/oracle.py).

A probe is an IPv4 datagram without options to UDP port PROBE_PORT, sent with UDP checksum 0
(the sender sets SO_NO_CHECK), so a device writes into its payload without fixing any
checksum. The payload (PAYLOAD_BYTES, at frame bytes 42..85 of the untagged frame) is the
trailer the devices fill:
    0  magic "FXPR"                     4 bytes
    4  probe id                         u32, big-endian
    8  hop count                        1 byte: devices that ran the probe, saturating at
                                        COUNT_MAX; only the first SLOTS store a version, so
                                        a count above SLOTS means the trailer overflowed
    9  reserved                         3 bytes, 0
   12  slots                            SLOTS x u32 big-endian: the version number each
                                        recording hop ran, in path order
"""
from __future__ import annotations

import struct

PROBE_PORT = 33999           # UDP destination port of oracle probes
PROBE_MAGIC = 0x46585052     # "FXPR": first payload word of a probe; the id follows
SLOTS = 8                    # hops the trailer holds
COUNT_MAX = 255              # the hop count saturates here
PAYLOAD_AT = 42              # frame offset of the payload: ethernet 14, IPv4 20, UDP 8
PAYLOAD_BYTES = 44
COUNT_AT = 8                 # payload offsets of the hop count and of slot 0
SLOTS_AT = 12
PROBE_FRAME_BYTES = PAYLOAD_AT + PAYLOAD_BYTES   # 86: the shortest frame that is a probe
SO_NO_CHECK = 11             # Linux SOL_SOCKET option: send UDP with checksum 0

RECORD = struct.Struct(">IB3x8I")   # payload bytes 4..43: id, count, slots (what receivers keep)
RECORD_BYTES = RECORD.size          # 40


def probe_payload(pid: int) -> bytes:
    """A fresh probe's payload: magic, id, hop count 0, empty slots."""
    return struct.pack(">II", PROBE_MAGIC, pid & 0xFFFFFFFF) + bytes(PAYLOAD_BYTES - 8)


def hops(count: int, slots: tuple[int, ...]) -> tuple[int, ...] | None:
    """The versions a probe met, in path order; None when the trailer overflowed (more
    recording hops than slots: the path is not known whole)."""
    if count > SLOTS:
        return None
    return tuple(slots[:count])
