"""Network-wide consistent updates (issue 10) on real namespaces and BPF: per-packet changes
proven by the version oracle, the version tag invisible to hosts and unforgeable, and
transactions: a failure at every position of a 6-switch change leaves all six as before.

One leaf-spine lab (6 eBPF switches, 8 hosts) and its controller for the module; every test
leaves the switches with the base program."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
ACL_DELTA = REPO / "scenarios" / "deltas" / "acl-udp-9999.yaml"
SWITCHES = ["l1", "l2", "l3", "l4", "sp1", "sp2"]


@pytest.fixture(scope="module")
def lab():
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology

    with Lab(load_topology(REPO / "topologies" / "leaf-spine.yaml"), switch_kind="ebpf") as lab:
        assert lab.ping_all()["loss_pct"] == 0.0
        yield lab


@pytest.fixture(scope="module")
def acl():
    from flexnet_lab.program.delta import load_delta
    return load_delta(str(ACL_DELTA))


# --- the oracle ------------------------------------------------------------------------------

def test_per_packet_changes_show_no_mixed_probes_per_device_ones_do(lab, ctl, acl):
    """The same changes (a delta to all six switches and a host's tc egress function swapped)
    applied per-device and per-packet in one run: the oracle sees mixed probes only in
    the per-device ones."""
    from flexnet_lab.program import library
    from flexnet_lab.verify.oracle import Oracle

    fc, cm = library.flow_counter(), library.count_min()
    ctl.attach("h1", fc, "tc", "egress")
    orc = Oracle(lab, ctl, [("h1", "h8"), ("h3", "h6"), ("h7", "h2"), ("h5", "h4")], 4000)
    try:
        orc.start()
        time.sleep(0.3)
        for i in range(24):
            level = "per-packet" if (i // 2) % 2 else "per-device"
            on = i % 2 == 0     # a change and its inverse, at each level in turn
            after = _network_change(ctl, acl if on else None, cm if on else fc)
            recs = ctl.change(f"change {i}", after, consistency=level)
            assert {r.consistency for r in recs} == {level}
            if level == "per-packet":
                ph = recs[0].phases
                assert ph["ingress_points"] == 7           # six switches and h1's egress
                assert not ph["drain_bounded"] and ph["drain_ms"] >= 1.0
            orc.note(f"change {i}", level)
            time.sleep(0.02)
        orc.stop()
    finally:
        orc.kill()
        ctl.detach("h1", "tc", "egress")
    rep = orc.report()
    assert rep["probes_placed"] > 0.95 * rep["probes_sent"] > 10000
    assert rep["mixed_by_level"]["per-packet"] == 0, rep["mixed_by_level"]
    assert rep["mixed_by_level"]["per-device"] > 0, rep["mixed_by_level"]
    assert rep["probes_lost"] <= 0.01 * rep["probes_sent"]
    for sw in SWITCHES:
        assert ctl.handle(sw).program.table("acl") is None


def test_a_probe_arrives_with_one_slot_per_hop_in_path_order(lab, ctl):
    """Probes h1 -> h8 (h1's tc egress function, l1, sp2, l4) and h7 -> h1 (l4, sp1, l1)
    arrive with their trailer filled: each recording hop's running version, in path order,
    and the hop count; the UDP checksum 0 the sender set lets every probe through."""
    from flexnet_lab.program import library
    from flexnet_lab.verify.oracle import Oracle

    ctl.attach("h1", library.flow_counter(), "tc", "egress")
    orc = Oracle(lab, ctl, [("h1", "h8"), ("h7", "h1")], 500)
    try:
        orc.start()
        time.sleep(1.0)
        orc.stop()
        ver = {n: ctl.handle(n).version for n in SWITCHES + ["h1:tc:egress"]}
    finally:
        orc.kill()
        ctl.detach("h1", "tc", "egress")
    paths = {("h1", "h8"): ["h1:tc:egress", "l1", "sp2", "l4"], ("h7", "h1"): ["l4", "sp1", "l1"]}
    for s in orc.streams:
        assert s.sent > 300 and len(s.received) >= 0.99 * s.sent, (s.src, s.sent, len(s.received))
        want = tuple(ver[n] for n in paths[(s.src, s.dst)])
        assert set(s.trailers.values()) == {want}, (s.src, s.dst, want)


def _network_change(ctl, delta, host_prog) -> dict:
    """After-intents: every switch back to the base program or with `delta` applied; h1's
    tc egress running `host_prog`."""
    from flexnet_lab.program.library import infrastructure
    after = {}
    for sw in SWITCHES:
        cur = ctl.intent.devices[sw]
        prog = delta.apply(infrastructure())[0] if delta is not None else infrastructure()
        after[sw] = cur.with_program(prog)
    name = "h1:tc:egress"
    after[name] = ctl.intent.devices[name].with_program(host_prog)
    return after


# --- the tag ---------------------------------------------------------------------------------

def test_tag_carried_between_switches_forged_tag_ignored_host_never_sees_it(lab, ctl, frames):
    """With tagging on and l1 stamping version slot 1 while every other switch stamps 0:
    packets from h1 run slot 1 on sp and l4 too (the tag carried them); a frame h1 sends
    with a forged tag for slot 0 runs what l1 stamps (slot 1); the capture on h8 shows the
    frames exactly as sent: no tag."""
    counts, out = frames.forged_tag_trial(lab, ctl, SWITCHES)
    # slot 1 is what only l1 stamps: the 40 frames from h1 (20 of them with a forged tag
    # claiming slot 0, popped and not believed) ran slot 1 on l1, on a spine and on l4,
    # which stamps 0 itself (the tag carried the version). Slot-0 counts are h8's ICMP
    # port-unreachable answers, stamped 0 by l4.
    assert counts["l1"][1] == 40, counts
    assert counts["sp1"][1] + counts["sp2"][1] == 40, counts
    assert counts["l4"][1] == 40, counts
    assert counts["l2"] == counts["l3"] == [0, 0], counts
    # h8 saw 40 frames, none with an S-tag (ours or the forged one)
    assert out.count("ethertype IPv4") == 40, out[:2000]
    assert "88a8" not in out.lower() and "802.1ad" not in out.lower() and "QinQ" not in out, out[:2000]


def test_host_port_left_trusted_is_repaired_by_reconciliation(lab, ctl):
    """A change cut short (its controller killed) may leave a host's port trusting the
    tag; reconciliation turns that off (read back from the kernel's trust map) and keeps
    the ports towards other switches trusted."""
    from flexnet_lab.compiler.ebpf import TRUST_MAP
    from flexnet_lab.plan.two_phase import link_switches, rest_trust, tag_switches

    switches = tag_switches(ctl.devices.handles)
    link_switches(switches, ctl.fabric)
    h1 = ctl.fabric.hosts["h1"]
    sw = ctl.handle(h1.switch)
    host_if = ctl.fabric.switches[h1.switch].ports[h1.port][0]

    def trusted() -> set[str]:
        keys = sw._bpf.keys(sw._root_maps[TRUST_MAP], 4)
        return {sw.netns.ifname(int.from_bytes(k, "little")) for k in keys}

    sw.set_trust(host_if, True)
    assert host_if in trusted()
    done = ctl.reconcile()
    assert f"{h1.switch}: {host_if} trusted the version tag with no change running: " \
        "no longer" in done, done
    rest = rest_trust(switches, ctl.fabric)[h1.switch]
    assert trusted() == rest and len(rest) == 2, (trusted(), rest)
    assert not [d for d in ctl.reconcile() if "trusted" in d]


# --- transactions ----------------------------------------------------------------------------

STEPS = {"per-device": ["prepare", "commit"],
         "per-packet": ["prepare", "install_spare", "set_stamp", "retire_old"],
         "per-flow": ["set_flow_tracking", "prepare", "install_spare", "set_stamp",
                      "retire_old"]}


@pytest.mark.parametrize("level", ["per-device", "per-packet", "per-flow"])
def test_failure_at_every_position_leaves_all_six_switches_as_before(lab, ctl, acl, level,
                                                                   read_back, fail_once):
    """Before: the ACL table on all six with an entry and a changed default. The change:
    the ACL table removed from all six. A failure injected at each step of each device's
    part: every switch reads back exactly as before, the error names the device and what
    was undone, the intent is unchanged; then the change itself goes through."""
    from flexnet_lab.errors import TargetError

    _, inverses = ctl.apply_delta("*", acl, "acl on all six")
    ctl.insert_entry("*", "acl", (17, 9999), "drop")
    before = read_back(ctl, SWITCHES)
    intent = dict(ctl.intent.devices)
    assert all(before[n]["entries"]["acl"] for n in SWITCHES)
    tried = 0
    try:
        for k, name in enumerate(SWITCHES):
            for step in STEPS[level]:
                with fail_once(ctl.handle(name), step, name) as calls, \
                        pytest.raises(TargetError) as err:
                    ctl.apply_inverses(inverses, f"acl off ({step} fails on {name})",
                                       consistency=level)
                assert calls, f"{step} on {name} was never called"
                assert name in str(err.value)
                after = read_back(ctl, SWITCHES)
                for n in SWITCHES:
                    assert after[n] == before[n], (level, step, name, n)
                assert ctl.intent.devices == intent
                tried += 1
    finally:
        recs = ctl.apply_inverses(inverses, "acl off", consistency=level)
    assert tried == 6 * len(STEPS[level])
    assert {r.consistency for r in recs} == {level}
    assert all(ctl.handle(n).program.table("acl") is None for n in SWITCHES)
