"""The oracle's probe sender and receiver, run inside a host's namespace (verify/oracle.py).

  python -m flexnet_lab.verify.probe_agent send DST_IP FIRST_ID STEP RATE_PPS
      sends UDP probes to DST_IP:PROBE_PORT (compiler/probe.py: magic, id, an empty trailer;
      UDP checksum 0, so devices write the trailer without fixing it), ids FIRST_ID,
      FIRST_ID + STEP, ...: probe k is due at T0 + k / RATE_PPS and sent then (late only
      when the sender is not scheduled in time). Prints "ready T0" (time.monotonic(), one
      clock for every namespace) when it starts; on SIGTERM prints how many it sent and exits.
  python -m flexnet_lab.verify.probe_agent recv OUT_FILE
      receives probes on PROBE_PORT (inside its namespace only); on SIGTERM writes, in
      arrival order, each probe's id, hop count and slots (compiler/probe.py RECORD, 40
      bytes) to OUT_FILE and exits.
Either ends by itself when the process that started it is gone (a crashed test or
benchmark): an orphaned agent would otherwise probe for ever.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time

from ..compiler.probe import PAYLOAD_BYTES, PROBE_MAGIC, PROBE_PORT, SO_NO_CHECK, probe_payload


def _orphaned(parent: int) -> bool:
    return os.getppid() != parent


def send(dst: str, first: int, step: int, rate: float) -> int:
    stop, parent, polls = [], os.getppid(), 0
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    pid, sent, t0 = first, 0, time.monotonic()
    print(f"ready {t0!r}", flush=True)
    while not stop:
        due = int((time.monotonic() - t0) * rate) + 1
        while sent < due and not stop:
            try:
                sock.sendto(probe_payload(pid), (dst, PROBE_PORT))
            except OSError:  # no route/neighbour yet: the probe counts as sent and lost
                pass
            pid += step
            sent += 1
        time.sleep(0.0005)
        polls += 1
        if polls % 200 == 0 and _orphaned(parent):
            break
    print(f"sent {sent}", flush=True)
    return 0


def recv(out: str) -> int:
    stop, parent = [], os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("0.0.0.0", PROBE_PORT))
    sock.settimeout(0.05)
    records, n = bytearray(), 0
    print("ready", flush=True)
    while not stop:
        try:
            data = sock.recv(128)
        except (socket.timeout, InterruptedError):
            if _orphaned(parent):
                return 0
            continue
        if len(data) >= PAYLOAD_BYTES and struct.unpack_from(">I", data)[0] == PROBE_MAGIC:
            records += data[4:PAYLOAD_BYTES]
            n += 1
            if n % 2048 == 0 and _orphaned(parent):
                return 0
    with open(out, "wb") as fh:
        fh.write(records)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["send"] and len(argv) == 5:
        return send(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
    if argv[:1] == ["recv"] and len(argv) == 2:
        return recv(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
