"""The zero-loss verdict: loss around each change against the loss of a window without
changes, so the machine's own loss is not blamed on a change; loss located by counters.

For a flow and a change at time t, the change window is [t - before, t + after]. Packets
and losses of the flow's intervals overlapping it are summed; the baseline predicts
`baseline_rate * packets` losses there. The change is blamed for the excess, if any.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .traffic import FlowResult


RETRANSMIT_TOLERANCE = 10   # TCP segments beyond the baseline's rate in one change window
STOP_MARGIN_S = 1.0         # a flow silent for longer than this before its end was cut off


@dataclass(frozen=True)
class Window:
    before_s: float = 0.3
    after_s: float = 1.0


@dataclass
class ChangeImpact:
    change: str
    at_s: float
    flow: str
    packets: int
    lost: int
    expected_lost: float
    retransmits: int
    expected_retransmits: float
    located: list[str] = field(default_factory=list)
    on_path: bool = True          # the changed device carries this flow (either direction)
    cut: int = 0                  # the flow stopped getting through after this change:
                                  # packets (UDP) or 1 (TCP) that never arrived after it

    @property
    def excess(self) -> float:
        return max(0.0, self.lost - self.expected_lost) + self.cut

    @property
    def excess_retransmits(self) -> float:
        return max(0.0, self.retransmits - self.expected_retransmits)

    @property
    def blamed(self) -> bool:
        # one datagram beyond what the baseline predicts is a loss caused by the change;
        # TCP over veth retransmits spuriously when segments are reordered across CPUs, so
        # retransmits count only on the flow's path and beyond a tolerance
        if self.cut:
            return True
        if self.lost or self.expected_lost:
            return self.excess >= 1.0
        return self.on_path and self.excess_retransmits > RETRANSMIT_TOLERANCE

    def to_json(self) -> dict:
        return {"change": self.change, "at_s": round(self.at_s, 3), "flow": self.flow,
                "packets": self.packets, "lost": self.lost,
                "expected_lost": round(self.expected_lost, 3),
                "retransmits": self.retransmits,
                "expected_retransmits": round(self.expected_retransmits, 3),
                "on_path": self.on_path, "cut": self.cut, "blamed": self.blamed,
                "located": self.located}


@dataclass
class Baseline:
    flow: str
    packets: int
    lost: int
    retransmits: int
    seconds: float

    @property
    def loss_rate(self) -> float:
        return self.lost / self.packets if self.packets else 0.0

    @property
    def retransmit_rate(self) -> float:
        return self.retransmits / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict:
        return {"flow": self.flow, "packets": self.packets, "lost": self.lost,
                "retransmits": self.retransmits, "seconds": round(self.seconds, 2),
                "loss_rate": self.loss_rate}


def _overlapping(flow: FlowResult, lo: float, hi: float):
    return [i for i in flow.intervals if i.end > lo and i.start < hi]


def baseline(flow: FlowResult, lo: float, hi: float) -> Baseline:
    """The flow's loss in [lo, hi], a window with no change in it."""
    ivs = _overlapping(flow, lo, hi)
    return Baseline(flow.spec.name, sum(i.packets for i in ivs), sum(i.lost for i in ivs),
                    sum(i.retransmits for i in ivs), sum(i.end - i.start for i in ivs))


def impacts(flow: FlowResult, base: Baseline, changes: list[tuple[str, float]],
            window: Window = Window()) -> list[ChangeImpact]:
    """Loss of `flow` around each (description, at_s) change, against its baseline."""
    out = []
    for desc, at in changes:
        ivs = _overlapping(flow, at - window.before_s, at + window.after_s)
        packets = sum(i.packets for i in ivs)
        secs = sum(i.end - i.start for i in ivs)
        out.append(ChangeImpact(desc, at, flow.spec.name, packets, sum(i.lost for i in ivs),
                                base.loss_rate * packets,
                                sum(i.retransmits for i in ivs),
                                base.retransmit_rate * secs))
    return out


def stopped_at(flow: FlowResult, duration_s: float) -> float | None:
    """When a flow stopped getting through for good, if that was more than STOP_MARGIN_S
    before its end (a black hole, not the end of the test): the end of the last interval
    that delivered anything, 0 when nothing ever arrived. None: it ran to the end."""
    if flow.received <= 0:
        return 0.0
    if flow.spec.proto == "udp":
        last = max((i.end for i in flow.intervals if i.packets > 0), default=0.0)
    else:
        last = max((i.end for i in flow.intervals if i.bps > 0), default=0.0)
    return last if last < duration_s - STOP_MARGIN_S else None


