"""What the per-flow level costs the tc root per entering packet, measured by the kernel.

Three builds of the root program (compiler/ebpf.py root_source), each run on the same UDP
frame by BPF_PROG_TEST_RUN (the kernel times `repeat` runs and reports ns per run):
  baseline       - the root without the per-flow step (the line that calls flx_flow_slot
                   removed): what every packet paid before;
  per_flow_off   - today's root with flow tracking off (flx_fcfg[0] == 0): the cost of
                   the one flag read outside a per-flow change;
  per_flow_on    - flow tracking on, the frame's flow known: the flow table lookup and its
                   time stamp update, paid only during a per-flow change.
The pipeline slot is empty, so only the root's own work is timed (the tail call fails the
same way in all three). Rounds interleave the three; medians. Needs root. Prints one JSON
object. Usage: python benchmarks/per_flow_root.py [--rounds 9] [--repeat 1000000]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flexnet_lab.compiler.ebpf import FCFG_MAP, root_source  # noqa: E402
from flexnet_lab.targets.bcc_compile import Compiler  # noqa: E402
from flexnet_lab.targets.bpf_syscall import _ATTR_SIZE, _SYS_BPF, PROG_SCHED_CLS, Bpf  # noqa: E402

PROG_TEST_RUN = 10
FLOW_STEP = "    if (entering)   /* per-flow level: a known, not idle flow keeps its slot */\n" \
            "        v = flx_flow_slot(ctx, v);\n"


def _frame() -> bytes:
    """Ethernet + IPv4 + UDP 40000 -> 5001, 64 bytes of payload."""
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 64, 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 8]))
    udp = struct.pack(">HHHH", 40000, 5001, 8 + 64, 0)
    return bytes(6) + bytes(5) + b"\x01" + b"\x08\x00" + ip + udp + bytes(64)


def _load(bpf: Bpf, comp: Compiler, source: str) -> tuple[int, dict[str, int]]:
    image = comp.compile(source, ["root"])
    maps = {n: bpf.map_create(spec) for n, spec in image.maps.items()}
    return bpf.prog_load(PROG_SCHED_CLS, image.patched("root", maps), "root"), maps


def _ns_per_run(bpf: Bpf, fd: int, frame: bytes, repeat: int) -> float:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    data = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)
    struct.pack_into("IIIIQQII", attr, 0, fd, 0, len(frame), len(out), ctypes.addressof(data),
                     ctypes.addressof(out), repeat, 0)
    bpf._call(PROG_TEST_RUN, attr, "test run")
    return float(struct.unpack_from("I", attr, 36)[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=1_000_000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "needs root (BPF_PROG_TEST_RUN)"}))
        return 3
    bpf, comp = Bpf(), Compiler()
    src = root_source("tc")
    assert FLOW_STEP in src, "the root's per-flow step moved: update FLOW_STEP"
    fds = []
    try:
        base, bmaps = _load(bpf, comp, src.replace(FLOW_STEP, ""))
        off, omaps = _load(bpf, comp, src)
        on, nmaps = _load(bpf, comp, src)
        fds = [base, off, on, *bmaps.values(), *omaps.values(), *nmaps.values()]
        bpf.update(nmaps[FCFG_MAP], (1).to_bytes(4, "little"), (100_000).to_bytes(4, "little"))
        bpf.update(nmaps[FCFG_MAP], bytes(4), (7).to_bytes(4, "little"))
        frame = _frame()
        runs: dict[str, list[float]] = {"baseline": [], "per_flow_off": [], "per_flow_on": []}
        for _ in range(args.rounds):
            for name, fd in (("baseline", base), ("per_flow_off", off), ("per_flow_on", on)):
                runs[name].append(_ns_per_run(bpf, fd, frame, args.repeat))
    finally:
        for fd in fds:
            bpf.close(fd)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({
        "rounds": args.rounds, "repeat": args.repeat,
        "baseline_ns": med["baseline"], "per_flow_off_ns": med["per_flow_off"],
        "per_flow_on_ns": med["per_flow_on"],
        "off_overhead_ns": round(med["per_flow_off"] - med["baseline"], 1),
        "on_overhead_ns": round(med["per_flow_on"] - med["baseline"], 1),
        "runs_ns": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
