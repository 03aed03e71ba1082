"""Unit tests for program validation and the YAML form (pure, no root)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexnet_lab.errors import ProgramError
from flexnet_lab.program import library
from flexnet_lab.program.headers import LIBRARY, TELEMETRY
from flexnet_lab.program.model import (Action, Field, Header, Key, Map, Op, Program, Stmt,
                                       Transition)
from flexnet_lab.program.validate import check_target, validate
from flexnet_lab.program.yaml_form import (load_program, program_from_dict, program_to_dict,
                                           program_to_yaml)

PROGRAMS: dict[str, Callable[[], Program]] = {"infra": library.infrastructure,
                                              **library.HOST_PROGRAMS}
HYPOTHESIS = settings(max_examples=200, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])


# -- helpers ---------------------------------------------------------------------------


def infra(**changes: Any) -> Program:
    return library.infrastructure().with_(**changes)


def with_state(program: Program, name: str, /, **changes: Any) -> Program:
    parser = tuple(dataclasses.replace(s, **changes) if s.name == name else s
                   for s in program.parser)
    return program.with_(parser=parser)


def with_transition(program: Program, name: str, /, **changes: Any) -> Program:
    tr = dataclasses.replace(program.state(name).transition, **changes)
    return with_state(program, name, transition=tr)


def with_map(program: Program, name: str, /, **changes: Any) -> Program:
    return program.with_(maps=tuple(dataclasses.replace(m, **changes) if m.name == name else m
                                    for m in program.maps))


def with_table(program: Program, name: str, /, **changes: Any) -> Program:
    return program.with_(tables=tuple(dataclasses.replace(t, **changes) if t.name == name
                                      else t for t in program.tables))


def with_action(program: Program, action: Action) -> Program:
    others = tuple(a for a in program.actions if a.name != action.name)
    return program.with_(actions=others + (action,))


def with_control_op(program: Program, op: Op) -> Program:
    return program.with_(control=(Stmt(ops=(op,)),) + program.control[1:])


P = library.infrastructure()
FWD = library.FORWARD

INVALID: list[tuple[str, Callable[[], Program], str]] = [
    ("bad program name", lambda: infra(name="bad-name"), "name"),
    ("name too long", lambda: with_table(
        infra(control=P.control[:1] + (Stmt(table="a" * 16),) + P.control[2:]),
        "l3_fwd", name="a" * 16), "tables[0].name"),
    ("duplicate map", lambda: infra(maps=P.maps + (Map("port_rx", "counter", 1),)),
     "maps.port_rx"),
    ("zero-bit field", lambda: infra(headers=P.headers + (Header("tel", (Field("a", 0),)),)),
     "headers.tel.fields[0]"),
    ("header not whole bytes", lambda: infra(
        headers=P.headers + (Header("tel", (Field("a", 7),)),)), "headers.tel"),
    ("header too big", lambda: infra(
        headers=P.headers + (Header("big", tuple(Field(f"f{i}", 64) for i in range(9))),)),
     "headers.big"),
    ("reserved header name", lambda: infra(headers=P.headers + (Header("meta", (Field("a", 8),)),)),
     "headers.meta"),
    ("metadata field too wide", lambda: infra(metadata=P.metadata + (Field("wide", 65),)),
     "metadata.wide"),
    ("empty parser", lambda: infra(parser=()), "parser"),
    ("start is not first", lambda: infra(parser=P.parser[1:] + P.parser[:1]), "parser.ipv4"),
    ("unknown extract", lambda: with_state(P, "tcp", extract="vlan"), "parser.tcp.extract"),
    ("header extracted twice", lambda: with_state(P, "arp", extract="ipv4"), "parser.arp.extract"),
    ("unknown transition target", lambda: with_transition(
        P, "start", cases=P.state("start").transition.cases + (((0x86DD,), "ipv6"),)),
     "parser.start.transition.cases[2]"),
    ("case value count", lambda: with_transition(P, "ipv4", cases=(((5,), "tcp"),)),
     "parser.ipv4.transition.cases[0]"),
    ("case value too wide", lambda: with_transition(P, "start", cases=(((0x10000,), "ipv4"),)),
     "parser.start.transition.cases[0]"),
    ("unknown select field", lambda: with_transition(P, "start", select=("ethernet.type",)),
     "parser.start.transition.select[0]"),
    ("bad default target", lambda: with_transition(P, "tcp", default="nowhere"),
     "parser.tcp.transition.default"),
    ("parser cycle", lambda: with_transition(P, "tcp", default="ipv4"), "parser.tcp.transition"),
    ("sets target not meta", lambda: with_state(P, "tcp", sets=(("ipv4.ttl", "tcp.sport"),)),
     "parser.tcp.sets[0]"),
    ("sets source too wide", lambda: with_state(P, "tcp", sets=(("meta.ip_proto", "tcp.seq"),)),
     "parser.tcp.sets[0]"),
    ("unknown map kind", lambda: with_map(P, "port_rx", kind="bloom"), "maps.port_rx.kind"),
    ("map size zero", lambda: with_map(P, "port_rx", size=0), "maps.port_rx.size"),
    ("map size is a string", lambda: with_map(P, "port_rx", size="32"), "maps.port_rx.size"),
    ("sketch rows", lambda: with_map(library.count_min(), "cms", rows=9), "maps.cms.rows"),
    ("meter rate", lambda: with_map(library.rate_limiter(), "buckets", rate=0),
     "maps.buckets.rate"),
    ("hash key bits", lambda: with_map(library.flow_counter(), "flows", key_bits=321),
     "maps.flows.key_bits"),
    ("too many params", lambda: with_action(P, dataclasses.replace(
        FWD, params=tuple((f"p{i}", 8) for i in range(5)))), "actions.forward.params"),
    ("param too wide", lambda: with_action(P, dataclasses.replace(FWD, params=(("port", 65),))),
     "actions.forward.params[0]"),
    ("unknown op", lambda: with_action(P, dataclasses.replace(FWD, ops=(Op("teleport"),))),
     "actions.forward.ops[0]"),
    ("op arg count", lambda: with_action(P, dataclasses.replace(FWD, ops=(Op("forward"),))),
     "actions.forward.ops[0]"),
    ("unknown param", lambda: with_action(P, dataclasses.replace(
        FWD, ops=(Op("forward", ("$out",)),))), "actions.forward.ops[0].args[0]"),
    ("unknown field arg", lambda: with_action(P, dataclasses.replace(
        FWD, ops=(Op("forward", ("ipv4.nope",)),))), "actions.forward.ops[0].args[0]"),
    ("set on std", lambda: with_action(P, Action("drop", (), (Op("set", ("std.egress_port", 1)),))),
     "actions.drop.ops[0].args[0]"),
    ("set value too wide", lambda: with_action(
        P, Action("drop", (), (Op("set", ("ipv4.ttl", 256)),))),
     "actions.drop.ops[0].args[1]"),
    ("count on a hash map", lambda: with_control_op(
        infra(maps=P.maps + (Map("h", "hash", 4),)), Op("count", ("h", 0))),
     "control[0].ops[0].args[0]"),
    ("unknown map", lambda: with_control_op(P, Op("count", ("nomap", 0))),
     "control[0].ops[0].args[0]"),
    ("count index beyond size", lambda: with_control_op(P, Op("count", ("port_rx", 32))),
     "control[0].ops[0].args[1]"),
    ("key wider than map", lambda: with_map(library.rate_limiter(), "buckets", key_bits=16),
     "control[1].ops[0].args[1]"),
    ("param in control", lambda: with_control_op(P, Op("count", ("port_rx", "$port"))),
     "control[0].ops[0].args[1]"),
    ("table without keys", lambda: with_table(P, "l3_fwd", keys=()), "tables.l3_fwd.keys"),
    ("lpm with two keys", lambda: with_table(
        P, "l3_fwd", keys=(Key("meta.l3_dst", "lpm"), Key("meta.ip_proto"))), "tables.l3_fwd.keys"),
    ("unknown match kind", lambda: with_table(P, "l3_fwd", keys=(Key("meta.l3_dst", "range"),)),
     "tables.l3_fwd.keys[0]"),
    ("unknown key field", lambda: with_table(P, "l3_fwd", keys=(Key("ipv6.dst", "lpm"),)),
     "tables.l3_fwd.keys[0]"),
    ("ternary too big", lambda: with_table(library.acl(), "acl", size=257), "tables.acl.size"),
    ("table too big", lambda: with_table(P, "l3_fwd", size=65537), "tables.l3_fwd.size"),
    ("no actions", lambda: with_table(P, "l3_fwd", actions=()), "tables.l3_fwd.actions"),
    ("unknown table action", lambda: with_table(P, "l3_fwd", actions=("forward", "nop")),
     "tables.l3_fwd.actions[1]"),
    ("default not listed", lambda: with_table(P, "l3_fwd", actions=("forward",)),
     "tables.l3_fwd.default_action"),
    ("default args count", lambda: with_table(P, "l3_fwd", default_action="forward"),
     "tables.l3_fwd.default_args"),
    ("unknown applied table", lambda: infra(control=P.control + (Stmt(table="acl"),)),
     "control[3].table"),
    ("table applied twice", lambda: infra(control=P.control + (Stmt(table="l3_fwd"),)),
     "control[3].table"),
    ("table never applied", lambda: infra(control=P.control[:1] + P.control[2:]),
     "tables.l3_fwd"),
    ("stmt with table and ops", lambda: infra(
        control=(Stmt(table="l3_fwd", ops=(Op("drop"),)),)), "control[0]"),
    ("None instead of a tuple", lambda: infra(tables=None), "tables"),
    ("list element is not a Map", lambda: infra(maps=("port_rx",)), "maps[0]"),
]


# -- library ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_library_programs_validate(name: str) -> None:
    program = PROGRAMS[name]()
    assert validate(program) is program


@pytest.mark.parametrize("case,make,element", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_programs_name_the_element(case: str, make: Callable[[], Program],
                                           element: str) -> None:
    with pytest.raises(ProgramError) as info:
        validate(make())
    assert info.value.element == element, info.value


def test_parser_cycle_is_named() -> None:
    with pytest.raises(ProgramError, match="ipv4 -> tcp -> ipv4"):
        validate(with_transition(P, "tcp", default="ipv4"))


def test_not_a_program() -> None:
    with pytest.raises(ProgramError):
        validate("infra")  # type: ignore[arg-type]


def test_check_target() -> None:
    caps = {"forward", "drop", "count", "lpm", "exact"}
    check_target(P, caps)
    with pytest.raises(ProgramError) as info:
        check_target(library.rate_limiter(), caps)
    assert info.value.element == "control[1].ops[0]"
    assert "rate_limit" in info.value.message
    with pytest.raises(ProgramError) as info:
        check_target(library.acl(), caps | {"nop"})
    assert info.value.element == "tables.acl.keys[0]"


# -- YAML form -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_yaml_round_trip(name: str) -> None:
    program = PROGRAMS[name]()
    assert program_from_dict(program_to_dict(program), name) == program
    assert program_from_dict(yaml.safe_load(program_to_yaml(program)), name) == program


def test_round_trip_of_user_header() -> None:
    tel = Header("tel", (Field("magic", 16), Field("hops", 8), Field("pad", 8)))
    program = infra(headers=P.headers + (tel,))
    data = program_to_dict(program)
    assert data["headers"][-1] == {"name": "tel", "fields": [["magic", 16], ["hops", 8],
                                                             ["pad", 8]]}
    assert data["headers"][0] == "ethernet"
    assert program_from_dict(data) == program


EXAMPLE = """
name: my_prog
headers: [ethernet, ipv4, udp, {name: tel, fields: [[magic, 16], [hop_count, 8], [pad, 8]]}]
metadata: {l3_dst: 32}
parser:
  - {name: start, extract: ethernet, select: [ethernet.ethertype], cases: {0x0800: ipv4}}
  - {name: ipv4, extract: ipv4, select: [ipv4.protocol], cases: [[[17], udp]],
     sets: [[meta.l3_dst, ipv4.dst]]}
  - {name: udp, extract: udp, select: [udp.dport], cases: [[5555, tel]]}
  - {name: tel, extract: tel, default: accept}
