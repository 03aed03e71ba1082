"""The per-flow consistency level (issue 10, plan/two_phase.py) on real namespaces and BPF:
a flow started before a per-flow change keeps the old version on every hop while a flow
started after the flip runs the new one; the change completes once the old flow is idle;
a flow that never goes idle is moved at the bound, and the record says so.

Evidence: the oracle's probe trailers (every tc pipeline writes the version that ran a probe
into the probe, compiler/probe.py) and the change records. Flows are probe streams
(verify/probe_agent.py): one UDP socket each, so one 5-tuple, h1 -> h8 across l1, a spine
and l4."""
from __future__ import annotations

import os
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
    # the census: the two flows (and their reverse ICMP, if any) fit; nothing evicted
    assert ph["flows_evicted"] == 0 and 2 <= ph["flow_entries"] < 100
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


# --- more flows than a flow table holds ----------------------------------------------------

_BURST = """\
import socket, sys
dst = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("ready", flush=True)
for line in sys.stdin:
    n, first = map(int, line.split())
    for port in range(first, first + n):   # one datagram each: n distinct 5-tuples
        s.sendto(b"x" * 16, (dst, port))
    print("sent", n, flush=True)
"""


def test_more_flows_than_the_flow_table_are_counted_and_the_record_says_so(lab, ctl, agents):
    """7000 distinct UDP flows from h1 while l1 tracks flows, before the flip: l1's table
    holds FLOW_SLOTS (4096), so at least 7000 - 4096 old-version entries are evicted; the
    change's record says per-packet achieved, how many and where (never per-flow)."""
    from flexnet_lab.compiler.ebpf import FLOW_SLOTS
    _reset(ctl)
    import subprocess
    burst = lab.host("h1").popen([sys.executable, "-c", _BURST, lab.host("h8").IP()],
                                 cwd=str(REPO), stdin=subprocess.PIPE)

    class _Burst:
        proc = burst
    agents.append(_Burst)
    assert b"ready" in burst.stdout.readline()
    stamp0 = ctl.handle("l1").stamp
    # a program of a name not compiled before: its compile (a quarter second at least)
    # falls between tracking on and the flip, time for the whole burst
    from dataclasses import replace
    after = _after(ctl, True)
    prog = replace(after["l1"].program, name=f"acl_{os.urandom(4).hex()}")
    after = {sw: a.with_program(prog) for sw, a in after.items()}
    change, box = _in_thread(lambda: ctl.change("acl per-flow, many flows", after,
                                                consistency="per-flow"))
    t0 = time.monotonic()
    while not ctl.handle("l1").flow_tracking():
        assert "error" not in box, box.get("error")
        assert time.monotonic() - t0 < 60, "flow tracking never came on"
        time.sleep(0.001)
    burst.stdin.write(b"7000 20000\n")
    burst.stdin.flush()
    assert burst.stdout.readline().split() == [b"sent", b"7000"]
    before_flip = ctl.handle("l1").stamp == stamp0
    change.join(timeout=60)
    assert "error" not in box, box.get("error")
    burst.stdin.close()
    burst.wait(10)

    recs = box["value"]
    ph = recs[0].phases
    print(f"per-flow change with 7000 flows: {ph}; notes {recs[0].notes}")
    assert before_flip, "the burst ended after the flip: its entries were not all old-version"
    assert {r.consistency for r in recs} == {"per-packet"}, [r.notes for r in recs]
    assert ph["flow_table_slots"] == FLOW_SLOTS and ph["flow_entries"] >= 7000
    assert ph["flows_evicted"] >= 7000 - FLOW_SLOTS and ph["flows_evicted_at"] == "l1"
    note = next(n for n in recs[0].notes if "overflowed" in n)
    assert "per-flow requested; per-packet achieved" in note
    assert f"{ph['flows_evicted']} flows of the old version were evicted (most at l1)" in note
    for sw in SWITCHES:
        assert _slots_and_tracking(ctl.handle(sw))[2] == 0, sw


# --- TCP -----------------------------------------------------------------------------------

