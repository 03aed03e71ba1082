"""Unit tests for the P4_16 (v1model/bmv2) backend: the checked-in p4src/infra.p4 is the
generator's output, generated programs are well formed, and (marker p4c) they compile."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Callable

import pytest

from flexnet_lab.compiler import p4 as p4mod
from flexnet_lab.compiler.p4 import P4_CAPABILITIES, generate_p4, write_p4
from flexnet_lab.errors import ProgramError
from flexnet_lab.program import library
from flexnet_lab.program.headers import (ETHERNET, ETHERTYPE_IPV4, ETHERTYPE_VLAN, IPPROTO_UDP,
                                         IPV4, UDP, VLAN)
from flexnet_lab.program.model import (Action, Key, Map, Op, ParserState, Program, Stmt, Table,
                                       Transition)
from flexnet_lab.program.validate import check_target

REPO = Path(__file__).resolve().parents[2]
VLAN_PROGRAMS = {"vlan_tag", "vlan_untag"}


def _with_vlan(program: Program) -> Program:
    """A VLAN library program plus the vlan header (parsed after ethernet)."""
    start = program.parser[0]
    tr = start.transition
    cases = (((ETHERTYPE_VLAN,), "vlan"),) + tr.cases
    start = ParserState(start.name, start.extract, start.sets,
                        Transition(tr.select, cases, tr.default))
    vlan = ParserState("vlan", "vlan", transition=Transition(
        ("vlan.ethertype",), (((ETHERTYPE_IPV4,), "ipv4"),)))
    headers = (program.headers[0], VLAN) + program.headers[1:]
    return program.with_(headers=headers, parser=(start, vlan) + program.parser[1:])


def kitchen_sink() -> Program:
    """Every op (in actions and in control statements), every match kind, std keys,
    explicit reject transitions and a vlan header that is not parsed."""
    parser = (
        ParserState("start", "ethernet", transition=Transition(
            ("ethernet.ethertype",), (((ETHERTYPE_IPV4,), "ipv4"),), "reject")),
        ParserState("ipv4", "ipv4",
                    sets=(("meta.l3_dst", "ipv4.dst"), ("meta.ip_proto", "ipv4.protocol")),
                    transition=Transition(("ipv4.ihl", "ipv4.protocol"),
                                          (((5, IPPROTO_UDP), "udp"),
                                           ((6, IPPROTO_UDP), "reject")))),
        ParserState("udp", "udp", sets=(("meta.l4_sport", "udp.sport"),
                                        ("meta.l4_dport", "udp.dport"))),
    )
    maps = (Map("ctr", "counter", 8), Map("regs", "register", 16),
            Map("flows", "hash", 256, key_bits=64),
            Map("cms", "sketch", 64, key_bits=320, rows=8),
            Map("bkt", "meter", 32, key_bits=32, rate=1000, burst=1500))
    actions = (
        Action("fwd", (("port", 16),), (Op("forward", ("$port",)),)),
        Action("rewrite", (("ttl", 8), ("dst", 48)),
               (Op("set", ("ipv4.ttl", "$ttl")), Op("set", ("ethernet.dst", "$dst")),
                Op("set", ("meta.l3_dst", 7)), Op("count", ("ctr", "$ttl")))),
        Action("tag", (("vid", 12),), (Op("push_vlan", ("$vid",)), Op("forward", (2,)))),
        Action("untag", (), (Op("pop_vlan"), Op("reg_write", ("regs", 3, "std.pkt_len")))),
        Action("police", (("k", 32),),
               (Op("rate_limit", ("bkt", "$k")), Op("map_add", ("flows", "$k")),
                Op("sketch_add", ("cms", ("ipv4.src", "meta.l4_dport"))))),
        Action("drop", (), (Op("drop"),)),
        Action("nop", (), (Op("nop"),)),
    )
    tables = (
        Table("by_port", (Key("std.ingress_port", "exact"), Key("vlan.vid", "ternary")),
              ("fwd", "tag", "untag", "drop"), "fwd", (1,), size=16),
        Table("l3", (Key("ipv4.dst", "lpm"),), ("rewrite", "police", "nop"), "rewrite",
              (64, 0x0A0B0C0D0E0F)),
        Table("l4", (Key("udp.dport"), Key("ipv4.src"), Key("std.egress_port")),
              ("nop", "drop"), "nop"),
    )
    control = (
        Stmt(ops=(Op("count", ("ctr", "std.ingress_port")), Op("set", ("ipv4.diffserv", 3)))),
        Stmt(table="by_port"), Stmt(table="l3"), Stmt(table="l4"),
        Stmt(ops=(Op("map_add", ("flows", ("ipv4.src", "ipv4.dst"))),
                  Op("rate_limit", ("bkt", ("ipv4.src",))),
                  Op("sketch_add", ("cms", library.FIVE_TUPLE)), Op("pop_vlan"),
                  Op("push_vlan", (5,)), Op("reg_write", ("regs", "std.ingress_port", 99)),
                  Op("forward", ("meta.l4_dport",)), Op("count", ("ctr", "std.egress_port")))),
    )
    return Program("sink", (ETHERNET, VLAN, IPV4, UDP), library._META, parser, maps, actions,
                   tables, control)


GOOD: dict[str, Callable[[], Program]] = {
    "infra": library.infrastructure,
    **{n: f for n, f in library.HOST_PROGRAMS.items() if n not in VLAN_PROGRAMS},
    **{f"{n}+vlan": (lambda f=f: _with_vlan(f())) for n, f in library.HOST_PROGRAMS.items()
       if n in VLAN_PROGRAMS},
    "kitchen_sink": kitchen_sink,
}


# -- a small P4 tokenizer ----------------------------------------------------------------

TOKEN = re.compile(r"""
    (?P<comment>/\*.*?\*/|//[^\n]*|\#[^\n]*)
  | (?P<string>"[^"]*")
  | (?P<number>\d+[ws]\d\w*|\d\w*)
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<punct>&&|\|\||==|!=|<=|>=|[{}()\[\];:,.<>=+\-*/!~&|^?@])
  | (?P<space>\s+)
