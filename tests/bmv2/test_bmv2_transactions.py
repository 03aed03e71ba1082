"""A change of a mixed bmv2/eBPF network is a transaction even when a bmv2 process dies in
the middle of it: the change fails naming the dead switch, every other device reads back
exactly as before (program, entries, defaults), the intent is unchanged, and the
controller's reconciliation restarts the dead switch with its previous program and
entries; the same change then goes through."""
import os
import signal

import pytest

from flexnet_lab.control.controller import controller_for
from flexnet_lab.errors import TargetError
from flexnet_lab.lab.network import Lab
from flexnet_lab.program.delta import load_delta
from flexnet_lab.topology.loader import parse_topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.root, pytest.mark.bmv2, pytest.mark.p4c]

MIXED = {"hosts": {"h1": {}, "h2": {}, "h3": {}},
         "switches": {"s1": {"target": "bmv2"}, "s2": {"target": "ebpf"},
                      "s3": {"target": "bmv2"}},
         "links": [["h1", "s1"], ["h2", "s2"], ["h3", "s3"], ["s1", "s2"], ["s2", "s3"]]}
ACL = os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml")
SWITCHES = ("s1", "s2", "s3")


@pytest.fixture(scope="module")
def lab():
    with Lab(parse_topology(MIXED, "mixed.yaml")) as lab:
        yield lab


@pytest.fixture(scope="module")
def ctl(lab):
    with controller_for(lab) as controller:
        yield controller


def _read_back(ctl) -> dict:
    out = {}
    for n in SWITCHES:
        h = ctl.handle(n)
        prog = h.program
        out[n] = {"program": prog.name,
                  "tables": sorted(t.name for t in prog.tables),
                  "entries": {t.name: sorted(map(repr, h.entries(t.name)))
                              for t in prog.tables},
                  "defaults": {t.name: h.default(t.name) for t in prog.tables}}
    return out


@pytest.mark.parametrize("step", ["stage", "commit"])
def test_a_bmv2_process_dying_mid_change_leaves_every_device_as_before(lab, ctl, step):
    acl = load_delta(ACL)
    assert lab.ping_all()["loss_pct"] == 0.0
    before = _read_back(ctl)
    intent = {n: ctl.device_intent(n) for n in SWITCHES}
    s3 = ctl.handle("s3")
    real = getattr(s3, step)
    killed = []

    def dies(*a, **kw):
        # the switch dies just as the controller reaches it: the call meets a dead gRPC peer
        if not killed:
            killed.append(s3._proc.pid)
            os.kill(s3._proc.pid, signal.SIGKILL)
            s3._proc.wait()
        return real(*a, **kw)
    setattr(s3, step, dies)
    try:
        with pytest.raises(TargetError) as err:
            ctl.apply_delta("*", acl, f"acl, s3 dies at {step}")
    finally:
        delattr(s3, step)
    assert killed, f"{step} on s3 was never reached"
    assert "s3" in str(err.value)
    # what was let go or undone is listed: s1 (staged or committed) and s2
    said = str(err.value).split(" — ", 1)[1]
    assert "s1" in said and "s2" in said, said
    assert {n: ctl.device_intent(n) for n in SWITCHES} == intent
    repairs = ctl.reconcile()          # the dead switch comes back with its intent
    assert any("s3" in r and "restarted" in r for r in repairs), repairs
    assert _read_back(ctl) == before
    assert lab.ping_all()["loss_pct"] == 0.0
    recs, inverses = ctl.apply_delta("*", acl, "acl after the failure")
    assert all(ctl.handle(n).program.table("acl") is not None for n in SWITCHES)
    ctl.apply_inverses(inverses, "acl off again")
    assert _read_back(ctl) == before