TCP_PORT = 5601
_TCP_SERVER = """\
import json, socket, sys, threading, time
srv = socket.socket()
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(2)
print("ready", flush=True)
out = {}

def serve(c, peer):
    n, last, gaps = 0, None, []
    while True:
        b = c.recv(1 << 16)
        now = time.monotonic()
        if not b:
            break
        if last is not None and now - last > 0.2:   # an RTO (200 ms at least) shows here
            gaps.append(round(now - last, 3))
        last, n = now, n + len(b)
    out[str(peer[1])] = {"bytes": n, "gaps": gaps}

threads = []
for _ in range(2):
    c, peer = srv.accept()
    threads.append(threading.Thread(target=serve, args=(c, peer)))
    threads[-1].start()
for t in threads:
    t.join()
print(json.dumps(out), flush=True)
"""
_TCP_CLIENT = """\
import json, socket, sys, threading, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print("ready", s.getsockname()[1], flush=True)
sent, going = [0], threading.Event()

def pump():   # 32 KiB every 2 ms while going (about 16 MB/s)
    chunk = b"x" * 32768
    while True:
        going.wait()
        s.sendall(chunk)
        sent[0] += len(chunk)
        time.sleep(0.002)
t = threading.Thread(target=pump, daemon=True)
t.start()
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "send":
        going.set()
    elif cmd == "pause":
        going.clear()
        time.sleep(0.01)   # the chunk in hand goes out
    print("ok", cmd, flush=True)
    if cmd == "close":
        break
going.clear()
time.sleep(0.01)
s.shutdown(socket.SHUT_WR)
s.close()
print(json.dumps({"bytes": sent[0]}), flush=True)
"""


class _Proc:
    def __init__(self, lab, host: str, code: str, *args: str):
        import subprocess
        self.proc = lab.host(host).popen([sys.executable, "-c", code, *args], cwd=str(REPO),
                                         stdin=subprocess.PIPE)
        self.first = self.proc.stdout.readline().decode().split()
        assert self.first and self.first[0] == "ready", self.first

    def say(self, cmd: str) -> None:
        self.proc.stdin.write(f"{cmd}\n".encode())
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().decode().split() == ["ok", cmd]

    def result(self) -> dict:
        import json
        out, _ = self.proc.communicate(timeout=20)
        return json.loads(out.decode().strip().splitlines()[-1])


def _version_programs():
    """The base program plus a per-5-tuple packet counter: `tcp_va` in the old version,
    `tcp_vb` in the new one. A flow's count in a version's map on a switch is how many of
    its packets that version processed there."""
    from dataclasses import replace
    from flexnet_lab.program.library import FIVE_TUPLE, infrastructure
    from flexnet_lab.program.model import Map, Op, Stmt
    base = infrastructure()
    out = []
    for name in ("tcp_va", "tcp_vb"):
        count = Stmt(ops=(Op("map_add", (name, FIVE_TUPLE)),))
        out.append(replace(base, name=name,
                           maps=base.maps + (Map(name, "hash", 256, key_bits=5 * 64),),
                           control=base.control + (count,)))
    return out


def _counts(bpf, fd: int) -> dict[tuple, int]:
    """A flow counter map read by fd: 5-tuple -> packets."""
    return {tuple(int.from_bytes(k[i * 8:i * 8 + 8], "little") for i in range(5)):
            int.from_bytes(v[:8], "little") for k, v in bpf.items(fd, 40, 16, 256)}


def _ip(host) -> int:
    import ipaddress
    return int(ipaddress.IPv4Address(host.IP()))


def test_tcp_connection_keeps_the_old_version_until_idle_new_connection_runs_the_new(
        lab, ctl, agents):
    """Connection A (h1 -> h8) runs before the change and through the flip, then pauses;
    connection B starts after the flip. Every packet of A (both directions) until its pause
    ran the old version on every hop it crossed, every packet of B the new one; A's
    packets after the pause (it had been idle) run the new one; all bytes arrive, no
    retransmission timeout."""
    from flexnet_lab.compiler.layout import map_c_name
    _reset(ctl)
    old_p, new_p = _version_programs()
    ctl.change("tcp: old version", {sw: ctl.intent.devices[sw].with_program(old_p)
                                     for sw in SWITCHES})
    bpf = ctl.handle("l1")._bpf
    # the old version's maps outlive its retire while this test holds them
    va = {sw: os.dup(ctl.handle(sw).map_fd(map_c_name("m", "tcp_va"))) for sw in SWITCHES}
    try:
        _tcp_change(lab, ctl, agents, bpf, va, new_p)
    finally:
        for fd in va.values():
            os.close(fd)
        _reset(ctl)


