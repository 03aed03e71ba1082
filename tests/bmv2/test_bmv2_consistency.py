"""Per-packet consistent changes with bmv2 switches (issue 10): a leaf-spine of bmv2 and eBPF
switches (l1, l4 and sp1 bmv2; l2, l3 and sp2 eBPF), changed through the controller.

- per-packet changes give 0 mixed probes, the same changes per-device give some;
- a tag a host forges does not select a version on a bmv2 switch, and never reaches a host;
- a failure at each step of a per-packet change leaves every device exactly as before.
One lab and controller for the module; every test leaves the switches with the base
program."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.bmv2, pytest.mark.p4c]

REPO = Path(__file__).resolve().parents[2]
ACL_DELTA = REPO / "scenarios" / "deltas" / "acl-udp-9999.yaml"
SWITCHES = ["l1", "l2", "l3", "l4", "sp1", "sp2"]
BMV2 = {"l1", "l4", "sp1"}


@pytest.fixture(scope="module")
def lab():
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology

    topo = load_topology(REPO / "topologies" / "leaf-spine.yaml").with_targets(
        lambda s: "bmv2" if s.name in BMV2 else "ebpf")
    with Lab(topo) as lab:
        assert lab.ping_all()["loss_pct"] == 0.0
        yield lab


@pytest.fixture(scope="module")
def ctl(lab):
    from flexnet_lab.control.controller import controller_for
    with controller_for(lab) as controller:
        yield controller


@pytest.fixture(scope="module")
def acl():
    from flexnet_lab.program.delta import load_delta
    return load_delta(str(ACL_DELTA))


def _all(ctl, delta) -> dict:
    from flexnet_lab.program.library import infrastructure
    prog = delta.apply(infrastructure())[0] if delta is not None else infrastructure()
    return {sw: ctl.intent.devices[sw].with_program(prog) for sw in SWITCHES}


def test_kinds(lab, ctl):
    assert {n: ctl.handle(n).kind for n in SWITCHES} == \
        {n: "bmv2" if n in BMV2 else "ebpf" for n in SWITCHES}
    assert all(ctl.handle(n).holds_two_versions() for n in SWITCHES)


# --- the oracle ------------------------------------------------------------------------------

def test_a_probe_arrives_with_one_slot_per_hop_in_path_order(lab, ctl):
    """Probes h2 -> h7 (l1, sp1, l4: bmv2 only) and h1 -> h8 (l1 bmv2, sp2 eBPF, l4 bmv2)
    arrive with their trailer filled: each switch's running version in path order, the
    hop count; bmv2 parses, writes and emits the payload, the UDP checksum 0 lets it in."""
    from flexnet_lab.verify.oracle import Oracle

    orc = Oracle(lab, ctl, [("h2", "h7"), ("h1", "h8")], 200)
    try:
        orc.start()
        time.sleep(1.5)
        orc.stop()
    finally:
        orc.kill()
    ver = {n: ctl.handle(n).version for n in SWITCHES}
    paths = {("h2", "h7"): ["l1", "sp1", "l4"], ("h1", "h8"): ["l1", "sp2", "l4"]}
    for s in orc.streams:
        assert s.sent > 200 and len(s.received) >= 0.99 * s.sent, (s.src, s.sent)
        want = tuple(ver[n] for n in paths[(s.src, s.dst)])
        assert set(s.trailers.values()) == {want}, (s.src, s.dst, want)


def test_per_packet_changes_show_no_mixed_probes_per_device_ones_do(lab, ctl, acl):
    """The ACL delta on all six switches and its inverse, per-device and per-packet in
    turn, probes on four leaf-spine-leaf paths (h2 -> h7 bmv2 only: l1, sp1, l4; h1 -> h8
    bmv2 and eBPF hops mixed; two eBPF only): mixed probes in the per-device changes only,
    and on the bmv2-only path too (the probe carries what each bmv2 switch ran)."""
    from flexnet_lab.verify.oracle import Oracle

    pairs = [("h1", "h8"), ("h3", "h6"), ("h2", "h7"), ("h5", "h4")]
    orc = Oracle(lab, ctl, pairs, 300)
    try:
        orc.start()
        time.sleep(0.3)
        for i in range(24):
            level = "per-packet" if (i // 2) % 2 else "per-device"
            on = i % 2 == 0
            recs = ctl.change(f"change {i}", _all(ctl, acl if on else None), consistency=level)
            assert {r.consistency for r in recs} == {level}, [r.notes for r in recs]
            if level == "per-packet":
                ph = recs[0].phases
                assert ph["ingress_points"] == 6
                assert not ph["drain_bounded"] and ph["drain_ms"] >= 20.0, ph
            orc.note(f"change {i}", level)
            time.sleep(0.05)
        orc.stop()
    finally:
        orc.kill()
    rep = orc.report()
    assert rep["probes_placed"] > 0.9 * rep["probes_sent"] > 2000, rep
    assert rep["mixed_by_level"]["per-packet"] == 0, rep["mixed_by_level"]
    assert rep["mixed_by_level"]["per-device"] > 0, rep["mixed_by_level"]
    assert rep["probes_lost"] <= 0.01 * rep["probes_sent"]
    bmv2_only = next(st for st in rep["streams"] if (st["src"], st["dst"]) == ("h2", "h7"))
    assert bmv2_only["mixed"] > 0, rep["streams"]
    for sw in SWITCHES:
        assert ctl.handle(sw).program.table("acl") is None


# --- the tag ---------------------------------------------------------------------------------

def test_forged_tag_into_bmv2_selects_nothing_and_no_host_sees_a_tag(lab, ctl, frames):
    """Tagging on, l1 (bmv2) stamping slot 1, every other switch slot 0. h1 sends probe
    frames, half of them with a forged tag claiming slot 0: all ran slot 1 on l1 (the
    forged tag was popped, not believed), on the spine and on l4 (bmv2, stamping 0: the
    tag l1 pushed carried the slot); h8's capture shows no S-tag."""
    counts, out = frames.forged_tag_trial(lab, ctl, SWITCHES)
    # slot-0 counts are h8's ICMP port-unreachable answers, stamped 0 by l4 and carried
    assert counts["l1"][1] == 40, counts
    assert counts["sp1"][1] + counts["sp2"][1] == 40, counts
    assert counts["l4"][1] == 40, counts
    assert counts["l1"][0] == counts["l4"][0] <= 40, counts
    assert out.count("ethertype IPv4") == 40, out[:2000]
    assert "88a8" not in out.lower() and "802.1ad" not in out.lower(), out[:2000]


