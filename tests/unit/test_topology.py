"""Unit tests for the topology layer: loader, model, routes (pure, no root)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest

from flexnet_lab.errors import TopologyError
from flexnet_lab.topology import (
    NETEM_MESSAGE,
    HostSpec,
    LinkSpec,
    Port,
    SwitchSpec,
    Topology,
    compute_routes,
    find_topology,
    list_topologies,
    load_topology,
    parse_topology,
    path,
    resolve_auto,
)

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
SHIPPED = ["linear", "leaf-spine", "fat-tree-k4", "fat-tree-k8", "fat-tree-k10"]


def load(name: str) -> Topology:
    return load_topology(find_topology(name, TOPOLOGIES))


def base() -> dict[str, Any]:
    """A small valid topology: h1 - s1 - s2 - h2."""
    return {
        "hosts": {"h1": None, "h2": {}},
        "switches": {"s1": None, "s2": {"target": "ebpf"}},
        "links": [["h1", "s1"], {"a": "s1", "b": "s2", "bw": 100}, ["s2", "h2"]],
    }


# -- shipped files -------------------------------------------------------------


@pytest.mark.parametrize(
    "name, hosts, switches, links",
    [("linear", 2, 2, 3), ("leaf-spine", 8, 6, 16), ("fat-tree-k4", 16, 20, 48)],
)
def test_shipped_topologies_load(name: str, hosts: int, switches: int, links: int) -> None:
    topo = load(name)
    assert topo.name == name
    assert (len(topo.hosts), len(topo.switches), len(topo.links)) == (hosts, switches, links)
    assert {s.target for s in topo.switches} == {"auto"}
    assert [h.ip for h in topo.hosts] == [f"10.0.0.{n}" for n in range(1, hosts + 1)]
    assert {h.prefixlen for h in topo.hosts} == {24}


@pytest.mark.parametrize("k, hosts, switches", [(8, 128, 80), (10, 250, 125)])
def test_big_fat_trees(k: int, hosts: int, switches: int) -> None:
    """The scale topologies: k^3/4 hosts in one /24, 5k^2/4 switches, eBPF switches (125
    bmv2 processes would not run on the 2-core machines the lab targets)."""
    topo = load(f"fat-tree-k{k}")
    assert (len(topo.hosts), len(topo.switches), len(topo.links)) == (
        hosts, switches, hosts + 2 * (k // 2) ** 2 * k)
    assert {s.target for s in topo.switches} == {"ebpf"}
    assert [h.ip for h in topo.hosts] == [f"10.0.0.{n}" for n in range(1, hosts + 1)]
    for spec in topo.switches:  # every switch has k ports (a core: one per pod)
        assert len(topo.ports(spec.name)) == k
    routes = compute_routes(topo)
    assert all(len(table) == hosts for table in routes.values())
    assert len(path(topo, "h1", f"h{hosts}")) == 7


def test_fat_tree_files_match_their_generator() -> None:
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "gen_fat_tree", TOPOLOGIES.parent / "scripts" / "gen_fat_tree.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for k in (8, 10):
        assert (TOPOLOGIES / f"fat-tree-k{k}.yaml").read_text() == gen.fat_tree(k, "ebpf")
    made = parse_topology(__import__("yaml").safe_load(gen.fat_tree(4, "auto")), "<gen>")
    assert made.links == load("fat-tree-k4").links
    assert made.node_names() == load("fat-tree-k4").node_names()


def test_list_and_find() -> None:
    assert set(SHIPPED) <= set(list_topologies(TOPOLOGIES))
    assert find_topology("linear", TOPOLOGIES) == TOPOLOGIES / "linear.yaml"
    direct = TOPOLOGIES / "leaf-spine.yaml"
    assert find_topology(str(direct), "/nonexistent") == direct


def test_unknown_name_lists_available() -> None:
    with pytest.raises(TopologyError) as info:
        find_topology("torus", TOPOLOGIES)
    assert all(name in info.value.message for name in SHIPPED)


def test_missing_path() -> None:
    with pytest.raises(TopologyError) as info:
        find_topology("/nonexistent/x.yaml", TOPOLOGIES)
    assert info.value.field == "<file>"


def test_fat_tree_wiring() -> None:
    topo = load("fat-tree-k4")
    for p in range(4):
        for edge in (f"e{2 * p + 1}", f"e{2 * p + 2}"):
            peers = {port.peer_node for port in topo.ports(edge)}
            assert {f"a{2 * p + 1}", f"a{2 * p + 2}"} <= peers
    assert {port.peer_node for port in topo.ports("a1")} == {"e1", "e2", "c1", "c2"}
    assert {port.peer_node for port in topo.ports("a2")} == {"e1", "e2", "c3", "c4"}
    assert {port.peer_node for port in topo.ports("c1")} == {"a1", "a3", "a5", "a7"}


# -- model ---------------------------------------------------------------------


def test_defaults_and_lookups() -> None:
    topo = parse_topology(base(), "<data>")
    assert topo.name == "topology" and topo.source == "<data>"
    assert topo.host("h2") == HostSpec("h2", "10.0.0.2", 24, "00:00:00:00:00:02")
    assert topo.switch("s1") == SwitchSpec("s1", "auto")
    assert topo.switch("s2").target == "ebpf"
    assert topo.links[1] == LinkSpec("s1", "s2", 100.0)
    assert topo.links[0].bw is None
    assert topo.node_names() == ["h1", "h2", "s1", "s2"]
    assert topo.is_host("h1") and not topo.is_host("s1")
    with pytest.raises(TopologyError):
        topo.host("s1")
    with pytest.raises(TopologyError):
        topo.switch("h9")


def test_explicit_host_values_and_default_bw() -> None:
    data = base()
    data["defaults"] = {"bw": 10, "target": "bmv2"}
    data["hosts"]["h1"] = {"ip": "192.168.1.5/16", "mac": "02:AA:00:00:00:01"}
    data["hosts"]["h2"] = {"ip": "192.168.1.9"}  # default /24
    topo = parse_topology(data, "x/my-topo.yaml")
    assert topo.name == "my-topo"
    assert topo.host("h1") == HostSpec("h1", "192.168.1.5", 16, "02:aa:00:00:00:01")
    assert (topo.host("h2").ip, topo.host("h2").prefixlen) == ("192.168.1.9", 24)
    assert [link.bw for link in topo.links] == [10.0, 100.0, 10.0]
    assert {s.target for s in topo.switches} == {"bmv2", "ebpf"}


def test_auto_mac_is_hex() -> None:
    data = {
        "hosts": {f"h{n}": None for n in range(1, 18)},
        "switches": {"s1": None},
        "links": [[f"h{n}", "s1"] for n in range(1, 18)],
    }
    topo = parse_topology(data, "<data>")
    assert topo.host("h16").mac == "00:00:00:00:00:10"
    assert topo.host("h17").mac == "00:00:00:00:00:11"


def test_port_numbering() -> None:
    topo = parse_topology(base(), "<data>")
    assert topo.ports("h1") == [Port("h1", 0, "h1-eth0", "s1", 1, "s1-eth1")]
    assert topo.ports("s1") == [
        Port("s1", 1, "s1-eth1", "h1", 0, "h1-eth0"),
        Port("s1", 2, "s1-eth2", "s2", 1, "s2-eth1"),
    ]
    assert [p.number for p in topo.ports("s2")] == [1, 2]
    assert topo.port_between("s2", "h2") == Port("s2", 2, "s2-eth2", "h2", 0, "h2-eth0")
    assert topo.host_link("h2") == ("s2", 2)
    with pytest.raises(TopologyError):
        topo.port_between("h1", "h2")


def test_leaf_spine_ports() -> None:
    topo = load("leaf-spine")
    assert [(p.number, p.peer_node) for p in topo.ports("l2")] == [
        (1, "h3"), (2, "h4"), (3, "sp1"), (4, "sp2"),
    ]
    assert [p.peer_node for p in topo.ports("sp1")] == ["l1", "l2", "l3", "l4"]
    assert topo.host_link("h8") == ("l4", 2)


def test_resolve_auto() -> None:
    topo = parse_topology(base(), "<data>")
    assert [s.target for s in resolve_auto(topo, have_bmv2=True).switches] == ["bmv2", "ebpf"]
    assert [s.target for s in resolve_auto(topo, have_bmv2=False).switches] == ["ebpf", "ebpf"]
    assert [s.target for s in topo.switches] == ["auto", "ebpf"]  # original untouched


def test_with_targets() -> None:
    topo = parse_topology(base(), "<data>")
    copy_ = topo.with_targets(lambda spec: "bmv2")
    assert {s.target for s in copy_.switches} == {"bmv2"}
    assert copy_.hosts == topo.hosts and copy_.links == topo.links
    with pytest.raises(TopologyError) as info:
        topo.with_targets(lambda spec: "tofino")
    assert info.value.field == "switches.s1.target"


# -- routes --------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_every_switch_routes_to_every_host(name: str) -> None:
    topo = load(name)
    routes = compute_routes(topo)
    assert set(routes) == {s.name for s in topo.switches}
    for switch, table in routes.items():
        assert [r.dst_ip for r in table] == [h.ip for h in topo.hosts]
        assert {r.prefixlen for r in table} == {32}
        numbers = {p.number for p in topo.ports(switch)}
        assert all(r.port in numbers and r.switch == switch for r in table)


@pytest.mark.parametrize("name", SHIPPED)
def test_paths_reach_destination_without_loops(name: str) -> None:
    topo = load(name)
    routes = compute_routes(topo)
    for src in topo.hosts:
        for dst in topo.hosts:
            if src == dst:
                continue
            nodes = path(topo, src.name, dst.name, routes)
            assert nodes[0] == src.name and nodes[-1] == dst.name
            assert len(nodes) == len(set(nodes))
            assert not any(topo.is_host(n) for n in nodes[1:-1])
            for a, b in zip(nodes, nodes[1:]):
                topo.port_between(a, b)  # consecutive nodes are linked


def test_path_lengths() -> None:
    assert path(load("linear"), "h1", "h2") == ["h1", "s1", "s2", "h2"]
    fat = load("fat-tree-k4")
    assert len(path(fat, "h1", "h16")) == 5 + 2  # e, a, c, a, e
    assert len(path(fat, "h1", "h3")) == 3 + 2  # same pod: e, a, e
    assert path(fat, "h1", "h2") == ["h1", "e1", "h2"]
    assert path(fat, "h1", "h1") == ["h1"]


def test_fat_tree_uses_all_uplinks() -> None:
    topo = load("fat-tree-k4")
    routes = compute_routes(topo)
    used = {(r.switch, r.port) for table in routes.values() for r in table}
    for spec in topo.switches:
        if spec.name[0] in "ae":
            uplinks = [p.number for p in topo.ports(spec.name)][2:]
            assert all((spec.name, port) in used for port in uplinks), spec.name


def test_leaf_spine_spreads_over_spines() -> None:
    topo = load("leaf-spine")
    spines = {path(topo, "h1", f"h{n}")[2] for n in range(3, 9)}
    assert spines == {"sp1", "sp2"}


def test_unreachable_host() -> None:
    data = base()
    data["links"] = [["h1", "s1"], ["s2", "h2"]]
    topo = parse_topology(data, "<data>")
    with pytest.raises(TopologyError) as info:
        compute_routes(topo)
    assert info.value.field == "links"
    assert info.value.message == "switch s2 cannot reach host h1"


# -- validation ----------------------------------------------------------------


def _set(path_: tuple, value: Any) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        target = data
        for key in path_[:-1]:
            target = target[key]
        target[path_[-1]] = value

    return apply


def _delete(key: str) -> Callable[[dict], None]:
    return lambda data: data.pop(key)


def _add_switch_with_hosts(count: int) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        for n in range(count):
            data["hosts"][f"x{n}"] = None
            data["links"].append([f"x{n}", "s1"])

    return apply


INVALID = [
    ("unknown-top-key", _set(("colour",), "red"), "colour"),
    ("unknown-host-key", _set(("hosts", "h1"), {"gw": "10.0.0.254"}), "hosts.h1.gw"),
    ("unknown-switch-key", _set(("switches", "s1"), {"cpu": 2}), "switches.s1.cpu"),
    ("unknown-link-key", _set(("links", 1, "mtu"), 9000), "links[1].mtu"),
    ("unknown-defaults-key", _set(("defaults",), {"mtu": 1}), "defaults.mtu"),
    ("bad-name", _set(("name",), "has space"), "name"),
    ("upper-node-name", _set(("hosts", "H1"), None), "hosts.H1"),
    ("long-node-name", _set(("switches", "switch123"), None), "switches.switch123"),
    ("digit-node-name", _set(("switches", "1s"), None), "switches.1s"),
    ("name-clash", _set(("switches", "h1"), None), "switches.h1"),
    ("unknown-node", _set(("links", 2), ["s2", "h9"]), "links[2].b"),
    ("unknown-node-a", _set(("links", 1, "a"), "s7"), "links[1].a"),
    ("self-loop", _set(("links", 1), {"a": "s1", "b": "s1"}), "links[1]"),
    ("duplicate-link", lambda d: d["links"].append(["s2", "s1"]), "links[3]"),
    ("host-no-link", _set(("hosts", "h3"), None), "hosts.h3"),
    ("host-two-links", lambda d: d["links"].append(["h1", "s2"]), "hosts.h1"),
    ("host-to-host", lambda d: d["links"].append(["h1", "h2"]), "links[3]"),
    ("bad-ip", _set(("hosts", "h1"), {"ip": "10.0.0.300/24"}), "hosts.h1.ip"),
    ("bad-ip-text", _set(("hosts", "h1"), {"ip": "ten"}), "hosts.h1.ip"),
    ("bad-prefix", _set(("hosts", "h1"), {"ip": "10.0.0.1/33"}), "hosts.h1.ip"),
    ("network-address", _set(("hosts", "h1"), {"ip": "10.0.0.0/24"}), "hosts.h1.ip"),
    ("bad-mac", _set(("hosts", "h2"), {"mac": "00:00:00:00:01"}), "hosts.h2.mac"),
    ("mac-as-number", _set(("hosts", "h2"), {"mac": 12}), "hosts.h2.mac"),
    ("multicast-mac", _set(("hosts", "h2"), {"mac": "01:00:5e:00:00:01"}), "hosts.h2.mac"),
    ("duplicate-ip", _set(("hosts", "h2"), {"ip": "10.0.0.1/24"}), "hosts.h2.ip"),
    ("duplicate-mac", _set(("hosts", "h2"), {"mac": "00:00:00:00:00:01"}), "hosts.h2.mac"),
    ("bad-target", _set(("switches", "s2"), {"target": "tofino"}), "switches.s2.target"),
    ("list-target", _set(("switches", "s2"), {"target": ["ebpf"]}), "switches.s2.target"),
    ("bad-default-target", _set(("defaults",), {"target": "x"}), "defaults.target"),
    ("zero-bw", _set(("links", 1, "bw"), 0), "links[1].bw"),
    ("negative-bw", _set(("links", 1, "bw"), -5), "links[1].bw"),
    ("string-bw", _set(("links", 1, "bw"), "100M"), "links[1].bw"),
    ("bool-bw", _set(("links", 1, "bw"), True), "links[1].bw"),
    ("bad-default-bw", _set(("defaults",), {"bw": "fast"}), "defaults.bw"),
    ("too-many-ports", _add_switch_with_hosts(29), "switches.s1"),
    ("empty-hosts", _set(("hosts",), {}), "hosts"),
    ("missing-switches", _delete("switches"), "switches"),
    ("empty-links", _set(("links",), []), "links"),
    ("bad-link-shape", _set(("links", 0), ["h1", "s1", "s2"]), "links[0]"),
    ("link-not-list", _set(("links", 0), "h1-s1"), "links[0]"),
    ("host-not-mapping", _set(("hosts", "h1"), "10.0.0.1"), "hosts.h1"),
]


@pytest.mark.parametrize(
    "mutate, field", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_validation_errors(mutate: Callable[[dict], None], field: str) -> None:
    data = copy.deepcopy(base())
    mutate(data)
    with pytest.raises(TopologyError) as info:
        parse_topology(data, "t.yaml")
    assert info.value.source == "t.yaml"
    assert info.value.field == field, info.value.message


def test_thirty_ports_is_fine() -> None:
    data = base()
    _add_switch_with_hosts(28)(data)
    topo = parse_topology(data, "<data>")
    assert len(topo.ports("s1")) == 30


def test_hosts_in_different_subnets_are_refused_with_a_hint() -> None:
    data = base()
    data["hosts"] = {"h1": {"ip": "10.0.0.1/24"}, "h2": {"ip": "10.1.0.1/16"}}
    with pytest.raises(TopologyError) as info:
        parse_topology(data, "<data>")
    assert info.value.field == "hosts.h2.ip" and "one subnet" in info.value.message
    data["hosts"] = {"h1": {"ip": "10.0.0.1/16"}, "h2": {"ip": "10.0.9.1/16"}}
    assert parse_topology(data, "<data>").host("h2").prefixlen == 16


@pytest.mark.parametrize("bw", [1000.5, 5000, 0.000001, 0.05])
def test_bandwidth_tclink_cannot_shape_is_refused(bw) -> None:
    data = base()
    data["links"][1]["bw"] = bw
    with pytest.raises(TopologyError) as info:
        parse_topology(data, "<data>")
    assert info.value.field == "links[1].bw"


@pytest.mark.parametrize("option", ["delay", "loss", "jitter"])
def test_netem_options_rejected(option: str) -> None:
    data = base()
    data["links"][1][option] = "5ms"
    with pytest.raises(TopologyError) as info:
        parse_topology(data, "<data>")
    assert info.value.field == f"links[1].{option}"
    assert info.value.message == NETEM_MESSAGE
    assert NETEM_MESSAGE == (
        "the kernel here has no netem qdisc: delay/loss/jitter cannot be emulated (only bw, via htb)"
    )


def test_netem_default_rejected() -> None:
    data = base()
    data["defaults"] = {"delay": "1ms"}
    with pytest.raises(TopologyError) as info:
        parse_topology(data, "<data>")
    assert (info.value.field, info.value.message) == ("defaults.delay", NETEM_MESSAGE)


@pytest.mark.parametrize("data", [None, [], "hosts"])
def test_top_level_not_mapping(data: Any) -> None:
    with pytest.raises(TopologyError) as info:
        parse_topology(data, "<data>")
    assert info.value.field == "<root>"


# -- files ---------------------------------------------------------------------


def test_load_file_with_short_forms(tmp_path: Path) -> None:
    file = tmp_path / "mini.yaml"
    file.write_text(
        "hosts:\n  h1:\n  h2: {}\nswitches:\n  s1:\n"
        "links:\n  - [h1, s1]\n  - {a: h2, b: s1, bw: 2.5}\n"
    )
    topo = load_topology(file)
    assert (topo.name, topo.source) == ("mini", str(file))
    assert topo.links[1].bw == 2.5


@pytest.mark.parametrize(
    "text",
    ["hosts: [h1\n", "hosts:\n  h1:\n  h1:\nswitches: {s1: }\nlinks: [[h1, s1]]\n"],
    ids=["syntax", "duplicate-key"],
)
def test_yaml_errors(tmp_path: Path, text: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(TopologyError) as info:
        load_topology(file)
    assert (info.value.source, info.value.field) == (str(file), "<yaml>")


def test_empty_file(tmp_path: Path) -> None:
    file = tmp_path / "empty.yaml"
    file.write_text("# nothing\n")
    with pytest.raises(TopologyError) as info:
        load_topology(file)
    assert info.value.field == "<root>"
