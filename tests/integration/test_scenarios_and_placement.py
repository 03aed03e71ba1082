"""End to end: the shipped scenarios pass, placement puts a sketch where it fits and the
sketch counts there, VLAN tag/untag programs work as a pair."""
import json
import os
import subprocess
import sys

import pytest

from flexnet_lab.control.controller import controller_for
from flexnet_lab.lab.network import Lab
from flexnet_lab.program import library
from flexnet_lab.program.delta import load_delta
from flexnet_lab.topology import load_topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.root


def _run(scenario: str, results) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flexnet_lab.cli", "run",
                           os.path.join(ROOT, "scenarios", scenario), "--results", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("scenario", ["default.yaml", "acl-everywhere.yaml"])
def test_shipped_scenarios_pass_with_report_and_plot(scenario, tmp_path):
    res = _run(scenario, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    name = scenario[:-5]
    report = json.load(open(tmp_path / name / "report.json"))
    assert report["passed"] and report["changes"]
    udp1 = next(f for f in report["flows"] if f["name"] == "udp1")
    assert udp1["lost"] - udp1["tail_lost"] == 0 and udp1["tail_lost"] <= 20
    png = tmp_path / name / "timeline.png"
    assert png.stat().st_size > 10_000 and open(png, "rb").read(4) == b"\x89PNG"


def _sketch_total(values: list[int], rows: int, size: int) -> list[int]:
    return [sum(values[r * size:(r + 1) * size]) for r in range(rows)]


@pytest.fixture(scope="module")
def leaf_spine():
    with Lab(load_topology(os.path.join(ROOT, "topologies/leaf-spine.yaml")), switch_kind="ebpf") as lab:
        yield lab


@pytest.fixture(scope="module")
def ctl(leaf_spine):
    """The lab's controller, in this process; closed before the lab stops."""
    with controller_for(leaf_spine) as controller:
        yield controller


def test_sketch_placed_on_host_when_switch_is_short_of_state(leaf_spine, ctl):
    lab = leaf_spine
    where = ctl.deploy("flexnet://t/cms-host", {"function": "count_min", "on": ["l4", "h8"],
                                                "switch_state_kb": 8})
    assert where["devices"] == ["h8:xdp:ingress"], where
    assert any("l4 (switch) passed over: state" in r for r in where["reasons"]), where
    lab.host("h1").cmd("ping -c 20 -i 0.01 -q 10.0.0.8")
    dp = ctl.handle("h8:xdp:ingress")
    assert dp.program.name == library.count_min().name
    rows = _sketch_total(dp.read_map("cms"), 4, 1024)
    assert all(r >= 20 for r in rows)  # every row of the sketch counted the echo requests


def test_sketch_placed_on_switch_when_it_fits(leaf_spine, ctl):
    lab = leaf_spine
    where = ctl.deploy("flexnet://t/cms-switch", {"function": "count_min", "on": ["l3", "h5"],
                                                  "switch_state_kb": 1024})
    assert where["devices"] == ["l3"], where
    assert any("has what it needs" in r for r in where["reasons"]), where
    sw = ctl.handle("l3")
    assert sw.program.table("count_min_fn") is not None
    assert len(sw.entries("l3_fwd")) == 8      # the routes survived the change
    lab.host("h1").cmd("ping -c 20 -i 0.01 -q 10.0.0.5")
    rows = _sketch_total(sw.read_map("cms"), 4, 1024)
    assert all(r >= 40 for r in rows)          # requests in and replies out through l3
    assert lab.ping_all()["loss_pct"] == 0.0


def test_vlan_tag_and_untag_work_as_a_pair(leaf_spine, ctl):
    lab = leaf_spine
    h1, h2 = lab.host("h1"), lab.host("h2")
    ctl.attach("h1", library.vlan_tag(100), "tc", "egress")
    # l1's program has no vlan parser state: it drops tagged frames, as bmv2 would
    assert " 0 received" in h1.cmd("ping -c 2 -W 1 -i 0.2 10.0.0.2")
    l1 = ctl.handle("l1")
    dropped = l1.port_counters()[0]["dropped_packets"]
    assert dropped >= 2
    _, inverses = ctl.apply_delta("l1", load_delta(
        os.path.join(ROOT, "scenarios/deltas/vlan-parser.yaml")))
    try:
        # now l1 forwards them, tag kept; h2's kernel has no VLAN 100 device: no answer
        assert " 0 received" in h1.cmd("ping -c 2 -W 1 -i 0.2 10.0.0.2")
        ctl.attach("h2", library.vlan_untag(), "tc", "ingress")
        untag = ctl.handle("h2:tc:ingress")
        h1.cmd("ping -c 1 -W 2 10.0.0.2")        # h1 re-learns h2's address (ARP, tagged)
        assert " 0% packet loss" in h1.cmd("ping -c 3 -i 0.2 10.0.0.2")
        assert untag.read_map("pkts")[0][0] >= 4
    finally:
        ctl.apply_inverses(inverses)
