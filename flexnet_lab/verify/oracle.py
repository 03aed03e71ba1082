"""The consistency oracle: which program versions did each probe meet along its path?

Probes are UDP datagrams (compiler/probe.py) sent between lab hosts by probe_agent.py. Every
pipeline that records (eBPF tc pipelines of switches and host hooks, bmv2 pipelines of the
lab's programs) writes the number of its loaded version (fresh at every load; a pipeline
holding two versions writes the one the packet runs) into the next slot of the probe's
trailer. The receiver keeps each probe's trailer: the versions it met, in path order.
Nothing is read from the devices, so no record is lost while a device swaps pipelines.

Versions are placed in time by snapshots: `note()` after every change records each
device's running version, so a version v of device d was running in epochs [a, b]; the
same snapshots say which device a version belongs to. A version no snapshot saw (a change
undone) makes the probe `unknown`; so does a version two devices ran (31-bit random
numbers colliding), and the collision is listed in the report, not merged. A probe met one
network state iff the epoch ranges of its hops intersect (some epoch in which every
version it met was running); otherwise it is `mixed`. A probe is attributed to the newest
epoch it met (max a): mixed probes land on the change they straddled.

Lost: sent but never received. A lost probe carries no trailer, so it is placed by the
time it was sent: probe k of a stream was due at T0 + k / rate (T0: the sender's start,
which it prints; it sends late only when it is not scheduled in time) and goes to the
first epoch noted at or after that time, i.e. the change under way (after the last note:
the last epoch). Reordered: received after a probe of a higher id of the same stream.
A received probe no device recorded, or with more recording hops than its trailer holds
(overflow), is `unplaced`. Sent = placed + unknown + unplaced + lost.
"""
from __future__ import annotations

import bisect
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

from ..compiler.probe import RECORD, hops as trailer_hops
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
    t0: float = 0.0                    # the sender's start (time.monotonic())
    received: list[int] = field(default_factory=list)   # ids in arrival order
    trailers: dict[int, tuple[int, ...] | None] = field(default_factory=dict)  # id -> hops


class Oracle:
    """Probe streams between host pairs, the versions they met, and the verdict.
    ctl: the controller (its devices' running versions are read); pairs: [(src, dst)]."""

    def __init__(self, lab, ctl, pairs: list[tuple[str, str]], rate_pps: float = 2000):
        self.lab, self.ctl, self.rate = lab, ctl, rate_pps
        self.streams = [_Stream(s, d, i + 1) for i, (s, d) in enumerate(pairs)]
        self.step = len(self.streams)
        self.epochs: list[dict] = []   # {label, level, at (monotonic), versions: {device: v}}
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
            s.t0 = float(_ready(s.sender, f"probe sender on {s.src}").split()[1])

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
                with open(s.out, "rb") as fh:
                    data = fh.read()
                os.unlink(s.out)
                self.receive(s, data)
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

    def receive(self, stream: _Stream, data: bytes) -> None:
        """What the stream's receiver kept (RECORDs in arrival order)."""
        whole = len(data) - len(data) % RECORD.size
        for pid, count, *slots in RECORD.iter_unpack(data[:whole]):
            stream.received.append(pid)
            stream.trailers.setdefault(pid, trailer_hops(count, tuple(slots)))

    # --- versions -------------------------------------------------------------------------
    def _versions(self) -> dict[str, int]:
        """Every recording pipeline's running version: a switch or host slot by its name,
        each model function of a host hook's chain by DEVICE/pid; 0 records nothing."""
        out: dict[str, int] = {}
        for name, h in self.ctl.devices.handles.items():
            if hasattr(h, "versions"):
                out.update(h.versions())
            elif getattr(h, "version", 0):
                out[name] = h.version
        return {n: v for n, v in out.items() if v}

    def note(self, label: str, level: str) -> int:
        """Snapshot every device's running version after a change; returns the epoch."""
        self.epochs.append({"label": label, "level": level, "at": time.monotonic(),
                            "versions": self._versions()})
        return len(self.epochs) - 1

    # --- verdict --------------------------------------------------------------------------
    def report(self) -> dict:
        ranges: dict[tuple[str, int], list[int]] = {}
        owners: dict[int, set[str]] = {}
        for k, ep in enumerate(self.epochs):
            for dev, ver in ep["versions"].items():
                r = ranges.setdefault((dev, ver), [k, k])
                r[1] = k
                owners.setdefault(ver, set()).add(dev)
        collisions = {v: sorted(d) for v, d in owners.items() if len(d) > 1}
        times = [ep["at"] for ep in self.epochs]
        per = [{"change": ep["label"], "consistency": ep["level"], "probes": 0, "single": 0,
                "mixed": 0, "lost": 0, "reordered": 0} for ep in self.epochs]
        sent = received = unknown = unplaced = reordered_n = 0
        streams = []
        for s in self.streams:
            sent += s.sent
            figures = {"src": s.src, "dst": s.dst, "sent": s.sent, "received": 0,
                       "placed": 0, "mixed": 0}
            streams.append(figures)
            top, reordered = 0, set()
            for pid in s.received:
                if pid < top:
                    reordered.add(pid)
                top = max(top, pid)
            reordered_n += len(reordered)
            for k in range(s.sent):
                pid = s.first + k * self.step
                if pid not in s.trailers:   # lost: the change under way when it was sent
                    at = bisect.bisect_left(times, s.t0 + k / self.rate)
                    if per:
                        per[min(at, len(per) - 1)]["lost"] += 1
                    continue
                received += 1
                figures["received"] += 1
                met = s.trailers[pid]
                if not met:
                    unplaced += 1    # no device recorded it, or its trailer overflowed
                    continue
                devs = [owners.get(v, ()) for v in met]
                if any(len(d) != 1 for d in devs):
                    unknown += 1     # a version no snapshot saw (a change undone), or two
                    continue
                spans = [ranges[(next(iter(d)), v)] for d, v in zip(devs, met)]
                lo, hi = max(sp[0] for sp in spans), min(sp[1] for sp in spans)
                row = per[lo]
                row["probes"] += 1
                row["single" if lo <= hi else "mixed"] += 1
                row["reordered"] += pid in reordered
                figures["placed"] += 1
                figures["mixed"] += lo > hi
        by_level: dict[str, int] = {}
        for r in per:
            by_level[r["consistency"]] = by_level.get(r["consistency"], 0) + r["mixed"]
        placed = sum(r["probes"] for r in per)
        return {"probes_sent": sent, "probes_received": received,
                "probes_lost": sent - received,
                "probes_reordered": reordered_n,
                "probes_placed": placed,
                "probes_unplaced": unplaced, "probes_unknown_version": unknown,
                "version_collisions": [{"version": v, "devices": d}
                                       for v, d in sorted(collisions.items())],
                "mixed": sum(r["mixed"] for r in per), "mixed_by_level": by_level,
                "streams": streams, "changes": per[1:]}


def _ready(proc, what: str, timeout_s: float = 10.0) -> str:
    """The agent's first line, once it says it is ready."""
    line = proc.stdout.readline() if proc.stdout else b""
    text = line.decode(errors="replace") if isinstance(line, bytes) else line
    if not text.startswith("ready"):
        proc.kill()
        raise LabError(f"{what} did not start: {text[:200]!r}")
    return text
