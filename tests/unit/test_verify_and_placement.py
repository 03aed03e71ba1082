"""Pure tests: the verdict's arithmetic, scenario parsing, placement, table layouts."""
import os

import pytest

from flexnet_lab.compiler.ebpf import CAPABILITIES, generate
from flexnet_lab.compiler.layout import TableLayout, table_layout
from flexnet_lab.compiler.placement import (Device, PlacementError, as_switch_delta, place,
                                            state_bytes)
from flexnet_lab.errors import ScenarioError
from flexnet_lab.program import library
from flexnet_lab.verify.scenario import dry_run, load_scenario, parse_scenario
from flexnet_lab.verify.traffic import FlowResult, FlowSpec, Interval
from flexnet_lab.verify.verdict import baseline, impacts, locate
from flexnet_lab.topology import load_topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _flow(losses):
    spec = FlowSpec("f", "h1", "h2")
    ivs = [Interval(i / 10, (i + 1) / 10, 1e6, packets=100, lost=lost)
           for i, lost in enumerate(losses)]
    return FlowResult(spec, ivs, sent=100 * len(losses), lost=sum(losses))


def test_change_is_blamed_only_beyond_baseline():
    flow = _flow([0] * 20 + [0, 0, 5, 0] + [0] * 20)
    base = baseline(flow, 0.0, 2.0)
    [imp] = impacts(flow, base, [("c", 2.2)])
    assert base.lost == 0 and imp.lost == 5 and imp.blamed


def test_baseline_loss_is_not_blamed_on_a_change():
    flow = _flow([1, 0] * 30)          # the machine loses 1 of 200 anyway
    base = baseline(flow, 0.0, 2.0)
    [imp] = impacts(flow, base, [("c", 4.0)])
    assert imp.lost > 0 and not imp.blamed


def test_locate_names_the_dropping_switch_and_the_lossy_link():
    c = lambda rx, tx: {"rx_packets": rx, "tx_packets": tx}
    before = {"s1": {0: {"dropped_packets": 0}, 1: c(0, 0)},
              "s2": {0: {"dropped_packets": 0}, 1: c(0, 0)}}
    after = {"s1": {0: {"dropped_packets": 3}, 1: c(0, 100)},
             "s2": {0: {"dropped_packets": 0}, 1: c(90, 0)}}
    found = locate(before, after, [("s1", 1, "s2", 1)])
    assert "s1: dropped 3 packets" in found and any("10 packets missing" in f for f in found)


def test_default_scenario_parses_and_its_timeline_applies_to_the_models():
    sc = load_scenario(os.path.join(ROOT, "scenarios/default.yaml"))
    topo = load_topology(os.path.join(ROOT, "topologies/leaf-spine.yaml"))
    loads = dry_run(sc, topo)
    assert sc.flows and sc.changes and len(loads) >= len(sc.changes) - 1


@pytest.mark.parametrize("data,field", [
    ({"topology": "linear", "changes": [{"at": 1, "switch": "s1", "bogus": 1}]}, "changes[0].bogus"),
    ({"topology": "linear", "changes": [{"at": 1}]}, "changes[0]"),
    ({"topology": "linear", "traffic": {"flows": [{"src": "h1", "dst": "h2", "proto": "icmp"}]}},
     "traffic.flows[0].proto"),
    ({"topology": "linear", "traffic": {"flows": [{"src": "h1", "dst": "h2", "rate": "fast"}]}},
     "traffic.flows[0].rate"),
    ({"topology": "linear", "changes": [{"at": 1, "switch": "s1", "undo": 0}]}, "changes[0].undo"),
    ({"changes": []}, "topology"),
    ({"topology": "linear", "targets": {"s1": "tofino"}}, "targets.s1"),
    ({"topology": "linear", "targets": ["s1"]}, "targets"),
])
def test_malformed_scenarios_name_the_field(data, field):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "x.yaml")
    assert err.value.field == field


def test_scenario_targets_pick_switch_kinds_and_auto_runs_ebpf():
    sc = load_scenario(os.path.join(ROOT, "scenarios/bmv2-mixed.yaml"))
    topo = sc.topology_for(load_topology(os.path.join(ROOT, "topologies/leaf-spine.yaml")))
    assert {s.name: s.target for s in topo.switches} == {
        "sp1": "ebpf", "sp2": "ebpf", "l1": "bmv2", "l2": "ebpf", "l3": "ebpf", "l4": "ebpf"}
    assert {d for *_, d in dry_run(sc, topo)} == {"sp1", "sp2", "l1", "l2", "l3", "l4"}
    bad = parse_scenario({"topology": "leaf-spine", "targets": {"x*": "bmv2"}}, "x.yaml")
    with pytest.raises(ScenarioError) as err:
        bad.topology_for(topo)
    assert err.value.field == "targets.x*"


