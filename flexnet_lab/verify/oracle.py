"""The consistency oracle: which program versions did each probe meet along its path?

Probes are UDP datagrams (port PROBE_PORT, payload "FXPR" + a 32-bit id) sent between lab
hosts by probe_agent.py. Every eBPF pipeline on tc (switches and host tc hooks) writes, for
each probe it runs, `id << 32 | version` into its flx_probe array at slot id % 65536, where
version is the number of that loaded pipeline (flx_ver, fresh at every load). The oracle
reads those arrays (mmap) and knows, per probe, the version met at every hop.

Versions are placed in time by snapshots: `note()` after every change records each
device's running version, so a version v of device d was running in epochs [a, b]. A probe
met one network state iff the epoch ranges of its hops intersect (some epoch in which every
version it met was running); otherwise it is `mixed`. A probe is attributed to the newest
epoch it met (max a): mixed probes land on the change they straddled.

Lost: sent but not received; reordered: received after a probe of a higher id of the same
stream. A probe whose record was overwritten (more than 65536 probes between two
collect() calls on one device) is not counted as anything.
"""
from __future__ import annotations

import array
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

from ..errors import LabError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class _Stream:
    src: str
    dst: str
    first: int
    sender: object = None
    receiver: object = None
    out: str = ""
    sent: int = 0
    received: list[int] = field(default_factory=list)


class Oracle:
    """Probe streams between host pairs, per-hop version records, and the verdict.
    ctl: the controller (its device handles are read); pairs: [(src host, dst host)]."""

    def __init__(self, lab, ctl, pairs: list[tuple[str, str]], rate_pps: float = 2000):
        self.lab, self.ctl, self.rate = lab, ctl, rate_pps
        self.streams = [_Stream(s, d, i + 1) for i, (s, d) in enumerate(pairs)]
        self.step = len(self.streams)
        self.hops: dict[int, dict[str, int]] = {}
        self.epochs: list[dict] = []          # {label, level, versions: {device: version}}
        self._tmp = tempfile.mkdtemp(prefix="flexnet-oracle-")

    # --- probes ---------------------------------------------------------------------------
    def start(self) -> None:
        self.note("start", "-")
        py = sys.executable   # cwd=REPO: `-m` finds the package (the run tag's env is kept)
        for i, s in enumerate(self.streams):
            s.out = os.path.join(self._tmp, f"recv{i}")
            s.receiver = self.lab.host(s.dst).popen(
                [py, "-m", "flexnet_lab.verify.probe_agent", "recv", s.out], cwd=REPO)
        for s in self.streams:
            _ready(s.receiver, f"probe receiver on {s.dst}")
        for s in self.streams:
            s.sender = self.lab.host(s.src).popen(
                [py, "-m", "flexnet_lab.verify.probe_agent", "send",
                 self.lab.host(s.dst).IP(), str(s.first), str(self.step), str(self.rate)],
                cwd=REPO)
        for s in self.streams:
            _ready(s.sender, f"probe sender on {s.src}")

    def stop(self) -> None:
        for s in self.streams:
            if s.sender is not None:
                s.sender.send_signal(signal.SIGTERM)
                out, _ = s.sender.communicate(timeout=10)
                text = out.decode() if isinstance(out, bytes) else out or ""
                s.sent = next((int(ln.split()[1]) for ln in text.splitlines()
                               if ln.startswith("sent ")), 0)
                s.sender = None
        time.sleep(0.3)  # the last probes arrive
        for s in self.streams:
            if s.receiver is not None:
                s.receiver.send_signal(signal.SIGTERM)
                s.receiver.communicate(timeout=10)
                s.receiver = None
                ids = array.array("I")
                with open(s.out, "rb") as fh:
                    ids.frombytes(fh.read())
                s.received = ids.tolist()
                os.unlink(s.out)
        self.collect()
        try:
            os.rmdir(self._tmp)
        except OSError:
            pass

    def kill(self) -> None:
        """Every exit path: no agent outlives the oracle."""
        for s in self.streams:
            for p in (s.sender, s.receiver):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
            s.sender = s.receiver = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    # --- versions -------------------------------------------------------------------------
    def _devices(self) -> dict:
        return {n: h for n, h in self.ctl.devices.handles.items()
                if hasattr(h, "probe_records")}

    def note(self, label: str, level: str) -> int:
        """Snapshot every device's running version after a change; returns the epoch."""
        self.epochs.append({"label": label, "level": level,
                            "versions": {n: h.version for n, h in self._devices().items()}})
        return len(self.epochs) - 1

    def collect(self) -> None:
        """Read every device's per-hop record (call at least every 65536 probes)."""
        for name, h in self._devices().items():
            for pid, ver in h.probe_records().items():
                self.hops.setdefault(pid, {})[name] = ver

    # --- verdict --------------------------------------------------------------------------
    def report(self) -> dict:
        ranges: dict[tuple[str, int], list[int]] = {}
        for k, ep in enumerate(self.epochs):
            for dev, ver in ep["versions"].items():
                r = ranges.setdefault((dev, ver), [k, k])
                r[1] = k
        received, reordered = set(), set()
        for s in self.streams:
            top = 0
            for pid in s.received:
                if pid < top:
                    reordered.add(pid)
                top = max(top, pid)
                received.add(pid)
        sent_ids = {s.first + i * self.step for s in self.streams for i in range(s.sent)}
        per = [{"change": ep["label"], "consistency": ep["level"], "probes": 0, "single": 0,
                "mixed": 0, "lost": 0, "reordered": 0} for ep in self.epochs]
        unknown = unplaced = 0
        for pid, hops in self.hops.items():
            if pid not in sent_ids:
                continue
            spans = [ranges.get((d, v)) for d, v in hops.items()]
            if any(sp is None for sp in spans):
                unknown += 1     # a version no snapshot saw (a change undone)
                continue
            lo, hi = max(sp[0] for sp in spans), min(sp[1] for sp in spans)
            row = per[lo]
            row["probes"] += 1
            row["single" if lo <= hi else "mixed"] += 1
            row["lost"] += pid not in received
            row["reordered"] += pid in reordered
        unplaced = len(sent_ids) - sum(r["probes"] for r in per) - unknown
        by_level: dict[str, int] = {}
        for r in per:
            by_level[r["consistency"]] = by_level.get(r["consistency"], 0) + r["mixed"]
        return {"probes_sent": len(sent_ids), "probes_received": len(received & sent_ids),
                "probes_lost": len(sent_ids - received),
                "probes_reordered": len(reordered),
                "probes_placed": sum(r["probes"] for r in per),
                "probes_unplaced": unplaced, "probes_unknown_version": unknown,
                "mixed": sum(r["mixed"] for r in per), "mixed_by_level": by_level,
                "changes": per[1:]}


def _ready(proc, what: str, timeout_s: float = 10.0) -> None:
    line = proc.stdout.readline() if proc.stdout else b""
    if b"ready" not in (line if isinstance(line, bytes) else line.encode()):
        proc.kill()
        raise LabError(f"{what} did not start: {line[:200]!r}")
