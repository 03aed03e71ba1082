"""The per-flow consistency level (issue 10, plan/two_phase.py) on real namespaces and BPF:
a flow started before a per-flow change keeps the old version on every hop while a flow
started after the flip runs the new one; the change completes once the old flow is idle;
a flow that never goes idle is moved at the bound, and the record says so.

Evidence: the oracle's probe trailers (every tc pipeline writes the version that ran a probe
into the probe, compiler/probe.py) and the change records. Flows are probe streams
(verify/probe_agent.py): one UDP socket each, so one 5-tuple, h1 -> h8 across l1, a spine
and l4."""
from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
ACL_DELTA = REPO / "scenarios" / "deltas" / "acl-udp-9999.yaml"
SWITCHES = ["l1", "l2", "l3", "l4", "sp1", "sp2"]
RATE = 1000   # probes per second per flow
HOOK = "h1:tc:egress"
PATH = ["l1", "sp2", "l4"]   # h1 -> h8 (topology/routes.py: h8 is host 7, uplink 7 % 2)


@pytest.fixture(scope="module")
def lab():
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology

    with Lab(load_topology(REPO / "topologies" / "leaf-spine.yaml"), switch_kind="ebpf") as lab:
        assert lab.ping_all()["loss_pct"] == 0.0
        yield lab


class _Flow:
    """A probe stream h1 -> h8 with ids first, first + 2, ... (one socket: one flow)."""

    def __init__(self, lab, first: int):
        self.proc = lab.host("h1").popen(
            [sys.executable, "-m", "flexnet_lab.verify.probe_agent", "send",
             lab.host("h8").IP(), str(first), "2", str(RATE)], cwd=str(REPO))
        assert b"ready" in self.proc.stdout.readline()
        self.first, self.sent = first, 0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        self.sent = int(out.decode().split("sent ")[1].split()[0])

    def ids(self) -> set[int]:
        return {self.first + 2 * i for i in range(self.sent)}


class _Receiver:
    def __init__(self, lab, tmp_path):
        self.out = tmp_path / "recv"
        self.proc = lab.host("h8").popen(
            [sys.executable, "-m", "flexnet_lab.verify.probe_agent", "recv", str(self.out)],
            cwd=str(REPO))
        assert b"ready" in self.proc.stdout.readline()

    def stop(self) -> tuple[list[int], dict[int, tuple[int, ...] | None]]:
        """The ids in arrival order, and per id the versions it met in path order."""
        from flexnet_lab.compiler.probe import RECORD, hops
        time.sleep(0.3)   # the last probes arrive
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=10)
        ids, met = [], {}
        for pid, count, *slots in RECORD.iter_unpack(self.out.read_bytes()):
            ids.append(pid)
            met[pid] = hops(count, tuple(slots))
        return ids, met


@pytest.fixture
def agents():
    """Every agent started is ended on every exit path."""
    procs: list = []
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def _after(ctl, with_acl: bool) -> dict:
    from flexnet_lab.program.delta import load_delta
    from flexnet_lab.program.library import infrastructure
    prog = load_delta(str(ACL_DELTA)).apply(infrastructure())[0] if with_acl else infrastructure()
    return {sw: ctl.intent.devices[sw].with_program(prog) for sw in SWITCHES}


def _in_thread(fn):
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:   # kept: raised in the test's thread
            box["error"] = exc
        box["done"] = time.perf_counter()
    t = threading.Thread(target=run)
    t.start()
    return t, box


def _wait_flip(ctl, stamp0: int, box: dict, timeout_s: float = 60.0) -> None:
    t0 = time.monotonic()
    while ctl.handle("l1").stamp == stamp0:
        assert "error" not in box, box.get("error")
        assert time.monotonic() - t0 < timeout_s, "the per-flow change never flipped"
        time.sleep(0.001)


def _slots_and_tracking(handle) -> tuple[int, int, int]:
    """Both tail-call slots' program ids and the root's per-flow generation, read from the
    kernel."""
    from flexnet_lab.compiler.ebpf import FCFG_MAP
    bpf = handle._bpf
    slot = [int.from_bytes(bpf.lookup(handle._pipe_fd, i.to_bytes(4, "little"), 4), "little")
            for i in (0, 1)]
    gen = int.from_bytes(bpf.lookup(handle._root_maps[FCFG_MAP], bytes(4), 4), "little")
    return slot[0], slot[1], gen


def _reset(ctl) -> None:
    ctl.change("back to the base program", _after(ctl, False))


def test_old_flow_keeps_old_version_new_flow_runs_new_change_completes_when_idle(
        lab, ctl, agents, tmp_path):
    """The ACL on all six switches and h1's tc egress function swapped, per-flow: h1's
    egress is then the flows' ingress point (the same root, the same flow table)."""
    from flexnet_lab.program import library
    _reset(ctl)
    ctl.attach("h1", library.flow_counter(), "tc", "egress")
    try:
        _old_and_new_flow(lab, ctl, agents, tmp_path)
    finally:
        ctl.detach("h1", "tc", "egress")