# --- transactions ----------------------------------------------------------------------------

def _read_back(ctl) -> dict:
    """Every switch as the device says (counters excluded: port counters move with any
    packet; version numbers excluded: undoing a retired switch reloads its program)."""
    from flexnet_lab.compiler.p4 import CONTROL_REG, TAGPORT_REG, TRUST_REG
    out = {}
    for n in SWITCHES:
        h = ctl.handle(n)
        prog = h.program
        state = {"program": prog, "stamp": h.stamp,
                 "entries": {t.name: sorted(map(repr, h.entries(t.name))) for t in prog.tables},
                 "defaults": {t.name: h.default(t.name) for t in prog.tables},
                 "maps": {m.name: h.read_map(m.name) for m in prog.maps if m.kind != "counter"},
                 "health": h.health()}
        if n in BMV2:
            regs = [f"ingress.{r}" for r in (CONTROL_REG, TRUST_REG, TAGPORT_REG)]
            info = h._client.get_p4info()
            state.update({
                "p4info": sorted(t.preamble.name for t in info.tables)
                + sorted(a.preamble.name for a in info.actions)
                + sorted(r.preamble.name for r in info.registers),
                "all_entries": sorted(map(repr, h._read_raw())),
                "registers": h._thrift.read_registers(regs), "dual": h._dual is None})
        else:
            state["tagging"] = h._read_u32(h._slot_fd, 1)
        out[n] = state
    return out


STEPS = {"bmv2": ["prepare_spare", "install_spare", "set_stamp", "retire_old"],
         "ebpf": ["prepare", "install_spare", "set_stamp", "retire_old"]}


def test_failure_at_each_step_leaves_every_device_as_before(lab, ctl, acl, fail_once):
    """Before: the ACL table on all six, with an entry. The change (per-packet): the ACL
    table removed from all six. A failure injected at each step of each bmv2 switch's part
    and of one eBPF switch's: every device reads back exactly as before (program, P4Info,
    every entry, defaults, the tag's registers), the error names the device."""
    from flexnet_lab.errors import TargetError

    from flexnet_lab.plan.two_phase import link_switches

    _, inverses = ctl.apply_delta("*", acl, "acl on all six")
    ctl.insert_entry("*", "acl", (17, 9999), "drop")
    # ports between switches push and trust the tag from the first per-packet change on,
    # for good (plan/two_phase.py link_switches): part of "before"
    link_switches({n: ctl.handle(n) for n in SWITCHES}, ctl.fabric)
    before = _read_back(ctl)
    intent = dict(ctl.intent.devices)
    assert all(before[n]["entries"]["acl"] for n in SWITCHES)
    tried = 0
    try:
        for name in ["l1", "sp1", "l4", "l2"]:
            h = ctl.handle(name)
            for step in STEPS[h.kind]:
                with fail_once(h, step, name) as calls, pytest.raises(TargetError) as err:
                    ctl.apply_inverses(inverses, f"acl off ({step} fails on {name})",
                                       consistency="per-packet")
                assert calls, f"{step} on {name} was never called"
                assert name in str(err.value)
                after = _read_back(ctl)
                for n in SWITCHES:
                    assert after[n] == before[n], (step, name, n)
                assert ctl.intent.devices == intent
                tried += 1
    finally:
        recs = ctl.apply_inverses(inverses, "acl off", consistency="per-packet")
    assert tried == 16
    assert {r.consistency for r in recs} == {"per-packet"}
    assert all(ctl.handle(n).program.table("acl") is None for n in SWITCHES)
    assert lab.ping_all()["loss_pct"] == 0.0
