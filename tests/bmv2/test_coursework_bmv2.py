"""A P4 course's exercise in the lab: tests/data/exercises/triangle (basic.p4, IPv4 LPM
forwarding on a triangle of three bmv2 switches, topology.json and s1/s2/s3-runtime.json
in the common coursework layout). It comes up from its folder, every host pings every
other, the controller holds and reconciles its entries, restarts a dead switch, and the
program is swapped live for a version with an ACL under UDP load."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from flexnet_lab.lab.network import Lab
from flexnet_lab.topology.coursework import load_coursework
from flexnet_lab.verify.traffic import FlowSpec, measure_flow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXERCISE = os.path.join(ROOT, "tests", "data", "exercises", "triangle")
FLEXNET = os.path.join(ROOT, ".venv", "bin", "flexnet")
pytestmark = [pytest.mark.root, pytest.mark.bmv2, pytest.mark.p4c]
LPM = "MyIngress.ipv4_lpm"


@pytest.fixture(scope="module")
def lab():
    with Lab(load_coursework(EXERCISE)) as lab:
        yield lab


def _runtime_entries(switch: str) -> set:
    from flexnet_lab.lab.p4_programs import prepare_p4
    return set(prepare_p4(load_coursework(EXERCISE))[switch].runtime.entries)


def test_exercise_comes_up_and_every_host_pings_every_other(lab, ctl):
    assert lab.notes == [], lab.notes          # every host command ran (route, arp, eth0)
    assert lab.host("h1").cmd("ip -o link show eth0").count("eth0") >= 1
    assert lab.host("h1").cmd("route -n").count("10.0.1.10") == 1
    result = lab.ping_all()
    assert result["loss_pct"] == 0.0 and result["sent"] == 6, result
    for s in ("s1", "s2", "s3"):
        di = ctl.device_intent(s)
        assert di.p4 is not None and di.p4.name == "basic" and di.program is None
        assert set(ctl.entries(s, LPM)) == _runtime_entries(s) == set(di.entries)
    d = ctl.describe("s1")
    (t,) = d["tables"]
    assert t["name"] == LPM and t["keys"] == ["hdr.ipv4.dstAddr:lpm"] and t["entries"] == 3
    assert t["default"] == "MyIngress.drop"
    assert "note" in ctl.counters("s1")        # no per-port counters in a user's program


def test_reconcile_restores_an_entry_and_restarts_a_dead_switch(lab, ctl):
    s2 = ctl.handle("s2")
    e = sorted(ctl.device_intent("s2").entries, key=repr)[0]
    s2.delete(e.table, e.match, e.priority)
    repairs = ctl.reconcile()
    assert any("re-inserted" in r for r in repairs), repairs
    assert set(s2.entries(LPM)) == _runtime_entries("s2")
    os.kill(s2._proc.pid, signal.SIGKILL)
    s2._proc.wait()
    repairs = ctl.reconcile()
    assert any("restarted" in r for r in repairs) and \
        sum("re-inserted" in r for r in repairs) == 3, repairs
    assert set(s2.entries(LPM)) == _runtime_entries("s2")
    assert lab.ping_all()["loss_pct"] == 0.0


def test_swap_under_udp_load_loses_nothing_beyond_baseline_and_keeps_lpm(lab, ctl):
    spec = FlowSpec("udp", "h1", "h2", "udp", rate_bps=4_000_000, duration_s=4.0)
    baseline = measure_flow(lab, spec)
    assert baseline.error is None and baseline.received > 1000, baseline.to_json()
    lpm_before = set(ctl.handle("s1").entries(LPM))
    records = []
    new, runtime = (os.path.join(EXERCISE, "basic_acl.p4"),
                    os.path.join(EXERCISE, "triangle-topo", "s1-runtime-acl.json"))
    swapped = measure_flow(lab, spec, during=lambda: records.extend(
        ctl.swap_p4("s1", new, runtime)), settle_s=1.5)
    assert swapped.error is None, swapped.to_json()
    print(json.dumps({"baseline_lost": baseline.lost, "baseline_sent": baseline.sent,
                      "swap_lost": swapped.lost, "swap_sent": swapped.sent,
                      "swap_ms": records[0].swap_ms, "notes": records[0].notes}))
    assert swapped.lost <= baseline.lost, (swapped.to_json(), baseline.to_json())
    (rec,) = records
    assert "carried: 3 entries of ipv4_lpm (same name, keys and actions)" in rec.notes
    assert "from s1-runtime-acl.json: 1 entries of acl" in rec.notes
    s1 = ctl.handle("s1")
    assert set(s1.entries(LPM)) == lpm_before              # read back: carried as they were
    (acl,) = s1.entries("MyIngress.acl")
    assert acl.action == "MyIngress.drop" and acl.priority == 10
    assert ctl.device_intent("s1").p4.name == "basic_acl"
    assert ctl.reconcile() == []                           # intent and device agree
    # the ACL drops UDP from h3 to h1; ICMP still passes
    h1, h3 = lab.host("h1"), lab.host("h3")
    assert lab.ping_all()["loss_pct"] == 0.0
    h1.cmd("iperf3 -s -D -1 -p 5301")
    time.sleep(0.3)
    out = h3.cmd("iperf3 -c 10.0.1.1 -u -b 1M -t 1 -p 5301 -J --connect-timeout 1000")
    h1.cmd("pkill -f 'iperf3 -s -D -1 -p 5301'")
    blocked = json.loads(out)
    assert "error" in blocked or blocked["end"]["sum"].get("packets", 0) == \
        blocked["end"]["sum"].get("lost_packets", 0)
    # back to the first version: the acl's entry is dropped, the lpm entries stay
    (back,) = ctl.swap_p4("s1", os.path.join(EXERCISE, "basic.p4"))
    assert "dropped: 1 entries of acl (it is gone)" in back.notes, back.notes
    assert set(s1.entries(LPM)) == lpm_before
    assert lab.ping_all()["loss_pct"] == 0.0


def test_p4runtime_shell_is_a_secondary_client(lab, ctl):
    pytest.importorskip("p4runtime_sh", reason="p4runtime-shell not installed (make setup)")
    grpc = lab.fabric().switches["s3"].grpc
    script = ("print('ENTRIES', len(list(table_entry['MyIngress.ipv4_lpm'].read())))\n"
              "te = table_entry['MyIngress.ipv4_lpm'](action='MyIngress.drop')\n"
              "te.match['hdr.ipv4.dstAddr'] = '10.9.9.0/24'\n"
              "try:\n    te.insert()\nexcept Exception as e:\n    print('WRITE', type(e).__name__)\n\n")
    res = subprocess.run([sys.executable, "-m", "p4runtime_sh", "--grpc-addr", grpc,
                          "--device-id", "0", "--election-id", "0,1"], input=script,
                         capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    assert "ENTRIES 3" in out, out[-2000:]
    assert "not the primary" in out and "WRITE" in out, out[-2000:]
    # the controller is still primary: its writes go through
    assert ctl.reconcile() == []
    s3 = ctl.handle("s3")
    e = sorted(ctl.device_intent("s3").entries, key=repr)[0]
    s3.delete(e.table, e.match, e.priority)
    assert any("re-inserted" in r for r in ctl.reconcile())


def test_flexnet_check_exercise_folder_and_topology_with_p4_option(tmp_path):
    for args in (["check", EXERCISE],
                 ["check", os.path.join(EXERCISE, "triangle-topo", "topology.json"),
                  "--p4", os.path.join(EXERCISE, "basic.p4")]):
        res = subprocess.run([FLEXNET, *args], capture_output=True, text=True, timeout=300,
                             cwd=str(tmp_path))
        assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]
        assert "6/6 pairs answered" in res.stdout and "PASS" in res.stdout


def test_controller_process_adopts_the_exercise_and_swaps_over_the_channel():
    """As `flexnet up DIR` runs it: the lab hands its switches to the controller daemon,
    which adopts them from fabric.json (their own P4 programs) and serves the prompt's
    commands: tables, entries, counters, swap."""
    from flexnet_lab.control.channel import ControlClient, socket_path
    from flexnet_lab.control.daemon import Supervisor
    with Lab(load_coursework(EXERCISE)) as lab:
        lab.release_devices()
        sup = Supervisor(lab.tag.dir, lab.tag.env())
        sup.start()
        try:
            c = ControlClient(socket_path(lab.tag.dir))
            t = c.call("tables", device="s1")
            assert t["program"] == "basic" and t["tables"][0]["entries"] == 3
            assert len(c.call("entries", device="s2", table="ipv4_lpm")) == 3
            assert "note" in c.call("counters", device="s3")
            (rec,) = c.call("swap_p4", switch="s1",
                            program=os.path.join(EXERCISE, "basic_acl.p4"),
                            runtime=os.path.join(EXERCISE, "triangle-topo",
                                                 "s1-runtime-acl.json"))
            assert "carried: 3 entries of ipv4_lpm (same name, keys and actions)" in rec["notes"]
            assert len(c.call("entries", device="s1", table="MyIngress.acl")) == 1
            assert c.call("p4sh", switch="s1")["election_id"] == [0, 1]
            assert lab.ping_all()["loss_pct"] == 0.0
            assert sup.restarts == 0
        finally:
            sup.stop()
