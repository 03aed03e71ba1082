"""Coursework inputs without a lab: topology.json, runtime JSON, and runtime entries checked
against a P4Info (written here in text form, as p4c writes it for the triangle exercise's
basic.p4), and what survives a program change."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from flexnet_lab.errors import P4FileError, TopologyError
from flexnet_lab.topology.coursework import find_exercise, load_coursework, parse_coursework
from flexnet_lab.topology.loader import NETEM_MESSAGE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXERCISE = os.path.join(ROOT, "tests", "data", "exercises", "triangle")

P4INFO = """
tables {
  preamble { id: 37375156 name: "MyIngress.ipv4_lpm" alias: "ipv4_lpm" }
  match_fields { id: 1 name: "hdr.ipv4.dstAddr" bitwidth: 32 match_type: LPM }
  action_refs { id: 28792405 }
  action_refs { id: 25652968 }
  action_refs { id: 21257015 }
  size: 1024
}
actions { preamble { id: 21257015 name: "NoAction" alias: "NoAction" } }
actions { preamble { id: 25652968 name: "MyIngress.drop" alias: "drop" } }
actions {
  preamble { id: 28792405 name: "MyIngress.ipv4_forward" alias: "ipv4_forward" }
  params { id: 1 name: "dstAddr" bitwidth: 48 }
  params { id: 2 name: "port" bitwidth: 9 }
}
"""

ACL = """
tables {
  preamble { id: 44506256 name: "MyIngress.acl" alias: "acl" }
  match_fields { id: 1 name: "hdr.ipv4.srcAddr" bitwidth: 32 match_type: TERNARY }
  match_fields { id: 2 name: "hdr.ipv4.dstAddr" bitwidth: 32 match_type: TERNARY }
  match_fields { id: 3 name: "hdr.ipv4.protocol" bitwidth: 8 match_type: TERNARY }
  action_refs { id: 25652968 }
  action_refs { id: 21257015 }
  size: 256
}
"""


def _info(text=P4INFO):
    pytest.importorskip("p4.config.v1.p4info_pb2")
    from flexnet_lab.compiler.p4_user import P4Info, parse_p4info
    return P4Info(parse_p4info(text))


def test_triangle_exercise_loads_with_ports_as_written():
    topo = load_coursework(EXERCISE)
    assert [h.name for h in topo.hosts] == ["h1", "h2", "h3"]
    assert topo.host("h2").ip == "10.0.2.2" and topo.host("h2").prefixlen == 24
    assert topo.host("h1").commands[0] == "route add default gw 10.0.1.10 dev eth0"
    assert topo.host_intf == "eth0"
    assert topo.port_between("s1", "s3").number == 3
    assert topo.port_between("s3", "s1").number == 2
    assert topo.port_between("s2", "s3").number == 3
    assert topo.host_link("h3") == ("s3", 1)
    spec = topo.switch("s1").p4
    assert topo.switch("s1").target == "bmv2"
    assert spec.runtime == os.path.join(EXERCISE, "triangle-topo", "s1-runtime.json")
    assert spec.base == EXERCISE and spec.program is None


def test_exercise_folder_rules(tmp_path):
    topo_json, base = find_exercise(os.path.join(EXERCISE, "triangle-topo", "topology.json"))
    assert str(base) == EXERCISE          # the parent holds the .p4 and the Makefile
    with pytest.raises(TopologyError, match="no topology.json"):
        find_exercise(tmp_path)


def test_p4_option_names_the_program(tmp_path):
    topo = load_coursework(EXERCISE, p4=os.path.join(EXERCISE, "basic.p4"))
    assert topo.switch("s2").p4.program == os.path.join(EXERCISE, "basic.p4")
    with pytest.raises(TopologyError, match="--p4"):
        load_coursework(EXERCISE, p4=str(tmp_path / "none.p4"))


def _doc():
    with open(os.path.join(EXERCISE, "triangle-topo", "topology.json")) as fh:
        return json.load(fh)


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["links"].__setitem__(3, ["s1-p2", "s2-p2", "5ms"]), "links[3][2]",
     NETEM_MESSAGE[:30]),
    (lambda d: d["links"].__setitem__(3, ["s1-p1", "s2-p2"]), "links[3][0]", "already used"),
    (lambda d: d["links"].__setitem__(3, ["s1", "s2-p2"]), "links[3][0]", "name the switch"),
    (lambda d: d["links"].__setitem__(3, ["s1-p2", "s9-p2"]), "links[3][1]", "no switch"),
    (lambda d: d["hosts"]["h1"].__setitem__("ip", "10.0.1"), "hosts.h1.ip", "address"),
    (lambda d: d["hosts"]["h2"].__setitem__("commands", "route"), "hosts.h2.commands", "list"),
    (lambda d: d["switches"]["s2"].__setitem__("runtime_json", "nope.json"),
     "switches.s2.runtime_json", "no such file"),
    (lambda d: d["switches"]["s2"].__setitem__("cli_input", "s2-commands.txt"),
     "switches.s2.cli_input", "runtime JSON"),
    (lambda d: d.__setitem__("extra", 1), "extra", "unknown key"),
    (lambda d: d["links"].pop(0), "hosts.h1", "no link"),
])
def test_malformed_topology_json(mutate, field, words):
    d = _doc()
    mutate(d)
    with pytest.raises(TopologyError) as exc:
        parse_coursework(d, "topology.json", EXERCISE)
    assert exc.value.field == field and words in exc.value.message


def test_json_syntax_and_duplicate_keys(tmp_path):
    shutil.copytree(EXERCISE, tmp_path / "ex")
    path = tmp_path / "ex" / "triangle-topo" / "topology.json"
    path.write_text('{"hosts": {"h1": {}, "h1": {}}}')
    with pytest.raises(TopologyError, match="duplicate key") as exc:
        load_coursework(tmp_path / "ex")
    assert exc.value.field == "<json>"
    path.write_text('{"hosts": ')
    with pytest.raises(TopologyError, match="line 1") as exc:
        load_coursework(tmp_path / "ex")


# --- runtime JSON ---------------------------------------------------------------------------
def _runtime(mutate=None, name="s1-runtime.json"):
    from flexnet_lab.program.runtime_json import parse_runtime
    with open(os.path.join(EXERCISE, "triangle-topo", name)) as fh:
        d = json.load(fh)
    if mutate:
        mutate(d)
    return parse_runtime(d, name, EXERCISE)


def test_runtime_resolves_against_the_p4info():
    from flexnet_lab.compiler.p4_user import resolve_runtime
    rt = _runtime()
    assert rt.bmv2_json == os.path.join(EXERCISE, "build", "basic.json")
    res = resolve_runtime(rt, _info())
    assert res.defaults == (("MyIngress.ipv4_lpm", "MyIngress.drop", ()),)
    by_match = {e.match: e for e in res.entries}
    e = by_match[((0x0A000101, 32),)]
    assert e.action == "MyIngress.ipv4_forward" and e.args == (0x080000000111, 1)
    assert by_match[((0x0A000200, 24),)].args == (0x080000000200, 2)


def test_lpm_value_is_masked_to_its_prefix():
    from flexnet_lab.compiler.p4_user import resolve_runtime
    rt = _runtime(lambda d: d["table_entries"][2]["match"].__setitem__(
        "hdr.ipv4.dstAddr", ["10.0.2.77", 24]))
    assert ((0x0A000200, 24),) in {e.match for e in resolve_runtime(rt, _info()).entries}


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["table_entries"][1].__setitem__("table", "MyIngress.ipv4_lmp"),
     "table_entries[1].table", "no table"),
    (lambda d: d["table_entries"][1].__setitem__("action_name", "MyIngress.forward"),
     "table_entries[1].action_name", "not an action"),
    (lambda d: d["table_entries"][1]["action_params"].pop("port"),
     "table_entries[1].action_params.port", "missing"),
    (lambda d: d["table_entries"][1]["action_params"].__setitem__("port", 512),
     "table_entries[1].action_params.port", "9 bits"),
    (lambda d: d["table_entries"][1]["match"].__setitem__("hdr.ipv4.dst", ["10.0.1.1", 32]),
     "table_entries[1].match.hdr.ipv4.dst", "no key"),
    (lambda d: d["table_entries"][1]["match"].__setitem__("hdr.ipv4.dstAddr", ["10.0.1.1", 33]),
     "table_entries[1].match.hdr.ipv4.dstAddr", "prefix length"),
    (lambda d: d["table_entries"][1]["match"].__setitem__("hdr.ipv4.dstAddr", "10.0.1.1"),
     "table_entries[1].match.hdr.ipv4.dstAddr", "lpm key takes"),
    (lambda d: d["table_entries"][1].__setitem__("priority", 5),
     "table_entries[1].priority", "no priority"),
    (lambda d: d["table_entries"].append(dict(d["table_entries"][1])),
     "table_entries[4]", "same match"),
])
def test_runtime_entries_that_do_not_fit_the_program(mutate, field, words):
    from flexnet_lab.compiler.p4_user import resolve_runtime
    with pytest.raises(P4FileError) as exc:
        resolve_runtime(_runtime(mutate), _info())
    assert exc.value.source == "s1-runtime.json"
    assert exc.value.field == field and words in exc.value.message, str(exc.value)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.__setitem__("target", "tofino"), "target"),
    (lambda d: d.__setitem__("clone_session_entries", []), "clone_session_entries"),
    (lambda d: d["table_entries"][1]["match"].__setitem__("hdr.ipv4.dstAddr", ["10.0.1.x", 32]),
     "table_entries[1].match.hdr.ipv4.dstAddr"),
    (lambda d: d["table_entries"][1]["action_params"].__setitem__("dstAddr", True),
     "table_entries[1].action_params.dstAddr"),
    (lambda d: d["table_entries"][1].pop("match"), "table_entries[1].match"),
    (lambda d: d["table_entries"][0].__setitem__("match", {"hdr.ipv4.dstAddr": ["1.2.3.4", 8]}),
     "table_entries[0].match"),
    (lambda d: d["table_entries"][1].__setitem__("priority", 0), "table_entries[1].priority"),
    (lambda d: d.__setitem__("table_entries", {}), "table_entries"),
    (lambda d: d.__setitem__("multicast_group_entries", [{"multicast_group_id": 0,
                                                          "replicas": []}]),
     "multicast_group_entries[0].multicast_group_id"),
])
def test_runtime_file_form(mutate, field):
    with pytest.raises(P4FileError) as exc:
        _runtime(mutate)
    assert exc.value.field == field, str(exc.value)


def test_ternary_needs_priority_and_carry_keeps_lpm():
    from flexnet_lab.compiler.p4_user import carried, resolve_runtime
    old, new = _info(), _info(P4INFO + ACL)
    rt = _runtime(name="s1-runtime-acl.json")
    acl = resolve_runtime(rt, new)
    (e,) = acl.entries
    assert e.match == ((0x0A000303, 0xFFFFFFFF), (0, 0), (17, 255)) and e.priority == 10
    with pytest.raises(P4FileError, match="priority"):
        resolve_runtime(_runtime(lambda d: d["table_entries"][0].pop("priority"),
                                 "s1-runtime-acl.json"), new)
    lpm = resolve_runtime(_runtime(), old).entries
    kept, dropped, tables = carried(old, new, lpm)
    assert set(kept) == set(lpm) and not dropped and tables == ["MyIngress.ipv4_lpm"]
    # back to the first program: the acl's entries go, the lpm entries stay
    kept, dropped, _ = carried(new, old, set(lpm) | set(acl.entries))
    assert set(kept) == set(lpm) and dropped == {"MyIngress.acl": 1}


def test_p4_switch_in_a_yaml_topology(tmp_path):
    from flexnet_lab.topology.loader import load_topology
    (tmp_path / "prog.p4").write_text("// stand-in\n")
    (tmp_path / "s1.json").write_text("{}")
    f = tmp_path / "t.yaml"
    f.write_text("hosts: {h1: , h2: }\nswitches: {s1: {p4: prog.p4, runtime: s1.json}}\n"
                 "links: [[h1, s1], [h2, s1]]\n")
    s1 = load_topology(f).switch("s1")
    assert s1.target == "bmv2" and s1.p4.program == str(tmp_path / "prog.p4")
    f.write_text("hosts: {h1: }\nswitches: {s1: {target: ebpf, p4: prog.p4}}\nlinks: [[h1, s1]]\n")
    with pytest.raises(TopologyError) as exc:
        load_topology(f)
    assert exc.value.field == "switches.s1.target"
