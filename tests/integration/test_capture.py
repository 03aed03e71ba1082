"""Per-port packet capture: `capture: true` in a topology writes a pcap per switch port in
the run folder, kept under the results folder after the run; tcpdump reads them and they
hold the frames sent. Marker `root`; needs tcpdump."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

TOPO = """\
name: capt
capture: true
hosts: {h1:, h2:}
switches: {s1:, s2:}
links: [[h1, s1], [h2, s2], [s1, s2]]
"""


def _read(path: Path) -> list[str]:
    out = subprocess.run(["tcpdump", "-r", str(path), "-n", "-e"], capture_output=True,
                         text=True, check=True)
    return out.stdout.splitlines()


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not found: install "
                    "Debian's tcpdump (make setup)")
def test_capture_true_writes_a_pcap_per_port_kept_after_the_run(tmp_path):
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology.loader import load_topology

    topo_file = tmp_path / "capt.yaml"
    topo_file.write_text(TOPO)
    topo = load_topology(topo_file)
    assert topo.capture
    with Lab(topo, switch_kind="ebpf") as lab:
        lab.keep_dir = str(tmp_path / "results")
        running = lab.captures()
        assert sorted(running) == ["s1-p1", "s1-p2", "s2-p1", "s2-p2"], running
        run_pcap = Path(running["s1-p1"])
        h1, h2 = lab.net["h1"], lab.net["h2"]
        out = h1.cmd("ping -c 5 -i 0.2 -W 1", h2.IP())
        assert " 0% packet loss" in out, out
        assert sum("ICMP echo request" in ln for ln in _read(run_pcap)) >= 5  # while it runs
        run_dir = Path(lab.tag.dir)
    assert not run_dir.exists()
    kept = tmp_path / "results" / "pcap"
    assert sorted(p.name for p in kept.glob("*.pcap")) == [
        "s1-p1.pcap", "s1-p2.pcap", "s2-p1.pcap", "s2-p2.pcap"]
    ports = {p.stem: _read(p) for p in kept.glob("*.pcap")}
    mac1 = "00:00:00:00:00:01"
    # host ports: both directions; ports between switches: what the switch received there
    want = {"s1-p1": (5, 5), "s2-p1": (5, 5), "s1-p2": (0, 5), "s2-p2": (5, 0)}
    for name, (n_req, n_rep) in want.items():
        req = [ln for ln in ports[name] if "ICMP echo request" in ln]
        rep = [ln for ln in ports[name] if "ICMP echo reply" in ln]
        assert (len(req), len(rep)) == (n_req, n_rep), (name, ports[name][:6])
        assert all(ln.split()[1] == mac1 for ln in req), req[:2]


def test_capture_must_be_a_boolean(tmp_path):
    from flexnet_lab.errors import TopologyError
    from flexnet_lab.topology.loader import load_topology
    bad = tmp_path / "bad.yaml"
    bad.write_text(TOPO.replace("capture: true", "capture: yes please"))
    with pytest.raises(TopologyError) as err:
        load_topology(bad)
    assert "capture" in str(err.value) and str(bad.name) in str(err.value)