def _old_and_new_flow(lab, ctl, agents, tmp_path):
    from flexnet_lab.program import library
    devices = SWITCHES + [HOOK]
    old = {sw: ctl.handle(sw).version for sw in devices}
    stamp0 = ctl.handle("l1").stamp
    recv = _Receiver(lab, tmp_path)
    agents.append(recv)
    flow_a = _Flow(lab, 1)               # started before the change: odd ids
    agents.append(flow_a)
    time.sleep(0.5)
    after = {**_after(ctl, True),
             HOOK: ctl.intent.devices[HOOK].with_program(library.count_min())}
    change, box = _in_thread(lambda: ctl.change("acl per-flow", after, consistency="per-flow"))
    _wait_flip(ctl, stamp0, box)
    flow_b = _Flow(lab, 2)               # started after the flip: even ids
    agents.append(flow_b)
    time.sleep(0.4)
    assert "done" not in box, "the change completed while the old flow was still active"
    flow_a.stop()
    a_stopped = time.perf_counter()
    change.join(timeout=30)
    assert "error" not in box, box.get("error")
    new = {sw: ctl.handle(sw).version for sw in devices}
    time.sleep(0.3)
    flow_b.stop()
    received, hops = recv.stop()

    recs = box["value"]
    assert {r.consistency for r in recs} == {"per-flow"}, [r.notes for r in recs]
    ph = recs[0].phases
    print(f"per-flow change: {ph}; done {box['done'] - a_stopped:.3f} s after the old flow")
    assert not ph["drain_bounded"] and ph["idle_ms"] == 100
    assert ph["ingress_points"] == 7                   # six switches and h1's egress
    assert ph["drain_ms"] >= 400 and ph["old_packets_after_flip"] > 0
    assert ph["learn_ms"] >= 0 and ph["retire_ms"] >= 0
    # done within an idle time (plus polling) of the old flow's last packet
    assert box["done"] - a_stopped < 0.5
    # evidence per hop: every probe of the old flow ran the old version on every switch it
    # crossed, every probe of the new flow the new one
    a_ids, b_ids = flow_a.ids(), flow_b.ids()
    assert set(received) >= a_ids | b_ids, "probes lost"          # 0 loss on both flows
    first_b = received.index(min(b_ids))
    a_after_flip = [p for p in received[first_b:] if p in a_ids]
    assert len(a_after_flip) >= 0.2 * RATE          # the old flow ran on after the flip
    for pid in a_ids:
        assert hops[pid] == tuple(old[d] for d in [HOOK] + PATH), pid
    for pid in b_ids:
        assert hops[pid] == tuple(new[d] for d in [HOOK] + PATH), pid
    # retired: both slots run the new version; flow tracking is off again (one flag read)
    for sw in devices:
        s0, s1, gen = _slots_and_tracking(ctl.handle(sw))
        assert s0 == s1 and gen == 0, sw


def test_a_flow_that_never_goes_idle_is_moved_at_the_bound_and_the_record_says_so(
        lab, ctl, agents, tmp_path):
    _reset(ctl)
    old = {sw: ctl.handle(sw).version for sw in SWITCHES}
    recv = _Receiver(lab, tmp_path)
    agents.append(recv)
    flow = _Flow(lab, 1)
    agents.append(flow)
    time.sleep(0.5)
    t0 = time.perf_counter()
    recs = ctl.change("acl per-flow, busy flow", _after(ctl, True), consistency="per-flow")
    took = time.perf_counter() - t0
    new = {sw: ctl.handle(sw).version for sw in SWITCHES}
    time.sleep(0.3)
    flow.stop()
    received, hops = recv.stop()

    assert {r.consistency for r in recs} == {"per-packet"}
    ph = recs[0].phases
    print(f"bounded per-flow change: {ph}; notes {recs[0].notes}")
    assert ph["drain_bounded"] and 1000 <= ph["drain_ms"] < 1500 and took < 30
    assert ph["old_packets_last_idle"] > 0
    note = next(n for n in recs[0].notes if "per-flow requested" in n)
    assert "per-packet achieved" in note and "moved to the new version" in note
    ids = flow.ids()
    assert set(received) >= ids                     # moved, not lost
    met = [("old" if hops[p] == tuple(old[d] for d in PATH) else
            "new" if hops[p] == tuple(new[d] for d in PATH) else "mixed")
           for p in sorted(ids)]
    assert "mixed" not in met                       # per-packet still holds
    # one move: old until the bound, new after it
    assert met == sorted(met, key=lambda m: m == "new") and met[0] == "old" and met[-1] == "new"


def test_prompt_applies_a_delta_per_flow_and_undoes_it_at_that_level(tmp_path):
    """`delta --consistency per-flow` at the lab prompt (through the run's controller), on
    eBPF switches (with bmv2 installed, `auto` would pick it: per-flow is eBPF's)."""
    import subprocess
    topo = tmp_path / "linear-ebpf.yaml"
    topo.write_text((REPO / "topologies" / "linear.yaml").read_text()
                    .replace("target: auto", "target: ebpf"))
    script = "\n".join(["delta --consistency per-flow s* scenarios/deltas/acl-udp-9999.yaml",
                        "undo", "delta --consistency per-hop s1 scenarios/deltas/acl-udp-9999.yaml",
                        "exit"]) + "\n"
    res = subprocess.run([sys.executable, "-m", "flexnet_lab.cli", "up", str(topo)], cwd=REPO,
                         input=script, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert out.count("s1: pipeline, per-flow,") == 2, out   # the delta and its undo
    assert "per-flow: learn " in out and "idle 100 ms" in out
    assert "'per-hop' is not a level" in out, out