def blame_stop(flow: FlowResult, stop_s: float, changes: list[tuple[str, float, bool]],
               window: Window = Window()) -> int | None:
    """Which change cut a flow off at stop_s: the last one applied before it stopped,
    preferring a change on the flow's path. changes: (description, at_s, on_path).
    Returns its index, or None when the flow stopped before any change."""
    before = [i for i, (_, at, _) in enumerate(changes) if at - window.before_s <= stop_s]
    on_path = [i for i in before if changes[i][2]]
    pick = on_path or before
    return pick[-1] if pick else None


def locate(before: dict[str, dict], after: dict[str, dict], links: list[tuple]) -> list[str]:
    """Where packets went missing between two counter snapshots.

    before/after: switch -> port counters (EbpfSwitch.port_counters); links: (switch a,
    port a, switch b, port b) for switch-to-switch links."""
    found = []
    for sw, counters in after.items():
        d = counters.get(0, {}).get("dropped_packets", 0) - \
            before.get(sw, {}).get(0, {}).get("dropped_packets", 0)
        if d > 0:
            found.append(f"{sw}: dropped {d} packets")
    for a, pa, b, pb in links:
        if a not in after or b not in after:
            continue
        sent = after[a][pa]["tx_packets"] - before[a][pa]["tx_packets"]
        got = after[b][pb]["rx_packets"] - before[b][pb]["rx_packets"]
        if sent - got > 0:
            found.append(f"link {a}:{pa} -> {b}:{pb}: {sent - got} packets missing")
    return found


def judge_consistency(expect: dict, changes: list[dict], level: str | None = None
                      ) -> tuple[bool, str]:
    """An expectation on the consistency of changes and the oracle's figures for them.

    expect: {consistency?, mixed? (at most), mixed_at_least?, lost? (at most)}; changes:
    the changes it is about, each {index, change, requested, achieved, notes, oracle}
    where oracle is the oracle's row for the change ({probes, single, mixed, lost,
    reordered}) or None (no probes ran). `level`: the level each change must have achieved
    (default: expect's consistency, else the level the change asked for), so a per-packet
    request that fell back to per-device never passes as per-packet.
    Returns (ok, detail)."""
    if not changes:
        return False, "not run (refused, or after a refused change)"
    problems = []
    for c in changes:
        want = level or expect.get("consistency") or c["requested"]
        if c["achieved"] != want:
            why = next((n for n in c.get("notes", []) if "achieved" in n), "")
            problems.append(f"changes[{c['index']}] achieved {c['achieved']}, not {want}"
                            + (f" ({why[:160]})" if why else ""))
    figures = [c["oracle"] for c in changes if c.get("oracle") is not None]
    total = {k: sum(f[k] for f in figures) for k in ("probes", "single", "mixed", "lost",
                                                      "reordered")}
    checks = [k for k in ("mixed", "mixed_at_least", "lost") if k in expect]
    if checks and len(figures) < len(changes):
        problems.append("the oracle has no figures for "
                        + ", ".join(f"changes[{c['index']}]" for c in changes
                                    if c.get("oracle") is None))
    elif checks and total["probes"] == 0:
        # the oracle places a probe on the newest change whose versions it met: a change
        # that loads no new version (entries only) gets none
        problems.append("no probe met a version this change loaded: its mixed count "
                        "proves nothing")
    else:
        if "mixed" in expect and total["mixed"] > expect["mixed"]:
            problems.append(f"{total['mixed']} mixed probes, at most {expect['mixed']} expected")
        if "mixed_at_least" in expect and total["mixed"] < expect["mixed_at_least"]:
            problems.append(f"{total['mixed']} mixed probes, at least "
                            f"{expect['mixed_at_least']} expected")
        if "lost" in expect and total["lost"] > expect["lost"]:
            problems.append(f"{total['lost']} probes lost, at most {expect['lost']} expected")
    levels = sorted({c["achieved"] for c in changes})
    detail = (f"{len(changes)} change{'s' if len(changes) > 1 else ''} achieved "
              f"{'/'.join(levels)}")
    if figures:
        detail += (f"; {total['probes']} probes: {total['single']} one version, "
                   f"{total['mixed']} mixed, {total['lost']} lost, "
                   f"{total['reordered']} reordered")
    if problems:
        detail += "; " + "; ".join(problems)
    return not problems, detail
