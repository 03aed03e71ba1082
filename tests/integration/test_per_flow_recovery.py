"""A controller killed in the middle of a per-flow change (issue 10): the restarted
controller rolls the change back (its rule for a change cut short), turns off the flow
tracking and version tagging the dead change left on in every root, and reports each
repair; read back from the devices, every switch runs one version (the old one) in both
slots, and traffic is delivered throughout.

Root: real namespaces and BPF, the controller daemon as its own process (Supervisor, as
`flexnet up` runs it), SIGKILL during the drain; the devices are read from the kernel
through the run's pins, not through any controller."""
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
RATE = 1000   # probes per second


@pytest.fixture
def daemon_lab():
    """leaf-spine with eBPF switches; the devices handed to a controller daemon."""
    from flexnet_lab.control.daemon import Supervisor
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology

    lab = Lab(load_topology(REPO / "topologies" / "leaf-spine.yaml"), switch_kind="ebpf")
    sup = None
    try:
        lab.start()
        assert lab.ping_all()["loss_pct"] == 0.0
        lab.release_devices()
        sup = Supervisor(lab.tag.dir, lab.tag.env())
        sup.start()
        yield lab, sup
    finally:
        if sup is not None:
            sup.stop()
        lab.stop()


def _u32(bpf, fd: int, index: int) -> int:
    raw = bpf.lookup(fd, index.to_bytes(4, "little"), 4)
    return int.from_bytes(raw, "little") if raw else 0


def _device(pin_dir: str, sw: str) -> dict:
    """One switch as the kernel has it: both tail-call slots, the stamp, tagging, the
    per-flow generation, and the tables of the pipeline in the stamp's slot."""
    from flexnet_lab.compiler.ebpf import FCFG_MAP, PIPE_MAP, SLOT_MAP
    from flexnet_lab.targets.bpf_syscall import Bpf
    bpf = Bpf()
    fds = []
    try:
        root = bpf.obj_get(os.path.join(pin_dir, sw, "root"))
        pipe = bpf.obj_get(os.path.join(pin_dir, sw, PIPE_MAP))
        fds += [root, pipe]
        maps = {}
        for mid in bpf.prog_map_ids(root):
            fd = bpf.map_fd_by_id(mid)
            fds.append(fd)
            maps[bpf.map_info(fd).name] = fd
        slots = [_u32(bpf, pipe, i) for i in (0, 1)]
        stamp = _u32(bpf, maps[SLOT_MAP], 0)
        prog = bpf.prog_fd_by_id(slots[stamp])
        fds.append(prog)
        tables = set()
        for mid in bpf.prog_map_ids(prog):
            fd = bpf.map_fd_by_id(mid)
            fds.append(fd)
            tables.add(bpf.map_info(fd).name)
        return {"slots": slots, "stamp": stamp, "tagging": _u32(bpf, maps[SLOT_MAP], 1),
                "flow_gen": _u32(bpf, maps[FCFG_MAP], 0), "acl": "t_acl" in tables}
    finally:
        for fd in fds:
            bpf.close(fd)


def _probe_flow(lab, first: int):
    proc = lab.host("h1").popen(
        [sys.executable, "-m", "flexnet_lab.verify.probe_agent", "send",
         lab.host("h8").IP(), str(first), "1", str(RATE)], cwd=str(REPO))
    assert b"ready" in proc.stdout.readline()
    return proc