def test_unknown_table_in_a_timeline_fails_before_any_lab(tmp_path):
    sc = parse_scenario({"topology": "linear", "traffic": {"duration": 5},
                         "changes": [{"at": 1, "switch": "s1",
                                      "entry": {"table": "acl", "match": [17, 1], "action": "drop"}}]},
                        str(tmp_path / "s.yaml"))
    with pytest.raises(ScenarioError) as err:
        dry_run(sc, load_topology(os.path.join(ROOT, "topologies/linear.yaml")))
    assert "acl" in str(err.value)


def _devices(switch_state):
    return [Device("l1", "switch", frozenset(CAPABILITIES["tc"]), switch_state, 512),
            Device("h8", "host", frozenset(CAPABILITIES["xdp"]), 16 << 20, 512)]


def test_sketch_goes_to_the_host_when_the_switch_lacks_state():
    p = place(library.count_min(), _devices(8 * 1024))
    assert p.device == "h8" and "l1 (switch) passed over: state" in p.explain()


def test_sketch_stays_on_the_switch_when_it_fits():
    p = place(library.count_min(), _devices(1 << 20))
    assert p.device == "l1" and "has what it needs" in p.explain()


def test_placement_reports_every_shortfall():
    fn = library.vlan_tag()
    with pytest.raises(PlacementError) as err:
        place(fn, [Device("h1", "host", frozenset(CAPABILITIES["xdp"]), 1 << 20, 512)])
    assert "cannot do push_vlan" in str(err.value)


def test_a_function_becomes_a_switch_delta():
    new, inverse = as_switch_delta(library.count_min()).apply(library.infrastructure())
    assert new.map("cms") and new.table("count_min_fn")
    assert inverse.apply(new)[0] == library.infrastructure()
    assert state_bytes(new) > state_bytes(library.infrastructure())


def test_layout_round_trips_keys_and_actions():
    prog = library.infrastructure()
    lay = table_layout(prog, prog.table("l3_fwd"))
    raw = lay.encode_key((0x0A000001,), 24)
    assert lay.decode_key(raw) == ((0x0A000001,), 24)
    aid, prio, args = TableLayout.decode_action(TableLayout.encode_action(7, (3,), 5))
    assert (aid, prio, args[:1]) == (7, 5, (3,))


def test_generated_c_is_readable_and_complete():
    src = generate(library.infrastructure(), "tc", "switch").text
    for piece in ("st_start:", "st_ipv4:", "st_arp:", "apply l3_fwd", "bpf_redirect_peer",
                  "t_l3_fwd", "m_port_tx", "Generated from the model"):
        assert piece in src
    assert "push_vlan" not in generate(library.acl(), "xdp", "host").text



def test_tc_pipelines_write_their_version_into_the_probe_trailer():
    """The root marks an oracle probe (a whole trailer in the frame); every tc pipeline,
    switch or host function, writes its version into slot[count] at fixed frame offsets
    (the root popped the lab's tag) and counts the hop; no per-device record is kept."""
    from flexnet_lab.compiler.ebpf import root_source
    root = root_source("tc")
    assert "p + 86 <= end" in root and "ctx->cb[1] = 1;" in root
    for src in (generate(library.infrastructure(), "tc", "switch").text,
                generate(library.flow_counter(), "tc", "host").text,
                generate(library.flow_counter(), "tc", "host", chain=True).text):
        assert "bpf_skb_load_bytes(ctx, 50, &n, 1)" in src
        assert "if (n < 8) {" in src
        assert "bpf_skb_store_bytes(ctx, 54 + 4 * (u32)n, &v, 4, 0);" in src
        assert "if (n < 255) {" in src and "bpf_skb_store_bytes(ctx, 50, &n, 1, 0);" in src
        assert "flx_probe" not in src
    assert "cb[1]" not in generate(library.flow_counter(), "xdp", "host").text
    # written on the way out (little left for the verifier to walk twice): a switch right
    # before the redirect, a host function before its verdict; a program that pushes or
    # pops a tag (which may move the frame's bytes) before it runs
    sw = generate(library.infrastructure(), "tc", "switch").text
    assert sw.index("if (!pp || !pp->ifindex)") < sw.index("if (ctx->cb[1])") < \
        sw.index("bpf_redirect_peer")
    host = generate(library.flow_counter(), "tc", "host").text
    assert host.index("accept:") < host.index("if (ctx->cb[1])") < host.index("return std.drop")
    tagger = generate(library.HOST_PROGRAMS["vlan_tag"](), "tc", "host").text
    assert tagger.index("if (ctx->cb[1])") < tagger.index("st_start:")
