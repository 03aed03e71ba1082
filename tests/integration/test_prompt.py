"""The lab prompt, driven through its standard input like a user would."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.root
def test_prompt_shows_tables_and_changes_the_network_live():
    script = "\n".join([
        "entries s1 l3_fwd",
        "delta s1 scenarios/deltas/acl-udp-9999.yaml",
        "tables s1",
        "attach h2 flow_counter",
        "h1 ping -c2 -q h2",
        "maps h2 pkts",
        "swap h2 rate_limiter",
        "undo",
        "tables s1",
        "app deploy flexnet://class/cm count_min --on s2",
        "app list",
        "tables s2",
        "app remove flexnet://class/cm",
        "app show flexnet://class/cm",
        "pingall",
        "exit",
    ]) + "\n"
    res = subprocess.run([sys.executable, "-m", "flexnet_lab.cli", "up", "linear"], cwd=ROOT,
                         input=script, capture_output=True, text=True, timeout=90)
    out = res.stdout + res.stderr  # Mininet logs (pingall) go to stderr
    assert res.returncode == 0, out + res.stderr
    assert "10.0.0.2/32 -> forward(2)" in out
    assert "table acl: added" in out and "table l3_fwd: kept, its entries survive" in out
    assert "h2 xdp/ingress: flow_counter" in out
    assert "flow_counter -> rate_limiter: swap" in out
    # after undo the acl table is gone again
    assert out.count("table acl [") == 1
    assert "0% dropped" in out
    # apps by URI from the prompt, through the same controller
    assert '"devices": [\n   "s2"' in out and "table count_min_fn [" in out
    assert "error: flexnet://class/cm: no such app" in out
