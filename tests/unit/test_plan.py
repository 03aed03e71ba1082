"""Unit tests for the change planner (pure, no root)."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexnet_lab.errors import DeltaError
from flexnet_lab.plan.diff import ChangePlan, plan_change, plan_delta
from flexnet_lab.program import library
from flexnet_lab.program.delta import (AddAction, AddHeader, AddMap, AddParserState, AddTable,
                                       Delta, RemoveHeader, RemoveMaps, RemoveParserStates,
                                       RemoveTables, ReplaceAction, ReplaceTable,
                                       SetTableActions)
from flexnet_lab.program.headers import TELEMETRY, VLAN
from flexnet_lab.program.model import (Action, Field, Header, Key, Map, Op, ParserState,
                                       Program, Table)

P = library.infrastructure()
NOP = library.NOP
ACL = Table("acl", (Key("meta.ip_proto"),), ("drop", "nop"), "nop", size=64)
TEL = AddParserState(ParserState("telemetry", "telemetry"), "udp", (5555,), ("udp.dport",),
                     TELEMETRY)


def plan_of(*ops: object, program: Program = P) -> ChangePlan:
    return plan_delta(program, Delta(tuple(ops)))[1]


def test_identical_programs() -> None:
    plan = plan_change(P, library.infrastructure())
    assert plan.kind == "none"
    assert plan.tables_kept == ("l3_fwd",) and plan.maps_kept == ("port_rx", "port_tx")
    assert plan.explain().splitlines()[0] == "no change"


def test_default_action_change_is_entries_only() -> None:
    l3 = P.table("l3_fwd")
    plan = plan_of(ReplaceTable("l3_fwd", dataclasses.replace(
        l3, default_action="forward", default_args=(3,))))
    assert plan.kind == "entries_only"
    assert plan.tables_kept == ("l3_fwd",) and not plan.actions_removed_from


def test_add_table_is_pipeline() -> None:
    plan = plan_of(AddTable(ACL, before="l3_fwd", actions=(NOP,)))
    assert plan.kind == "pipeline"
    assert plan.tables_added == ("acl",) and plan.tables_kept == ("l3_fwd",)
    assert not plan.parser_changed and not plan.headers_changed
    assert "table acl: added" in plan.explain().splitlines()


def test_new_header_and_state_is_pipeline() -> None:
    plan = plan_of(TEL)
    assert plan.kind == "pipeline"
    assert plan.parser_changed and plan.headers_changed


def test_removed_or_changed_header_is_full_swap() -> None:
    with_tel, _ = Delta((AddHeader(TELEMETRY),)).apply(P)
    assert plan_of(RemoveHeader("telemetry"), program=with_tel).kind == "full_swap"
    changed = with_tel.with_(headers=with_tel.headers[:-1] + (
        Header("telemetry", (Field("magic", 32),)),))
    assert plan_change(with_tel, changed).kind == "full_swap"
    assert plan_change(P, P.with_(metadata=P.metadata + (Field("x", 8),))).kind == "full_swap"


def test_table_changed_and_actions_removed() -> None:
    l3 = P.table("l3_fwd")
    plan = plan_of(ReplaceTable("l3_fwd", dataclasses.replace(l3, size=2048)))
    assert plan.tables_changed == ("l3_fwd",) and plan.tables_kept == ()
    with_nop, _ = Delta((AddAction(NOP),)).apply(P)
    plan = plan_of(SetTableActions("l3*", add=("nop",), remove=("forward",)), program=with_nop)
    assert plan.kind == "pipeline"
    assert plan.actions_removed_from == {"l3_fwd": ("forward",)}
    assert "table l3_fwd: entries of action forward are deleted first" in plan.explain()


def test_action_params_change_deletes_its_entries() -> None:
    wide = Action("forward", (("port", 32),), (Op("forward", ("$port",)),))
    plan = plan_of(ReplaceAction("forward", wide))
    assert plan.actions_removed_from == {"l3_fwd": ("forward",)}
    same_params = Action("forward", (("port", 16),), (Op("drop"),))
    assert plan_of(ReplaceAction("forward", same_params)).actions_removed_from == {}


def test_maps() -> None:
    plan = plan_of(AddMap(Map("hits", "counter", 4)))
    assert plan.maps_added == ("hits",) and plan.maps_kept == ("port_rx", "port_tx")
    with_hits, _ = Delta((AddMap(Map("hits", "counter", 4)),)).apply(P)
    assert plan_of(RemoveMaps("hits"), program=with_hits).maps_removed == ("hits",)
    grown = with_hits.with_(maps=with_hits.maps[:2] + (Map("hits", "counter", 8),))
    plan = plan_change(with_hits, grown)
    assert plan.maps_changed == ("hits",) and "hits" not in plan.maps_kept
    assert "map hits: changed, its state is reset" in plan.explain()


def test_remove_tables_and_states() -> None:
    plan = plan_of(RemoveTables("l3*"), RemoveParserStates("arp"))
    assert plan.tables_removed == ("l3_fwd",) and plan.parser_changed
    assert plan.kind == "pipeline"


def test_plan_delta_returns_the_inverse() -> None:
    new, plan, inverse = plan_delta(P, Delta((TEL,), "tel"))
    assert inverse.name == "undo tel"
    back, _ = inverse.apply(new)
    assert back == P and plan_change(P, back).kind == "none"
    with pytest.raises(DeltaError):
        plan_delta(P, Delta((RemoveTables("nope"),)))


def test_explain_has_one_line_per_item() -> None:
    plan = plan_of(AddTable(ACL, actions=(NOP,)), AddMap(Map("hits", "counter", 4)), TEL)
    lines = plan.explain().splitlines()
    assert lines[0].startswith("pipeline")
    expected = (len(plan.tables_added) + len(plan.tables_kept) + len(plan.maps_added)
                + len(plan.maps_kept) + plan.parser_changed + plan.headers_changed + 1)
    assert len(lines) == expected


OPS = st.sampled_from([
    AddTable(ACL, before="l3_fwd", actions=(NOP,)), AddTable(ACL, actions=(NOP,)), TEL,
    AddParserState(ParserState("vlan", "vlan"), "start", (0x8100,), header=VLAN),
    AddMap(Map("hits", "counter", 4)), AddAction(NOP), AddHeader(TELEMETRY),
    RemoveTables("*"), RemoveParserStates("[at]*"), RemoveParserStates("udp"),
    SetTableActions("*", add=("nop",)), SetTableActions("*", remove=("forward",)),
    ReplaceTable("l3_fwd", dataclasses.replace(P.table("l3_fwd"), size=16)),
])


@settings(max_examples=200, deadline=None)
@given(st.lists(OPS, min_size=1, max_size=5))
def test_inverse_plan_returns_to_none(ops: list) -> None:
    try:
        new, plan, inverse = plan_delta(P, Delta(tuple(ops)))
    except DeltaError:
        return
    assert (plan.kind == "none") == (new == P)
    back, undo_plan, _ = plan_delta(new, inverse)
    assert back == P
    assert plan_change(P, back).kind == "none"
    assert set(undo_plan.tables_added) == set(plan.tables_removed)
    assert set(undo_plan.maps_removed) == set(plan.maps_added)