""", re.VERBOSE | re.DOTALL)


def tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        assert m, f"cannot tokenize at {text[pos:pos + 40]!r}"
        if m.lastgroup not in ("comment", "space"):
            out.append(m.group())
        pos = m.end()
    return out


def _skip_balanced(toks: list[str], i: int, open_: str, close: str) -> int:
    """toks[i] is `open_`; return the index after its matching `close`."""
    depth = 0
    while True:
        if toks[i] == open_:
            depth += 1
        elif toks[i] == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1


def parser_graph(text: str) -> tuple[list[str], list[str]]:
    """(declared states, transition targets) of the parser."""
    toks = tokens(text)
    states, targets = [], []
    i = toks.index("parser")
    end = _skip_balanced(toks, toks.index("{", i), "{", "}")
    while i < end:
        if toks[i] == "state":
            states.append(toks[i + 1])
            i += 2
        elif toks[i] == "transition":
            if toks[i + 1] == "select":
                j = _skip_balanced(toks, i + 2, "(", ")")
                assert toks[j] == "{"
                close = _skip_balanced(toks, j, "{", "}") - 1
                j += 1
                while j < close:
                    colon = toks.index(":", j)
                    targets.append(toks[colon + 1])
                    assert toks[colon + 2] == ";"
                    j = colon + 3
                i = close + 1
            else:
                targets.append(toks[i + 1])
                assert toks[i + 2] == ";"
                i += 3
        else:
            i += 1
    return states, targets


# -- (a) the checked-in P4 is the generator's ----------------------------------------------

def test_checked_in_infra_p4_is_generated():
    checked_in = (REPO / "p4src" / "infra.p4").read_bytes()
    assert checked_in == generate_p4(library.infrastructure()).encode(), (
        "p4src/infra.p4 differs from the generator: run "
        "`flexnet compile infra --target p4 -o p4src`")


def test_p4src_readme_exists():
    assert (REPO / "p4src" / "README.md").is_file()


# -- (b) every library program -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(GOOD))
def test_generated_program_has_every_element(name):
    program = GOOD[name]()
    text = generate_p4(program)
    toks = tokens(text)
    assert text.startswith("/* FlexNet Lab:")
    assert "#include <core.p4>" in text and "#include <v1model.p4>" in text
    for t in program.tables:
        assert f"table {t.name} {{" in text
        assert f"{t.name}.apply();" in text
        for k in t.keys:
            assert f'@name("{k.field}")' in text
    for a in program.actions:
        assert f"action {a.name}(" in text
    for st in program.parser:
        assert f"state {st.name} {{" in text
    for h in program.headers:
        assert f"header {h.name}_t {{" in text
        assert f"packet.emit(hdr.{h.name});" in text
    for m in program.maps:
        assert any(re.search(rf"\b{re.escape(n)};", text) for n in p4mod.map_objects(m))
    for f in program.metadata:
        assert f"bit<{f.bits}> {f.name};" in text
    assert toks.count("apply") >= 5            # five controls (+ table applies)
    assert toks.count("{") == toks.count("}")
    assert toks.count("(") == toks.count(")")
    assert "V1Switch(ParserImpl(), verifyChecksum(), ingress(), egress(), computeChecksum(), " \
           "DeparserImpl()) main;" in text
    assert text == generate_p4(program)        # deterministic


@pytest.mark.parametrize("name", sorted(VLAN_PROGRAMS))
def test_vlan_ops_need_a_vlan_header(name):
    with pytest.raises(ProgramError) as exc:
        generate_p4(library.HOST_PROGRAMS[name]())
    op = "push_vlan" if name == "vlan_tag" else "pop_vlan"
    assert op in exc.value.message and exc.value.element == "control[1].ops[0]"


def test_vlan_programs_with_the_header():
    tag = generate_p4(_with_vlan(library.vlan_tag()))
    assert "hdr.vlan.setValid();" in tag and "hdr.vlan.vid = 12w100;" in tag
    assert "hdr.ethernet.ethertype = 16w0x8100;" in tag
    untag = generate_p4(_with_vlan(library.vlan_untag()))
    assert "hdr.vlan.setInvalid();" in untag
    assert "hdr.ethernet.ethertype = hdr.vlan.ethertype;" in untag


def test_unparsed_vlan_is_emitted_after_ethernet():
    text = generate_p4(kitchen_sink())
    emits = re.findall(r"packet\.emit\(hdr\.(\w+)\);", text)
    assert emits[:5] == ["ethernet", "flexnet_version_tag", "vlan", "ipv4", "udp"]
    assert emits[-1] == p4mod.PROBE_TRAILER     # an oracle probe's payload, after them all


def test_capabilities_cover_every_library_program():
    for factory in [library.infrastructure, *library.HOST_PROGRAMS.values()]:
        check_target(factory(), P4_CAPABILITIES)


def test_infra_semantics():
    text = generate_p4(library.infrastructure())
    # a parser error drops before anything runs; the drop verdict covers "never forwarded"
    assert "if (standard_metadata.parser_error != error.NoError) {" in text
    assert "if (std.drop == 1w1 || std.egress_port == 16w0) {" in text
    assert "standard_metadata.egress_spec = (bit<9>)std.egress_port;" in text
    # port_tx counts after l3_fwd, with the 16-bit egress port (0 when dropped)
    body = text[text.index("if (standard_metadata.parser_error"):]
    assert (body.index("= (bit<32>)std.ingress_port;")
            < body.index("port_rx_packets.write(")
            < body.index("l3_fwd.apply();")
            < body.index("= (bit<32>)std.egress_port;")
            < body.index("port_tx_packets.write(")
            < body.index("if (std.drop == 1w1"))
    # counters are register pairs: PI's reconcile cannot replay P4 counter entries
    assert "register<bit<64>>(32) port_rx_packets;" in text
    assert "register<bit<64>>(32) port_rx_bytes;" in text
    assert "default_action = drop();" in text and "size = 1024;" in text
    assert "meta.l3_dst: lpm" in text
    assert "action forward(bit<16> port) {" in text
    assert "standard_metadata.egress_spec = (bit<9>)port;" in text
    assert "update_checksum(hdr.ipv4.isValid()" in text and "HashAlgorithm.csum16" in text
    assert "hdr.ipv4.checksum" not in text.split("update_checksum(")[1].split("},")[0]
    assert "const default_action" not in text


def test_default_action_arguments_and_guards():
    text = generate_p4(kitchen_sink())
    assert "default_action = fwd(16w1);" in text
    assert "default_action = rewrite(8w64, 48w0x0a0b0c0d0e0f);" in text
    assert "standard_metadata.ingress_port: exact @name(\"std.ingress_port\");" in text
    assert "std.egress_port: exact @name(\"std.egress_port\");" in text
    assert "if (hdr.vlan.isValid()) {\n                by_port.apply();" in text
    assert "if (hdr.udp.isValid() && hdr.ipv4.isValid()) {" in text
    assert "meter(32, MeterType.bytes) bkt;" in text
    assert "bkt.execute_meter<bit<2>>(" in text
    assert "register<bit<64>>(256) flows_packets;" in text
    assert "register<bit<64>>(512) cms;" in text           # 8 rows x 64
    for algo in re.findall(r"HashAlgorithm\.(\w+)", text):
        assert algo in ("crc32", "csum16")


def test_host_programs_hash_fields():
    text = generate_p4(library.flow_counter())
    # header fields read 0 when the header is invalid (eBPF reads its zeroed copy)
    assert re.search(r"flexnet_key_tmp(\d+) = \(hdr\.ipv4\.isValid\(\) \? hdr\.ipv4\.src : "
                     r"32w0\);", text)
    assert re.search(r"hash\(flexnet_idx_tmp\d+, HashAlgorithm\.crc32, 32w0, \{ flexnet_key_tmp\d+, "
                     r"flexnet_key_tmp\d+, meta\.ip_proto, meta\.l4_sport, meta\.l4_dport \}, "
                     r"32w4096\);", text)
    text = generate_p4(library.rate_limiter())
    assert "cir = pir = 12500000 bytes/s" in text      # rates come from the control plane


# -- (c) structure: every transition goes to a declared state --------------------------------

@pytest.mark.parametrize("name", sorted(GOOD))
def test_transitions_target_declared_states(name):
    program = GOOD[name]()
    states, targets = parser_graph(generate_p4(program))
    assert states[0] == "start"
    assert len(states) == len(set(states))
    own = {p4mod.REJECT_STATE, p4mod.PEEK_STATE, p4mod.PEEK_TAGGED_STATE, p4mod.TAG_PARSE,
           p4mod.TAG_POP, p4mod.AFTER_ETH, p4mod.PROBE_FOUND, p4mod.PROBE_AT,
           p4mod.PROBE_TRAILER}
    model = [st.name for st in program.parser]
    if p4mod.tag_support(program):   # the generator's start peeks, then the model's start
        own.add("start")
        model = [p4mod.MODEL_START if s == "start" else s for s in model]
    assert [s for s in states if s not in own and not s.startswith(p4mod.PROBE_SKIP)] == model
    for target in targets:
        assert target == "accept" or target in states, target
    assert "reject" not in targets                     # v1model ignores `transition reject`


def test_reject_becomes_a_parser_error():
    text = generate_p4(kitchen_sink())
    states, targets = parser_graph(text)
    assert p4mod.REJECT_STATE in states and p4mod.REJECT_STATE in targets
    assert "verify(false, error.NoMatch);" in text
    assert p4mod.REJECT_STATE not in generate_p4(library.infrastructure())


# -- the oracle's probe trailer ----------------------------------------------------------------

def test_probe_trailer_is_parsed_after_the_model_and_emitted_last():
    """A probe's payload is extracted where the model's parser stops (past a skip header of
    the bytes the model left unparsed), written in ingress (the version into slot[count],
    count + 1, saturating) and emitted after every model header."""
    program = library.infrastructure()
    text = generate_p4(program)
    # infra accepts after udp/tcp/arp (42 bytes: no skip), ipv4 of another protocol (34)
    # and a non-IP frame (14)
    assert p4mod._Gen(program, "switch").probe_skips() == [8, 28]
    for st in program.parser:
        if st.extract:
            size = program.header(st.extract).size
            assert f"meta.{p4mod.PROBE_LEFT} = meta.{p4mod.PROBE_LEFT} - 16w{size};" in text
    assert f"meta.{p4mod.PROBE_LEFT} = 16w42;" in text
    emits = re.findall(r"packet\.emit\(hdr\.(\w+)\);", text)
    assert emits[-3:] == ["flexnet_probe_skip_8", "flexnet_probe_skip_28", p4mod.PROBE_TRAILER]
    tr = f"hdr.{p4mod.PROBE_TRAILER}"
    for i in range(8):
        assert re.search(rf"{tr}\.count == 8w{i}\) {{\s+{tr}\.slot{i} = flexnet_reg_word;", text)
    assert f"if ({tr}.count != 8w255)" in text
    assert "flexnet_probe_records" not in text and "flexnet_probe_position" not in text


def test_a_model_parsing_less_skips_more_and_one_parsing_into_the_payload_none():
    from flexnet_lab.program.model import Field, Header
    infra = library.infrastructure()
    eth_only = infra.with_(parser=(ParserState("start", "ethernet"),))
    assert p4mod._Gen(eth_only, "switch").probe_skips() == [28]
    # an application header in the UDP payload: that path ends past the probe's payload
    # (its probes are not recorded there), only the shorter paths need skips
    app = Header("app", (Field("word", 64),))
    udp = next(st for st in infra.parser if st.name == "udp")
    deep = infra.with_(headers=infra.headers + (app,),
                       parser=tuple(ParserState(st.name, st.extract, st.sets,
                                                Transition(default="app"))
                                    if st is udp else st for st in infra.parser)
                       + (ParserState("app", "app"),))
    assert p4mod._Gen(deep, "switch").probe_skips() == [8, 28]
    assert "packet.extract(hdr.app);" in generate_p4(deep)


def _matches(keyset: str, value: int) -> bool:
    v, m = (int(x.split("w")[1], 16) for x in keyset.split(" &&& "))
    return value & m == v


@pytest.mark.parametrize("n", [86, 90, 54, 1, 1500])
def test_length_guards_match_exactly_the_shorter_frames(n):
    keys = p4mod._shorter_than(n)
    for length in range(0, 2000):
        assert any(_matches(k, length) for k in keys) == (length < n), length


def test_probe_guards_cover_the_trailer():
    """An untagged frame shorter than a probe (86 bytes) is never peeked at; after the
    lab's tag, one shorter than 90 is no probe (extracting its trailer would fail)."""
    text = generate_p4(library.infrastructure())
    start = text[text.index("state start {"):text.index(f"state {p4mod.PEEK_STATE} {{")]
    assert re.findall(r"(32w0x\w+ &&& 32w0x\w+): flexnet_model_start", start) == \
        p4mod._shorter_than(86)
    tagged = text[text.index(f"state {p4mod.PEEK_TAGGED_STATE} {{"):
                  text.index(f"state {p4mod.PROBE_FOUND} {{")]
    assert re.findall(r"\((32w0x\w+ &&& 32w0x\w+), _", tagged) == p4mod._shorter_than(90)
    # only the lab's tag (VID 0xFF0 | slot, which the parser pops) makes a tagged probe
    assert "32w0x88a80ff0 &&& 32w0xffff0ffe, 16w0x0800, 8w0x45, 8w17, 16w33999, " \
        "32w0x46585052): flexnet_probe_recognised" in tagged


