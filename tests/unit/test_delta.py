"""Unit tests for the delta language (pure, no root)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexnet_lab.errors import DeltaError
from flexnet_lab.plan.diff import plan_change
from flexnet_lab.program import library
from flexnet_lab.program.delta import (AddAction, AddHeader, AddMap, AddParserState, AddTable,
                                       Delta, RemoveActions, RemoveHeader, RemoveMaps,
                                       RemoveParserStates, RemoveTables, ReplaceAction,
                                       ReplaceParserState, ReplaceTable, SetTableActions,
                                       delta_from_dict, load_delta)
from flexnet_lab.program.headers import TELEMETRY, VLAN
from flexnet_lab.program.model import (Action, Field, Header, Key, Map, Op, ParserState,
                                       Program, Stmt, Table, Transition)
from flexnet_lab.program.validate import validate

HYPOTHESIS = settings(max_examples=200, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
P = library.infrastructure()
NOP = library.NOP
ACL = Table("acl", (Key("meta.ip_proto"), Key("meta.l4_dport")), ("drop", "nop"), "nop", size=64)
TEL_STATE = ParserState("telemetry", "telemetry")


def apply_ops(program: Program, *ops: Any) -> tuple[Program, Delta]:
    return Delta(tuple(ops), "test").apply(program)


def assert_round_trip(program: Program, *ops: Any) -> Program:
    """Apply ``ops``; check the inverse restores ``program`` exactly; return the result."""
    new, inverse = apply_ops(program, *ops)
    back, _ = inverse.apply(new)
    assert back == program
    return new


# -- tables ----------------------------------------------------------------------------


def test_add_table_before_after_and_at_end() -> None:
    before = assert_round_trip(P, AddTable(ACL, before="l3_fwd", actions=(NOP,)))
    assert [s.table for s in before.control] == [None, "acl", "l3_fwd", None]
    assert before.action("nop") == NOP
    after = assert_round_trip(P, AddTable(ACL, after="l3_fwd", actions=(NOP,)))
    assert [s.table for s in after.control] == [None, "l3_fwd", "acl", None]
    end = assert_round_trip(P, AddTable(ACL, actions=(NOP,)))
    assert end.control[-1] == Stmt(table="acl")


def test_add_table_errors() -> None:
    with pytest.raises(DeltaError) as info:
        AddTable(dataclasses.replace(ACL, name="l3_fwd")).apply(P)
    assert info.value.element == "tables.l3_fwd"
    with pytest.raises(DeltaError) as info:
        AddTable(ACL, before="nope").apply(P)
    assert info.value.element == "tables.nope"
    with pytest.raises(DeltaError):
        AddTable(ACL, before="l3_fwd", after="l3_fwd").apply(P)
    with pytest.raises(DeltaError) as info:
        AddTable(ACL, actions=(dataclasses.replace(library.DROP, ops=(Op("nop"),)),)).apply(P)
    assert info.value.element == "actions.drop"


def test_delta_refuses_invalid_result() -> None:
    bad = dataclasses.replace(ACL, keys=(Key("ipv6.dst"),))
    with pytest.raises(DeltaError) as info:
        apply_ops(P, AddTable(bad, actions=(NOP,)))
    assert info.value.element == "tables.acl.keys[0]"
    with pytest.raises(DeltaError) as info:  # nop is not an action of infra
        apply_ops(P, AddTable(ACL))
    assert info.value.element == "tables.acl.actions[1]"


def test_remove_tables_restores_positions() -> None:
    two, _ = apply_ops(P, AddTable(ACL, before="l3_fwd", actions=(NOP,)),
                       AddTable(dataclasses.replace(ACL, name="acl2"), after="l3_fwd"))
    assert [s.table for s in two.control] == [None, "acl", "l3_fwd", "acl2", None]
    # table order unlike control order: the inverse must restore both
    shuffled = two.with_(tables=(two.tables[2], two.tables[0], two.tables[1]))
    for program in (two, shuffled):
        for pattern in ("acl*", "l3_fwd", "acl2", "*", "[al]*"):
            new = assert_round_trip(program, RemoveTables(pattern))
            assert {s.table for s in new.control} - {None} == {t.name for t in new.tables}


def test_remove_tables_matching_nothing() -> None:
    with pytest.raises(DeltaError) as info:
        RemoveTables("acl*").apply(P)
    assert info.value.element == "tables.acl*"


def test_replace_table_keeps_position_and_renames() -> None:
    new_t = dataclasses.replace(P.table("l3_fwd"), name="routes", size=2048)
    new = assert_round_trip(P, ReplaceTable("l3_fwd", new_t))
    assert new.control[1] == Stmt(table="routes") and new.tables == (new_t,)


def test_set_table_actions() -> None:
    with_nop = apply_ops(P, AddAction(NOP))[0]
    new = assert_round_trip(with_nop, SetTableActions("l3*", add=("nop",)))
    assert new.table("l3_fwd").actions == ("forward", "drop", "nop")
    new = assert_round_trip(with_nop, SetTableActions("l3*", add=("nop",), remove=("drop",),
                                                      default="nop"))
    assert new.table("l3_fwd").actions == ("forward", "nop")
    with pytest.raises(DeltaError) as info:
        SetTableActions("l3*", remove=("drop",)).apply(P)
    assert info.value.element == "tables.l3_fwd.default_action"
    with pytest.raises(DeltaError):
        SetTableActions("l3*", remove=("nop",)).apply(with_nop)
    with pytest.raises(DeltaError):
        SetTableActions("l3*", add=("nop",)).apply(P)


# -- actions ---------------------------------------------------------------------------


def test_actions() -> None:
    assert_round_trip(P, AddAction(NOP, index=0))
    with pytest.raises(DeltaError) as info:
        RemoveActions("forward").apply(P)
    assert info.value.element == "tables.l3_fwd.actions"
    with pytest.raises(DeltaError) as info:
        AddAction(library.DROP).apply(P)
    assert info.value.element == "actions.drop"
    out = Action("out", (("port", 16),), (Op("forward", ("$port",)),))
    new = assert_round_trip(P, ReplaceAction("forward", out))
    assert new.table("l3_fwd").actions == ("out", "drop")
    new = assert_round_trip(P, AddAction(NOP), SetTableActions("*", add=("nop",)),
                            SetTableActions("*", remove=("nop",)), RemoveActions("n*"))
    assert new == P


# -- parser ----------------------------------------------------------------------------


def test_add_parser_state_restores_after_exactly() -> None:
    op = AddParserState(TEL_STATE, "udp", (5555,), select=("udp.dport",), header=TELEMETRY)
    new = assert_round_trip(P, op)
    assert new.state("udp").transition == Transition(("udp.dport",), (((5555,), "telemetry"),))
    assert new.header("telemetry") == TELEMETRY
    # after a state that already selects: the select is kept
    vlan = ParserState("vlan", "vlan")
    new = assert_round_trip(P, AddParserState(vlan, "start", (0x8100,), header=VLAN))
    assert new.state("start").transition.cases[-1] == ((0x8100,), "vlan")


def test_add_parser_state_errors() -> None:
    with pytest.raises(DeltaError) as info:
        AddParserState(TEL_STATE, "udp", (5555,), header=TELEMETRY).apply(P)
    assert info.value.element == "parser.udp.transition.select"
    with pytest.raises(DeltaError) as info:
        AddParserState(TEL_STATE, "nope", (1,), header=TELEMETRY).apply(P)
    assert info.value.element == "parser.nope"
    with pytest.raises(DeltaError) as info:
        AddParserState(TEL_STATE, "start", (0x0800,), header=TELEMETRY).apply(P)
    assert info.value.element == "parser.start.transition.cases"
    with pytest.raises(DeltaError) as info:  # value does not fit the 16-bit select
        apply_ops(P, AddParserState(TEL_STATE, "udp", (1 << 16,), ("udp.dport",), TELEMETRY))
    assert info.value.element == "parser.udp.transition.cases[0]"


def test_remove_parser_states() -> None:
    program = P.with_(parser=tuple(
        dataclasses.replace(s, transition=dataclasses.replace(s.transition, default="tcp"))
        if s.name == "arp" else s for s in P.parser))
    validate(program)
    new = assert_round_trip(program, RemoveParserStates("tcp"))
    assert new.state("tcp") is None
    assert new.state("arp").transition.default == "accept"
    assert new.state("ipv4").transition.cases == (((5, 17), "udp"),)
    assert_round_trip(P, RemoveParserStates("[tu]*"))
    assert_round_trip(P, RemoveParserStates("a*"), RemoveParserStates("ipv4"))
    with pytest.raises(DeltaError) as info:
        RemoveParserStates("*").apply(P)
    assert info.value.element == "parser.start"


def test_replace_parser_state() -> None:
    renamed = dataclasses.replace(P.state("tcp"), name="l4_tcp")
    new = assert_round_trip(P, ReplaceParserState("tcp", renamed))
    assert new.state("ipv4").transition.cases[0] == ((5, 6), "l4_tcp")


# -- maps and headers ------------------------------------------------------------------


def test_maps() -> None:
    new = assert_round_trip(P, AddMap(Map("hits", "counter", 4)))
    assert new.map("hits") is not None
    assert_round_trip(new, RemoveMaps("hits"))
    with pytest.raises(DeltaError) as info:
        RemoveMaps("port_*").apply(P)
    assert info.value.element == "control[0].ops[0]"
    with pytest.raises(DeltaError) as info:
        AddMap(Map("port_rx", "counter", 4)).apply(P)
    assert info.value.element == "maps.port_rx"


def test_headers() -> None:
    new = assert_round_trip(P, AddHeader(TELEMETRY))
    assert_round_trip(new, RemoveHeader("telemetry"))
    with pytest.raises(DeltaError) as info:
        RemoveHeader("tcp").apply(P)
    assert info.value.element == "parser.tcp.extract"
    acl = library.acl()
    no_ipv4_state = RemoveParserStates("ipv4").apply(acl)[0]
    with pytest.raises(DeltaError) as info:
        RemoveHeader("ipv4").apply(no_ipv4_state)
    assert info.value.element == "tables.acl.keys[0]"
    with pytest.raises(DeltaError):
        RemoveHeader("nope").apply(P)


def test_delta_error_names_the_op() -> None:
    with pytest.raises(DeltaError) as info:
        apply_ops(P, AddMap(Map("hits", "counter", 4)), RemoveTables("x*"))
    assert info.value.element == "tables.x*"
    assert info.value.message.startswith("ops[1] remove_tables:")


def test_delta_refuses_invalid_program_and_non_ops() -> None:
    with pytest.raises(DeltaError):
        Delta((AddAction(NOP),)).apply(P.with_(name="bad name"))
    with pytest.raises(DeltaError) as info:
        Delta(("add_action",)).apply(P)
    assert info.value.element == "ops[0]"


# -- YAML form -------------------------------------------------------------------------

DELTA_YAML = """
name: acl-udp-9999
ops:
  - add_table: {name: acl, keys: [[meta.ip_proto, exact], [meta.l4_dport, exact]],
                actions: [drop, nop], default: nop, size: 64, before: l3_fwd}
    actions: {nop: {ops: [[nop]]}}
  - add_parser_state: {after: udp, values: [5555], select: [udp.dport],
                       state: {name: telemetry, extract: telemetry}, header: telemetry}
  - set_table_actions: {table: "l3*", add: [nop]}
  - add_map: {name: hits, kind: counter, size: 4}
  - add_header: {name: tel2, fields: [[magic, 16]]}
  - replace_table: {name: acl, table: {keys: [[meta.ip_proto, exact]], actions: [drop, nop],
                                       default: nop, size: 32}}
  - add_action: {name: mark, params: [[v, 8]], ops: [[set, ipv4.diffserv, $v]]}
  - replace_action: {name: mark, action: {name: mark2, params: [[v, 8]],
                                         ops: [[set, ipv4.ttl, $v]]}}
  - replace_parser_state: {name: telemetry, state: {extract: telemetry, default: accept}}