def _tcp_change(lab, ctl, agents, bpf, va, new_p):
    h1, h8 = lab.host("h1"), lab.host("h8")
    server = _Proc(lab, "h8", _TCP_SERVER, h8.IP(), str(TCP_PORT))
    agents.append(server)
    a = _Proc(lab, "h1", _TCP_CLIENT, h8.IP(), str(TCP_PORT))
    agents.append(a)
    a_port = int(a.first[1])
    keys = {"A": (_ip(h1), _ip(h8), 6, a_port, TCP_PORT),
            "A-back": (_ip(h8), _ip(h1), 6, TCP_PORT, a_port)}
    a.say("send")
    time.sleep(0.5)
    stamp0 = ctl.handle("l1").stamp
    after = {sw: ctl.intent.devices[sw].with_program(new_p) for sw in SWITCHES}
    change, box = _in_thread(lambda: ctl.change("tcp per-flow", after, consistency="per-flow"))
    _wait_flip(ctl, stamp0, box)
    a_at_flip = _counts(bpf, va["l1"]).get(keys["A"], 0)
    b = _Proc(lab, "h1", _TCP_CLIENT, h8.IP(), str(TCP_PORT))
    agents.append(b)
    b_port = int(b.first[1])
    keys.update({"B": (_ip(h1), _ip(h8), 6, b_port, TCP_PORT),
                 "B-back": (_ip(h8), _ip(h1), 6, TCP_PORT, b_port)})
    b.say("send")
    time.sleep(0.4)
    assert "done" not in box, "the change completed while connection A was active"
    a.say("pause")
    change.join(timeout=30)
    assert "error" not in box, box.get("error")
    recs = box["value"]
    assert {r.consistency for r in recs} == {"per-flow"}, [r.notes for r in recs]
    print(f"TCP per-flow change: {recs[0].phases}")
    a_old_done = {sw: _counts(bpf, va[sw]) for sw in SWITCHES}
    new_before_resume = {sw: ctl.read_map(sw, "tcp_vb") for sw in SWITCHES}
    a.say("send")                       # A was idle: from now on it runs the new version
    time.sleep(0.3)
    for c in (a, b):
        c.say("close")
    a_sent, b_sent = a.result()["bytes"], b.result()["bytes"]
    got = server.result()
    old = {sw: _counts(bpf, va[sw]) for sw in SWITCHES}
    new = {sw: {k: v[0] for k, v in ctl.read_map(sw, "tcp_vb").items()} for sw in SWITCHES}

    # every byte of both connections arrived, without a retransmission timeout (the one
    # gap of A is its pause)
    assert got[str(a_port)]["bytes"] == a_sent > 0 and got[str(b_port)]["bytes"] == b_sent > 0
    assert got[str(b_port)]["gaps"] == [], got
    assert len(got[str(a_port)]["gaps"]) <= 1, got

    def hops(counts: dict, key) -> dict[str, int]:
        return {sw: c[key] for sw, c in counts.items() if c.get(key)}

    for k in ("A", "A-back"):
        # until its pause A ran the old version, on every hop the same packets (its path:
        # two leaves and one spine), also after the flip; none of them the new one
        path = hops(old, keys[k])
        assert len(path) == 3 and {"l1", "l4"} <= set(path), (k, path)
        assert len(set(path.values())) == 1, (k, path)
        assert hops(a_old_done, keys[k]) == path, (k, "old-version packets after the pause")
        assert not any(keys[k] in m for m in new_before_resume.values()), k
        # after the pause (idle: a new start) the new version, on every hop
        resumed = hops(new, keys[k])
        assert set(resumed) == set(path) and len(set(resumed.values())) == 1, (k, resumed)
    assert old["l1"][keys["A"]] > a_at_flip, "A sent nothing on the old version after the flip"
    for k in ("B", "B-back"):
        # B started after the flip: the new version on every hop, never the old one
        assert not hops(old, keys[k]), (k, hops(old, keys[k]))
        path = hops(new, keys[k])
        assert len(path) == 3 and {"l1", "l4"} <= set(path), (k, path)
        assert len(set(path.values())) == 1, (k, path)