# -- names and roles ------------------------------------------------------------------------

@pytest.mark.parametrize("change, element", [
    (lambda p: p.with_(maps=(Map("hash", "register", 1),) + p.maps[1:],
                       control=(Stmt(ops=(Op("reg_write", ("hash", 0, 1)),)),) + p.control[1:]),
     "maps.hash"),
    (lambda p: p.with_(actions=p.actions + (Action("acl"),)), "actions.acl"),
    (lambda p: p.with_(maps=p.maps + (Map("fl_packets", "register", 1),
                                      Map("fl", "hash", 4, key_bits=32))), "maps.fl"),
    (lambda p: p.with_(actions=(Action("drop", (("std", 8),), (Op("drop"),)),) + p.actions[1:]),
     "actions.drop.params[0]"),
])
def test_names_p4_cannot_carry(change, element):
    with pytest.raises(ProgramError) as exc:
        generate_p4(change(library.acl()))
    assert exc.value.element == element and "in P4" in exc.value.message


@pytest.mark.parametrize("name", sorted(GOOD))
def test_generated_names_cannot_clash_with_model_names(name):
    """Model names have at most 15 characters: every name the generator adds is longer
    or reserved."""
    program = GOOD[name]()
    model = ({h.name for h in program.headers} | {f.name for f in program.metadata}
             | {s.name for s in program.parser} | {m.name for m in program.maps}
             | {a.name for a in program.actions} | {t.name for t in program.tables}
             | {n for a in program.actions for n, _ in a.params}
             | {f.name for h in program.headers for f in h.fields})
    for tok in set(tokens(generate_p4(program))):
        if tok.startswith("flexnet_"):
            assert len(tok) >= 16 or tok in p4mod.GENERATED, tok
    assert not model & (p4mod.GENERATED | p4mod.P4_KEYWORDS)