"""

UNDO_YAML = """
ops:
  - remove_header: tel2
  - remove_actions: mark*
  - remove_parser_states: telemetry
  - remove_tables: acl*
  - remove_maps: hits
"""


def test_yaml_delta(tmp_path: Path) -> None:
    path = tmp_path / "delta.yaml"
    path.write_text(DELTA_YAML)
    delta = load_delta(path)
    assert delta.name == "acl-udp-9999" and len(delta.ops) == 9
    assert delta.ops[0] == AddTable(ACL, before="l3_fwd", actions=(NOP,))
    new = assert_round_trip(P, *delta.ops)
    assert new.table("acl").size == 32 and new.action("mark2") is not None
    undo = delta_from_dict(yaml.safe_load(UNDO_YAML), "undo.yaml")
    assert undo.name == "undo"
    cleaned, _ = undo.apply(new)
    assert [t.name for t in cleaned.tables] == ["l3_fwd"]
    assert cleaned.state("udp").transition.cases == ()  # the select stays


@pytest.mark.parametrize("text,element", [
    ("ops: [{add_parser_state: {values: [1], state: {name: x}}}]",
     "d.yaml: ops[0].add_parser_state.after"),
    ("ops: [{add_map: {name: a}}, {add_table: {name: t, keys: [], actions: [x], default: x, "
     "size: 1, bogus: 1}}]", "d.yaml: ops[0].add_map.kind"),
    ("ops: [{add_action: {name: a}}, {add_table: {name: t, keys: [], actions: [x], default: x, "
     "bogus: 1}}]", "d.yaml: ops[1].add_table.bogus"),
    ("ops: [{remove_tables: [a]}]", "d.yaml: ops[0].remove_tables"),
    ("ops: [{remove_tables: a, remove_maps: b}]", "d.yaml: ops[0]"),
    ("ops: [{frobnicate: a}]", "d.yaml: ops[0]"),
    ("ops: []", "d.yaml: ops"),
    ("ops: [{add_header: ipv6}]", "d.yaml: ops[0].add_header"),
    ("ops: [{add_table: {name: t, keys: [], actions: [x], default: x}, actions: {x: 3}}]",
     "d.yaml: ops[0].actions.x"),
    ("ops: [{replace_table: {name: t}}]", "d.yaml: ops[0].replace_table.table"),
    ("name: [1]\nops: [{remove_maps: a}]", "d.yaml: name"),
    ("[1]", "d.yaml: <root>"),
])
def test_yaml_delta_errors(text: str, element: str) -> None:
    with pytest.raises(DeltaError) as info:
        delta_from_dict(yaml.safe_load(text), "d.yaml")
    assert info.value.element == element, info.value


def test_load_delta_missing(tmp_path: Path) -> None:
    with pytest.raises(DeltaError) as info:
        load_delta(tmp_path / "nope.yaml")
    assert info.value.element.endswith("nope.yaml: <file>")


# -- property: deltas applicable to the infrastructure program invert exactly ----------

def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """Valid pieces four times out of five."""
    return st.sampled_from((good, good, good, good, bad)).flatmap(lambda strategy: strategy)


TABLE_NAMES = mostly(st.sampled_from(["acl", "acl2", "fw"]),
                     st.sampled_from(["l3_fwd", "a" * 16, "x-y"]))
STATE_NAMES = st.sampled_from(["telemetry", "vlan", "tcp", "udp", "arp", "ipv4", "start", "x"])
FIELDS = mostly(st.sampled_from(["meta.ip_proto", "meta.l4_dport", "ipv4.src", "udp.dport"]),
                st.sampled_from(["std.ingress_port", "ipv6.dst", "meta.l3_dst"]))
ACTION_NAMES = st.sampled_from(["forward", "drop", "nop", "mark"])
MAP_NAMES = st.sampled_from(["hits", "flows", "port_rx", "port_tx"])
TABLE_PATTERNS = mostly(st.sampled_from(["l3*", "*", "acl*", "[af]*", "acl"]),
                        st.sampled_from(["nope", "L3*"]))
ACTION_PATTERNS = mostly(st.sampled_from(["nop", "n*", "mark", "m*", "[mn]*"]),
                         st.sampled_from(["forward", "*", "nope"]))
STATE_PATTERNS = mostly(st.sampled_from(["tcp", "udp", "arp", "telemetry", "[tu]*", "vlan", "?cp"]),
                        st.sampled_from(["*", "start", "nope"]))
MAP_PATTERNS = mostly(st.sampled_from(["hits", "h*", "flows"]), st.sampled_from(["port_*", "nope"]))
MARK = Action("mark", (("v", 8),), (Op("set", ("ipv4.diffserv", "$v")),))
ACTIONS = mostly(st.sampled_from([NOP, MARK, library.DROP]),
                 st.sampled_from([library.FORWARD, Action("mark", (), (Op("count", ("hits", 0)),)),
                                  Action("nop", (), (Op("pop_vlan"),))]))
HEADERS = mostly(st.sampled_from([TELEMETRY, VLAN, Header("tel2", (Field("magic", 16),))]),
                 st.sampled_from([Header("tcp", (Field("x", 8),)), Header("h", (Field("x", 7),))]))
MAPS = st.builds(Map, MAP_NAMES, mostly(st.just("counter"), st.sampled_from(["hash", "bloom"])),
                 mostly(st.integers(1, 64), st.integers(-1, 70000)))


@st.composite
def tables(draw: st.DrawFn) -> Table:
    keys = draw(st.lists(st.builds(Key, FIELDS, mostly(st.just("exact"),
                                                       st.sampled_from(["lpm", "ternary"]))),
                         min_size=1, max_size=3, unique_by=lambda k: k.field))
    actions = draw(st.lists(mostly(st.sampled_from(["drop", "nop"]), ACTION_NAMES),
                            min_size=1, max_size=3, unique=True))
    default = draw(mostly(st.sampled_from(actions), ACTION_NAMES))
    size = draw(mostly(st.sampled_from([1, 64, 256]), st.sampled_from([0, 1024])))
    return Table(draw(TABLE_NAMES), tuple(keys), tuple(actions), default, (), size)


TABLES = tables()
STATES = st.builds(ParserState, STATE_NAMES,
                   st.sampled_from([None, "telemetry", "vlan", "udp", "tel2"]))
ANCHORS = st.sampled_from([None, None, "l3_fwd", "acl", "nope"])
# (after, select, value range) that fit, plus some that do not
AFTER = mostly(st.sampled_from([("udp", ("udp.dport",), 0xFFFF), ("start", (), 0xFFFF),
                                ("tcp", ("tcp.dport",), 0xFFFF), ("arp", ("arp.oper",), 0xFFFF)]),
               st.sampled_from([("udp", (), 0xFFFF), ("ipv4", ("ipv4.ttl",), 0x1FFFF),
                                ("nope", ("udp.dport",), 1), ("tcp", ("nope.x",), 1)]))


@st.composite
def add_parser_states(draw: st.DrawFn) -> AddParserState:
    header = draw(st.one_of(st.none(), HEADERS))
    extract = header.name if header and draw(st.integers(0, 3)) else None
    state = ParserState(draw(mostly(st.sampled_from(["telemetry", "vlan", "tel2"]), STATE_NAMES)),
                        extract)
    after, select, top = draw(AFTER)
    values = (draw(st.integers(0, top)),) * max(1, len(select))
    return AddParserState(state, after, values, select, header)


OPS = st.one_of(
    st.builds(AddTable, TABLES, ANCHORS, st.none(), mostly(st.just((NOP,)), st.lists(
        ACTIONS, max_size=2).map(tuple))),
    st.builds(AddTable, TABLES, st.none(), ANCHORS, st.just((NOP, MARK))),
    st.builds(RemoveTables, TABLE_PATTERNS),
    st.builds(ReplaceTable, st.sampled_from(["l3_fwd", "acl"]), TABLES),
    st.builds(SetTableActions, TABLE_PATTERNS,
              st.lists(mostly(st.sampled_from(["drop", "forward", "nop"]), ACTION_NAMES),
                       max_size=2).map(tuple),
              mostly(st.just(()), st.lists(ACTION_NAMES, max_size=1).map(tuple)),
              st.sampled_from([None, None, "drop", "nop"])),
    st.builds(AddAction, ACTIONS),
    st.builds(RemoveActions, ACTION_PATTERNS),
    st.builds(ReplaceAction, ACTION_NAMES, ACTIONS),
    add_parser_states(),
    st.builds(RemoveParserStates, STATE_PATTERNS),
    st.builds(ReplaceParserState, STATE_NAMES, STATES),
    st.builds(AddMap, MAPS),
    st.builds(RemoveMaps, MAP_PATTERNS),
    st.builds(AddHeader, HEADERS),
    st.builds(RemoveHeader, st.sampled_from(["telemetry", "vlan", "tcp", "arp", "tel2"])),
)
# A few ops that always apply, so that longer deltas succeed often enough.
GOOD = st.sampled_from([
    AddTable(ACL, before="l3_fwd", actions=(NOP,)),
    AddParserState(TEL_STATE, "udp", (5555,), ("udp.dport",), TELEMETRY),
    AddMap(Map("hits", "counter", 4)),
    AddAction(NOP),
    AddHeader(Header("tel2", (Field("magic", 16),))),
])


def applicable(program: Program, ops: list) -> tuple[Any, ...]:
    """The ops, in order, that apply together to ``program`` (the others are dropped)."""
    kept: tuple[Any, ...] = ()
    for op in ops:
        try:
            Delta(kept + (op,)).apply(program)
        except DeltaError:
            continue
        kept += (op,)
    return kept


# The infrastructure program with one of everything added, so that removals find targets.
RICH = Delta((AddTable(ACL, before="l3_fwd", actions=(NOP,)),
              AddParserState(TEL_STATE, "udp", (5555,), ("udp.dport",), TELEMETRY),
              AddMap(Map("hits", "counter", 4)),
              AddAction(Action("mark", (), (Op("count", ("hits", 1)),))),
              AddHeader(Header("tel2", (Field("magic", 16),))))).apply(P)[0]
BASES = st.sampled_from([P, RICH])


@HYPOTHESIS
@given(BASES, st.lists(st.one_of(GOOD, OPS), min_size=1, max_size=6))
def test_deltas_invert_exactly(base: Program, ops: list) -> None:
    delta = Delta(applicable(base, ops), "random")
    new, inverse = delta.apply(base)
    validate(new)
    back, redo = inverse.apply(new)
    assert back == base
    assert plan_change(base, back).kind == "none"
    assert plan_change(new, back) == plan_change(new, base)
    assert redo.apply(back)[0] == new


@HYPOTHESIS
@given(BASES, st.lists(st.one_of(GOOD, OPS), max_size=4), st.lists(OPS, min_size=1, max_size=4))
def test_stacked_deltas_invert_exactly(base: Program, first: list, second: list) -> None:
    mid, undo_first = Delta(applicable(base, first)).apply(base)
    new, undo_second = Delta(applicable(mid, second)).apply(mid)
    assert undo_second.apply(new)[0] == mid
    assert undo_first.apply(mid)[0] == base


# -- property: malformed deltas raise only DeltaError ----------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                    st.sampled_from(["l3_fwd", "udp", "drop", "port_rx", "*", "start",
                                     "udp.dport", "meta.l3_dst"]))
JUNK = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=4), inner, max_size=2)), max_leaves=5)
PIECES = st.one_of(JUNK, TABLES, STATES, ACTIONS, HEADERS, MAPS,
                   st.builds(Table, JUNK, JUNK, JUNK, JUNK, JUNK, JUNK),
                   st.builds(ParserState, JUNK, JUNK, JUNK, JUNK),
                   st.builds(ParserState, STATE_NAMES, JUNK, JUNK,
                             st.builds(Transition, JUNK, JUNK, JUNK)),
                   st.builds(Action, ACTION_NAMES, JUNK, JUNK),
                   st.builds(Header, st.just("h"), JUNK), st.builds(Map, MAP_NAMES, JUNK, JUNK))
OP_TYPES = [AddTable, RemoveTables, ReplaceTable, SetTableActions, AddAction, RemoveActions,
            ReplaceAction, AddParserState, RemoveParserStates, ReplaceParserState, AddMap,
            RemoveMaps, AddHeader, RemoveHeader]


@st.composite
def junk_op(draw: st.DrawFn) -> Any:
    cls = draw(st.sampled_from(OP_TYPES))
    return cls(**{f.name: draw(PIECES) for f in dataclasses.fields(cls)})


@HYPOTHESIS
@given(st.lists(st.one_of(junk_op(), GOOD), min_size=1, max_size=3))
def test_malformed_deltas_raise_only_delta_error(ops: list) -> None:
    for op in ops:
        try:
            op.apply(P)
        except DeltaError:
            pass
    try:
        Delta(tuple(ops)).apply(P)
    except DeltaError:
        pass


@HYPOTHESIS
@given(st.one_of(JUNK, st.fixed_dictionaries({"ops": st.lists(st.dictionaries(
    st.sampled_from(["add_table", "remove_tables", "replace_table", "set_table_actions",
                     "add_action", "remove_actions", "replace_action", "add_parser_state",
                     "remove_parser_states", "replace_parser_state", "add_map", "remove_maps",
                     "add_header", "remove_header", "actions"]),
    st.one_of(JUNK, st.dictionaries(st.sampled_from(
        ["name", "keys", "actions", "default", "size", "after", "values", "state", "header",
         "table", "add", "remove", "select", "kind", "fields", "action", "ops", "params"]),
        JUNK, max_size=5))), min_size=1, max_size=3)})))
def test_malformed_yaml_deltas_raise_only_delta_error(data: Any) -> None:
    try:
        delta = delta_from_dict(data, "junk.yaml")
    except DeltaError as exc:
        assert exc.element.startswith("junk.yaml: ")
        return
    try:
        delta.apply(P)
    except DeltaError:
        pass