def _stop(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    return int(out.decode().split("sent ")[1].split()[0])


def test_controller_killed_during_a_per_flow_drain_is_repaired_on_restart(daemon_lab, tmp_path):
    from flexnet_lab.control.channel import ControlClient, socket_path
    from flexnet_lab.errors import ControlError
    lab, sup = daemon_lab
    pin_dir = lab.fabric().pin_dir
    client = ControlClient(socket_path(lab.tag.dir), timeout_s=60)
    before = {sw: _device(pin_dir, sw) for sw in SWITCHES}
    assert all(not d["acl"] and not d["flow_gen"] and not d["tagging"] for d in before.values())
    last = client.call("events")[-1]["id"]
    procs = []
    try:
        recv = lab.host("h8").popen(
            [sys.executable, "-m", "flexnet_lab.verify.probe_agent", "recv",
             str(tmp_path / "recv")], cwd=str(REPO))
        procs.append(recv)
        assert b"ready" in recv.stdout.readline()
        flow = _probe_flow(lab, 1)      # one flow, active all along: the drain runs to its bound
        procs.append(flow)
        time.sleep(0.3)
        box: dict = {}

        def change():
            try:
                box["value"] = client.call("delta", target="*", path=str(ACL_DELTA),
                                           consistency="per-flow")
            except ControlError as exc:    # the controller died under the call
                box["error"] = exc
        t = threading.Thread(target=change)
        t.start()
        # the drain: every ingress point stamps the new version, tracking still on
        deadline = time.monotonic() + 60
        while True:
            d = _device(pin_dir, "l1")
            if d["stamp"] != before["l1"]["stamp"] and d["flow_gen"]:
                break
            assert "value" not in box, "the change completed before it could be killed"
            assert time.monotonic() < deadline, "the per-flow change never reached its drain"
            time.sleep(0.005)
        time.sleep(0.1)
        pid = sup.proc.pid
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        cut = {sw: _device(pin_dir, sw) for sw in SWITCHES}
        # what the dead change left: tracking and tagging on, the new version stamped
        assert all(c["flow_gen"] and c["tagging"] for c in cut.values()), cut
        assert all(c["acl"] for c in cut.values()), cut
        t.join(timeout=60)
        assert "error" in box, box
        # the supervisor starts another controller; it repairs before it serves
        while True:
            try:
                if client.call("ping")["pid"] != pid:
                    break
            except ControlError:
                pass
            assert time.monotonic() - t_kill < 60, "no controller came back"
            time.sleep(0.05)
        after = {sw: _device(pin_dir, sw) for sw in SWITCHES}
        events = client.call("events", since=last)
        time.sleep(0.5)
        sent = _stop(flow)
        recv.send_signal(signal.SIGTERM)
        recv.communicate(timeout=10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    from flexnet_lab.compiler.probe import RECORD
    data = (tmp_path / "recv").read_bytes()     # the receiver keeps a RECORD per probe
    got = [pid for pid, *_ in RECORD.iter_unpack(data[:len(data) - len(data) % RECORD.size])]

    # rolled back: one version (the old one, no ACL) in both slots of every switch, and
    # tracking and tagging off, read from the kernel
    for sw, d in after.items():
        assert d["slots"][0] == d["slots"][1], (sw, d)
        assert not d["acl"] and d["flow_gen"] == 0 and d["tagging"] == 0, (sw, d)
    assert "acl" not in {t["name"] for t in client.call("tables", device="l1")["tables"]}
    # the repairs were reported, per switch
    recover = [e for e in events if e["kind"] == "recover"]
    assert recover and "cut short" in recover[0]["detail"], events
    for sw in SWITCHES:
        mine = " | ".join(e["detail"] for e in events
                          if e["kind"] == "repair" and e["device"] == sw)
        assert "per-flow tracking off" in mine and "version tagging off" in mine, (sw, mine)
    # traffic delivered throughout: the flow lost nothing across the kill and the repair
    assert set(got) >= set(range(1, sent + 1)), f"{sent - len(set(got))} probes lost"
    assert lab.ping_all()["loss_pct"] == 0.0
    # a per-flow change by the new controller goes through and leaves tracking off
    recs = client.call("delta", target="*", path=str(ACL_DELTA), consistency="per-flow")
    assert {r["consistency"] for r in recs} == {"per-flow"}, recs
    done = {sw: _device(pin_dir, sw) for sw in SWITCHES}
    assert all(d["acl"] and d["flow_gen"] == 0 and d["slots"][0] == d["slots"][1]
               for d in done.values()), done