maps:
  pkts: {kind: counter, size: 1}
  flows: {kind: hash, size: 64, key_bits: 64}
actions:
  forward: {params: [[port, 16]], ops: [[forward, $port]]}
  drop: {ops: [drop]}
tables:
  l3_fwd: {keys: [[meta.l3_dst, lpm]], actions: [forward, drop], default: drop,
           default_args: [], size: 1024}
control:
  - {ops: [[count, pkts, 0], [map_add, flows, [ipv4.src, ipv4.dst]]]}
  - {apply: l3_fwd}
"""


def test_example_yaml() -> None:
    program = program_from_dict(yaml.safe_load(EXAMPLE), "my.yaml")
    assert program.state("start").transition.cases == (((0x0800,), "ipv4"),)
    assert program.state("udp").transition.cases == (((5555,), "tel"),)
    assert program.control[0].ops[1] == Op("map_add", ("flows", ("ipv4.src", "ipv4.dst")))
    assert program.action("drop").ops == (Op("drop"),)
    assert program.header("tel").bits == 32
    assert program_from_dict(program_to_dict(program)) == program


def _example(**changes: Any) -> dict:
    data = yaml.safe_load(EXAMPLE)
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return data


@pytest.mark.parametrize("changes,element", [
    ({"tables__l3_fwd__size": 0}, "my.yaml: tables.l3_fwd.size"),
    ({"tables__l3_fwd__sise": 1}, "my.yaml: tables.l3_fwd.sise"),
    ({"tables__l3_fwd": [1, 2]}, "my.yaml: tables.l3_fwd"),
    ({"maps__pkts__kind": "bloom"}, "my.yaml: maps.pkts.kind"),
    ({"metadata": [1]}, "my.yaml: metadata"),
    ({"parser__1__sets": [["meta.l3_dst"]]}, "my.yaml: parser[1].sets[0]"),
    ({"headers__3__fields": "magic"}, "my.yaml: headers[3].fields"),
    ({"headers__0": "ipv6"}, "my.yaml: headers[0]"),
    ({"control__1": {"apply": "l3_fwd", "when": 1}}, "my.yaml: control[1].when"),
    ({"actions__forward__ops": [[]]}, "my.yaml: actions.forward.ops[0]"),
    ({"actions__forward__ops": [["forward", {"a": 1}]]}, "my.yaml: actions.forward.ops[0][1]"),
    ({"name": None}, "my.yaml: name"),
], ids=lambda v: str(v))
def test_yaml_errors_name_the_element(changes: dict, element: str) -> None:
    with pytest.raises(ProgramError) as info:
        program_from_dict(_example(**changes), "my.yaml")
    assert info.value.element == element, info.value


def test_yaml_root_must_be_a_mapping() -> None:
    with pytest.raises(ProgramError) as info:
        program_from_dict([1, 2], "my.yaml")
    assert info.value.element == "my.yaml: <root>"


def test_load_program_by_name_and_file(tmp_path: Path) -> None:
    assert load_program("infra") == library.infrastructure()
    assert load_program("acl") == library.acl()
    path = tmp_path / "mine.yaml"
    path.write_text(EXAMPLE)
    assert load_program(path).name == "my_prog"
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: a\nname: b\n")
    with pytest.raises(ProgramError) as info:
        load_program(dup)
    assert info.value.element == f"{dup}: <yaml>"
    with pytest.raises(ProgramError) as info:
        load_program(tmp_path / "missing.yaml")
    assert info.value.element.endswith("missing.yaml: <file>")


# -- property: validation never raises anything but ProgramError -----------------------

NAMES = ["start", "ipv4", "udp", "tcp", "l3_fwd", "forward", "drop", "port_rx", "accept",
         "meta.l3_dst", "ipv4.dst", "std.ingress_port", "$port", "lpm", "ternary", "counter"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2, 70),
                    st.floats(allow_nan=True), st.text(max_size=6), st.sampled_from(NAMES),
                    st.just(1 << 4096))
JUNK = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=4), inner, max_size=2),
    st.builds(Field, inner, inner), st.builds(Key, inner, inner), st.builds(Op, inner, inner),
    st.builds(Transition, inner, inner, inner)), max_leaves=6)


@st.composite
def mutated(draw: st.DrawFn, value: Any = None, depth: int = 6) -> Any:
    """``value`` (a library program by default) with one random part replaced by junk."""
    if value is None:
        value = PROGRAMS[draw(st.sampled_from(sorted(PROGRAMS)))]()
    if depth and dataclasses.is_dataclass(value) and draw(st.integers(0, 4)):
        name = draw(st.sampled_from([f.name for f in dataclasses.fields(value)]))
        part = draw(mutated(getattr(value, name), depth - 1))
        return dataclasses.replace(value, **{name: part})
    if depth and isinstance(value, tuple) and value and draw(st.integers(0, 4)):
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + (draw(mutated(value[i], depth - 1)),) + value[i + 1:]
    return draw(JUNK)


@HYPOTHESIS
@given(mutated())
def test_validate_raises_only_program_error_on_mutants(program: Any) -> None:
    try:
        validate(program)
    except ProgramError as exc:
        assert isinstance(exc.element, str) and exc.element


@HYPOTHESIS
@given(st.builds(Program, JUNK, JUNK, JUNK, JUNK, JUNK, JUNK, JUNK, JUNK))
def test_validate_raises_only_program_error_on_junk(program: Program) -> None:
    with pytest.raises(ProgramError):
        validate(program)


@HYPOTHESIS
@given(st.dictionaries(st.sampled_from(["name", "headers", "metadata", "parser", "maps",
                                        "actions", "tables", "control", "other"]),
                       JUNK, max_size=8))
def test_program_from_dict_raises_only_program_error(data: dict) -> None:
    try:
        program_from_dict(data, "junk.yaml")
    except ProgramError as exc:
        assert exc.element.startswith("junk.yaml: ")


def test_telemetry_is_a_library_header() -> None:
    assert LIBRARY["telemetry"] == TELEMETRY
    program = infra(headers=P.headers + (TELEMETRY,))
    assert program_to_dict(program)["headers"][-1] == "telemetry"