def test_only_the_switch_role():
    with pytest.raises(ProgramError):
        generate_p4(library.infrastructure(), role="host")


def test_invalid_program_is_a_program_error():
    bad = library.infrastructure().with_(tables=())
    with pytest.raises(ProgramError):
        generate_p4(bad)


# -- write_p4 -----------------------------------------------------------------------------

def test_write_p4_without_p4c(tmp_path, monkeypatch):
    monkeypatch.setattr(p4mod.shutil, "which", lambda name: None)
    paths = write_p4(library.infrastructure(), str(tmp_path / "out"))
    assert paths == [str(tmp_path / "out" / "infra.p4")]
    assert Path(paths[0]).read_text() == generate_p4(library.infrastructure())


def test_write_p4_runs_p4c(tmp_path, monkeypatch):
    fake = tmp_path / "p4c-bm2-ss"
    fake.write_text("#!/bin/sh\necho \"$@\" > args.txt\n: > infra.json\n: > infra.p4info.txt\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(p4mod.shutil, "which", lambda name: str(fake))
    out = tmp_path / "out"
    paths = write_p4(library.infrastructure(), str(out))
    assert paths == [str(out / "infra.p4"), str(out / "infra.json"),
                     str(out / "infra.p4info.txt")]
    assert (out / "args.txt").read_text().split() == [
        "--p4runtime-files", "infra.p4info.txt", "-o", "infra.json", "infra.p4"]


def test_write_p4_reports_p4c_failure(tmp_path, monkeypatch):
    from flexnet_lab.errors import CompileError
    fake = tmp_path / "p4c-bm2-ss"
    fake.write_text("#!/bin/sh\necho 'infra.p4(1): error: boom' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(p4mod.shutil, "which", lambda name: str(fake))
    with pytest.raises(CompileError, match="boom"):
        write_p4(library.infrastructure(), str(tmp_path / "out"))


# -- (d) with p4c: every generated program compiles -----------------------------------------

@pytest.mark.p4c
@pytest.mark.parametrize("name", sorted(GOOD))
def test_p4c_compiles(name, tmp_path):
    paths = write_p4(GOOD[name](), str(tmp_path))
    assert len(paths) == 3
    for path in paths:
        assert os.path.getsize(path) > 0, path
    p4info = Path(paths[2]).read_text()
    program = GOOD[name]()
    for t in program.tables:
        assert f'name: "ingress.{t.name}"' in p4info
