"""P4_16 backend: a Program becomes one v1model program for bmv2 (simple_switch_grpc).

The packet behaviour is the eBPF backend's (flexnet_lab/compiler/ebpf.py); the shape of
the generated source, so a student can follow it:
  headers   - one header type per model header (``<name>_t``, bit<N> fields in order) and
              one instance of each in ``struct headers``, named like the header;
  metadata  - the program's metadata fields, plus ``flexnet_ipv4_set`` (an ipv4 field was
              set, so the checksum is recomputed; eBPF recomputes it only then too);
  parser    - one state per model state; a transition to ``reject`` goes to a state that
              records error.NoMatch, because v1model ignores an explicit ``reject``;
  ingress   - a packet with a parser error is dropped (eBPF: reject = drop) and nothing
              else runs; otherwise the control statements in order: tables applied only
              when their key headers are valid, other statements inline;
              ``std`` holds the model's std.ingress_port/std.egress_port (16 bits; bmv2's
              ports are 9) and a drop flag; a table miss runs the default action;
  verdict   - at the end of ingress: drop when dropped or std.egress_port is 0 (nothing
              forwarded the packet), else egress_spec = std.egress_port;
  checksum  - ipv4.checksum recomputed (csum16) when the ipv4 header is valid and was set;
  deparser  - every header emitted in parser order (an invalid header emits nothing).

Maps: counter -> register<bit<64>> pair <map>_packets/<map>_bytes (not a P4 counter: PI's
reconcile cannot replay counter entries); register -> register<bit<64>>; hash ->
register<bit<64>> pair <map>_packets/<map>_bytes indexed by a crc32 hash of the key (bmv2
has no exact-key hash map, so flows whose hashes collide share a slot); sketch -> one
register<bit<64>> of rows x size slots (row r at r * size, the eBPF layout); meter ->
meter(MeterType.bytes) on a crc32 hash of the key, drop on RED. Meter rates are set from
the control plane, never in P4 source.

Names: tables, actions (and their parameters) and map instances keep the model's names
inside the control ``ingress``, so P4Info names are ``ingress.l3_fwd``,
``ingress.forward``, ``ingress.port_rx``; a key's match field is named by the model's
field reference (``@name("meta.l3_dst")``). Every name the generator adds itself is
longer than a model name may be (15 characters) or reserved, so none can clash.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import CompileError, ProgramError
from ..program.model import Action, Map, Op, Program, Stmt, Table
from ..program.validate import check_target, validate
from .probe import (COUNT_MAX, PAYLOAD_AT, PROBE_FRAME_BYTES, PROBE_MAGIC,
                    PROBE_PORT, SLOTS)

ROLES = ("switch",)
# ops and match kinds bmv2 runs (push_vlan/pop_vlan also need a `vlan` header)
P4_CAPABILITIES = {"forward", "drop", "nop", "set", "push_vlan", "pop_vlan", "count",
                   "map_add", "sketch_add", "rate_limit", "reg_write",
                   "exact", "lpm", "ternary"}

STD_TYPE = "flexnet_std_t"
IPV4_SET = "flexnet_ipv4_set"          # metadata flag: an ipv4 field was set
REJECT_STATE = "flexnet_rejected"      # records a parser error (v1model ignores `reject`)
DROP_PORT_NOTE = "v1model drops a packet whose egress_spec is the drop port (511)"
ETHERTYPE_VLAN = 0x8100
# the lab's version tag (plan/two_phase.py; the eBPF root's, compiler/ebpf.py root_source):
# an 802.1ad S-tag right after the source MAC, VID 0xFF0 | slot. Generator-owned names are
# 16+ characters, so no model name (at most 15) can clash with them.
ETHERTYPE_STAG = 0x88A8
TAG_HEADER = "flexnet_version_tag"     # header instance: tci, then the inner ethertype
TAG_PARSE = "flexnet_tag_lookahead"    # parser states of the tag
TAG_POP = "flexnet_tag_extracted"
AFTER_ETH = "flexnet_after_ethernet"
MODEL_START = "flexnet_model_start"    # the model's `start` (the generator's own comes first)
PEEK_STATE = "flexnet_probe_peeking"
PEEK_TAGGED_STATE = "flexnet_probe_peeking_tagged"
PEEK_PLAIN = "flexnet_peek_plain"      # an oracle probe's bytes 0..45, looked at, not parsed
PEEK_TAGGED = "flexnet_peek_tagged"    # the same with the lab's tag after the source MAC
PEEK_BYTES = PROBE_FRAME_BYTES         # an oracle probe's length (trailer included), untagged
PROBE_FOUND = "flexnet_probe_recognised"   # parser states: a probe (its trailer is parsed
PROBE_AT = "flexnet_probe_after_model"     # after the model's parser accepts, past a skip
PROBE_TRAILER = "flexnet_probe_trailer"    # header (and its state): the probe's payload
PROBE_SKIP = "flexnet_probe_skip_"         # + n: header of the n bytes between the model's
                                           # last header and the payload (state: + "_bytes")
PROBE_LEFT = "flexnet_probe_bytes_left"    # metadata: payload offset - bytes the model parsed
PROBE_FLAG = "flexnet_probe_in_parser"     # metadata: 1 for a probe
CONTROL_REG = "flexnet_control_words"  # [0] stamp slot, [1] tagging on, [2] new version's
                                       # slot, [3] slot of untagged packets from trusted ports
VERSION_REG = "flexnet_version_number" # [0] this load's (old) version, [1] the new one's
TRUST_REG = "flexnet_port_trusted"     # bmv2 port -> 1: the neighbour there stamps the tag
TAGPORT_REG = "flexnet_port_push_tag"  # bmv2 port -> 1: push the tag out of it (tagging on)
VCOUNT_REG = "flexnet_version_count"   # packets per version slot while tagging is on
QUEUED_REG = "flexnet_version_queued"  # packets per slot in the egress queues (the drain)
LINK_SENT_REG = "flexnet_link_tag_sent"     # per slot: tagged packets marked towards a bmv2
LINK_RECV_REG = "flexnet_link_tag_received" # per slot: marked packets that arrived here
TAG_COUNTED = 0x1000                   # the tag's DEI bit: sender counted it (LINK_SENT_REG)
TAG_REGISTERS = (CONTROL_REG, VERSION_REG, TRUST_REG, TAGPORT_REG, VCOUNT_REG, QUEUED_REG,
                 LINK_SENT_REG, LINK_RECV_REG)
BMV2_PORTS = 512
METER_RED = 2
# row r of a sketch hashes the flow hash times its own odd constant: CRC is linear, so a
# plain per-row seed would give every row the same collisions
SKETCH_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F,
                      0x165667B1, 0xD3A2646D, 0xFD7046C5, 0xB55A4F09)

P4_KEYWORDS = frozenset("""
    abstract action actions apply bit bool break const continue control default else entries
    enum error exit extern false for header header_union if in inout int key list match_kind
    out package parser pragma priority return select state string struct switch table this
    transition true tuple type typedef value_set varbit void _
""".split())
# names declared by core.p4 and v1model.p4 (and their macros): a local by one of these
# names would hide it
P4_GLOBALS = frozenset("""
    NoAction packet_in packet_out verify static_assert accept reject exact ternary lpm range
    optional selector standard_metadata_t CounterType MeterType counter direct_counter meter
    direct_meter register action_profile action_selector random digest HashAlgorithm
    mark_to_drop hash verify_checksum update_checksum verify_checksum_with_payload
    update_checksum_with_payload clone clone3 clone_preserving_field_list resubmit
    resubmit_preserving_field_list recirculate recirculate_preserving_field_list truncate
    assert assume log_msg CloneType Checksum16 Parser VerifyChecksum Ingress Egress
    ComputeChecksum Deparser V1Switch PortId_t V1MODEL_VERSION V1MODEL_METER_COLOR_GREEN
    V1MODEL_METER_COLOR_YELLOW V1MODEL_METER_COLOR_RED _V1_MODEL_P4_ _CORE_P4_
""".split())
BMV2_INSTANCES = frozenset({"scalars", "standard_metadata", "std"})
# names this generator declares
GENERATED = frozenset({"headers", "metadata", STD_TYPE, "ParserImpl", "verifyChecksum",
                       "ingress", "egress", "computeChecksum", "DeparserImpl", "main",
                       "packet", "hdr", "meta", "standard_metadata", "std", REJECT_STATE,
                       TAG_HEADER, f"{TAG_HEADER}_t", TAG_PARSE, TAG_POP, AFTER_ETH,
                       MODEL_START, PEEK_STATE, PEEK_TAGGED_STATE, PEEK_PLAIN, PEEK_TAGGED,
                       f"{PEEK_PLAIN}_t", f"{PEEK_TAGGED}_t", PROBE_FOUND, PROBE_AT,
                       PROBE_TRAILER, f"{PROBE_TRAILER}_t", PROBE_LEFT, PROBE_FLAG,
                       *TAG_REGISTERS})


# --- names ------------------------------------------------------------------------------

def _check_names(p: Program) -> None:
    """Raise a ProgramError for a model name that P4 cannot carry: a keyword, a name of
    core.p4/v1model.p4 or of this generator, or two control objects with one name."""
    taken = P4_KEYWORDS | P4_GLOBALS | GENERATED

    def bad(element: str, name: str, why: str) -> None:
        raise ProgramError(element, f"{name!r} {why} in P4; rename it")

    for h in p.headers:
        # bmv2 JSON names header instances by these names, next to its own `scalars`
        # and `standard_metadata` and the `std` local
        if h.name in P4_KEYWORDS or h.name in P4_GLOBALS or h.name in BMV2_INSTANCES:
            bad(f"headers.{h.name}", h.name, "is reserved")
        if f"{h.name}_t" in taken:
            bad(f"headers.{h.name}", h.name, f"makes the type name {h.name}_t, which is taken")
        for i, f in enumerate(h.fields):
            if f.name in P4_KEYWORDS or f.name in P4_GLOBALS:
                bad(f"headers.{h.name}.fields[{i}]", f.name, "is reserved")
    for f in p.metadata:
        if f.name in P4_KEYWORDS or f.name in P4_GLOBALS:
            bad(f"metadata.{f.name}", f.name, "is reserved")
    header_types = {f"{h.name}_t" for h in p.headers}
    for st in p.parser:
        if st.name in taken or st.name in header_types:
            bad(f"parser.{st.name}", st.name, "is reserved")
    control: dict[str, str] = {}
    objects = ([(f"tables.{t.name}", t.name) for t in p.tables]
               + [(f"actions.{a.name}", a.name) for a in p.actions]
               + [(f"maps.{m.name}", n) for m in p.maps for n in map_objects(m)])
    for element, name in objects:
        if name in taken or name in header_types:
            bad(element, name, "is reserved")
        if name in control:
            bad(element, name, f"is also the name of {control[name]} (one namespace)")
        control[name] = element
    for a in p.actions:
        for i, (pname, _) in enumerate(a.params):
            if pname in taken or pname in header_types or pname in control:
                bad(f"actions.{a.name}.params[{i}]", pname, "hides another name")


def map_objects(m: Map) -> list[str]:
    """P4 instance names of a map."""
    return ([f"{m.name}_packets", f"{m.name}_bytes"] if m.kind in ("hash", "counter")
            else [m.name])


def _lit(value: int, bits: int) -> str:
    """A constant as a bit<bits> literal (truncated like a cast when it is wider)."""
    hexa = bits >= 16 and bits % 4 == 0 and value >= 256     # ethertypes read best in hex
    text = f"0x{value:0{bits // 4}x}" if hexa else str(value)
    if value < (1 << bits):
        return f"{bits}w{text}"
    return f"(bit<{bits}>){max(64, value.bit_length())}w{value}"


def _cast(expr: str, have: int, want: int) -> str:
    return expr if have == want else f"(bit<{want}>){expr}"


class _Locals:
    """Temporaries of one action or of the apply block, declared at its top."""

    def __init__(self) -> None:
        self.decls: list[str] = []
        self.n = 0

    def new(self, stem: str, bits: int) -> str:
        self.n += 1
        name = f"flexnet_{stem}_tmp{self.n}"        # >= 16 characters: no model name
        self.decls.append(f"bit<{bits}> {name};")
        return name


class _Gen:
    def __init__(self, program: Program, role: str):
        self.p, self.role = program, role
        ipv4 = program.header("ipv4")
        ck = ipv4.field("checksum") if ipv4 else None
        self.checksum = bool(ck and ck.bits == 16 and (ipv4.bits - 16) % 16 == 0)
        self.tag = tag_support(program)
        self.dual = False      # _DualGen: two versions, chosen per packet

    # --- expressions --------------------------------------------------------------------
    def ref(self, ref: str, in_parser: bool = False) -> tuple[str, int]:
        """P4 expression and width of a model field reference."""
        scope, _, name = ref.partition(".")
        bits = self.p.field_bits(ref)
        if scope == "meta":
            return f"meta.{name}", bits
        if scope == "std":
            if name == "pkt_len":
                return "standard_metadata.packet_length", 32
            if in_parser:   # std.* is set up by ingress; in the parser: bmv2's own values
                if name == "ingress_port":
                    return "(bit<16>)standard_metadata.ingress_port", 16
                return _lit(0, bits), bits
            return f"std.{name}", bits
        return f"hdr.{scope}.{name}", bits

    def key_ref(self, ref: str) -> tuple[str, int]:
        """A table key: std.ingress_port matches bmv2's port itself (bit<9>)."""
        if ref == "std.ingress_port":
            return "standard_metadata.ingress_port", 9
        return self.ref(ref)

    def value(self, arg, action: Action | None, bits: int) -> str:
        """An op argument (constant, $param or field) as a bit<bits> expression."""
        if isinstance(arg, int):
            return _lit(int(arg), bits)
        if isinstance(arg, str) and arg.startswith("$"):
            have = dict(action.params)[arg[1:]]
            return _cast(arg[1:], have, bits)
        expr, have = self.guarded(arg)
        return _cast(expr, have, bits)

    def guarded(self, ref: str) -> tuple[str, int]:
        """A field read by an op: a header field of an invalid header reads 0, as on eBPF
        (bmv2 may keep a stale value there)."""
        expr, bits = self.ref(ref)
        scope = ref.partition(".")[0]
        if scope in ("meta", "std"):
            return expr, bits
        return f"(hdr.{scope}.isValid() ? {expr} : {_lit(0, bits)})", bits

    def key_list(self, arg, action: Action | None, temps: _Locals) -> tuple[list[str], str]:
        """The data of a hashed key as (statements, list expression). bmv2 hashes fields, so
        a header field (0 when its header is invalid, as on eBPF), an action parameter or a
        constant (64 bits, like eBPF's key words) is copied into a local first (locals become
        fields of bmv2's scalars); meta.* and std.* fields are hashed as they are."""
        parts = arg if isinstance(arg, tuple) else (arg,)
        pre: list[str] = []
        out: list[str] = []
        for a in parts:
            if isinstance(a, str) and a.partition(".")[0] in ("meta", "std"):
                out.append(self.ref(a)[0])
                continue
            if isinstance(a, int):
                bits = 64
            elif a.startswith("$"):
                bits = dict(action.params)[a[1:]]
            else:
                bits = self.p.field_bits(a)
            tmp = temps.new("key", bits)
            pre.append(f"{tmp} = {self.value(a, action, bits)};")
            out.append(tmp)
        return pre, "{ " + ", ".join(out) + " }"

    # --- declarations -------------------------------------------------------------------
    def header_types(self) -> list[str]:
        out = []
        for h in self.p.headers:
            out.append(f"header {h.name}_t {{")
            out += [f"    bit<{f.bits}> {f.name};" for f in h.fields]
            out += ["}", ""]
        if self.tag:
            out += ["/* the lab's version tag (802.1ad S-tag, VID 0xFF0 | slot) as it follows the",
                    " * source MAC; ethernet's ethertype is then 0x88a8 on the wire */",
                    f"header {TAG_HEADER}_t {{", "    bit<16> tci;", "    bit<16> ethertype;",
                    "}", "",
                    "/* an oracle probe's first bytes (looked ahead at, never emitted): IPv4",
                    " * without options, UDP to the probe port, payload magic; fields of at",
                    " * most 64 bits (wider ones are bignums in bmv2) */"]
            for name, tagged in ((PEEK_PLAIN, False), (PEEK_TAGGED, True)):
                out += [f"header {name}_t {{", "    bit<48> dst;", "    bit<48> src;"]
                out += ["    bit<32> tag;"] if tagged else []
                out += ["    bit<16> ethertype;", "    bit<8> version_ihl;", "    bit<64> ip_mid;",
                        "    bit<8> protocol;", "    bit<64> ip_end;", "    bit<16> ip_dst_low;",
                        "    bit<16> sport;", "    bit<16> dport;", "    bit<32> udp_end;",
                        "    bit<32> magic;", "}", ""]
            out += self.probe_header_types()
        out.append("struct headers {")
        out += [f"    {h.name}_t {h.name};" for h in self.p.headers]
        if self.tag:
            out += [f"    {TAG_HEADER}_t {TAG_HEADER};", f"    {PEEK_PLAIN}_t {PEEK_PLAIN};",
                    f"    {PEEK_TAGGED}_t {PEEK_TAGGED};"]
            out += [f"    {PROBE_SKIP}{n}_t {PROBE_SKIP}{n};" for n in self.probe_skips()]
            out.append(f"    {PROBE_TRAILER}_t {PROBE_TRAILER};")
        out += ["}", "", "struct metadata {"]
        out += [f"    bit<{f.bits}> {f.name};" for f in self.p.metadata]
        if self.checksum:
            out.append(f"    bit<1> {IPV4_SET};   /* an ipv4 field was set: recompute the "
                       "checksum */")
        if self.tag:
            out += ["    bit<2> flexnet_queued_slot;   /* 1 + the slot counted as queued */",
                    f"    bit<16> {PROBE_LEFT};   /* a probe: bytes to its payload the model's",
                    "                                       * parser has not extracted */",
                    f"    bit<1> {PROBE_FLAG};"]
        out += ["}", "",
                "/* The model's std.* fields (its ports are 16 bits, bmv2's 9; std.pkt_len is",
                " * standard_metadata.packet_length). drop: the packet is dropped unless a",
                " * later forward() sends it. */",
                f"struct {STD_TYPE} {{",
                "    bit<16> ingress_port;", "    bit<16> egress_port;", "    bit<1> drop;",
                "}", ""]
        return out

    # --- parser -------------------------------------------------------------------------
    def parser(self) -> list[str]:
        out = ["parser ParserImpl(packet_in packet, out headers hdr, inout metadata meta,",
               "                  inout standard_metadata_t standard_metadata) {"]
        rejects = False
        if self.tag:
            out += self.tag_parser()
        for k, st in enumerate(self.p.parser):
            out.append(f"    state {self.state(st.name)} {{")
            if st.extract:
                out.append(f"        packet.extract(hdr.{st.extract});")
                if self.tag:
                    size = self.p.header(st.extract).size
                    out.append(f"        meta.{PROBE_LEFT} = meta.{PROBE_LEFT} - 16w{size};")
            if k == 0 and self.tag:   # the lab's tag follows the source MAC: pop it first
                eth = self.p.header("ethernet").fields[2].name
                out += [f"        transition select(hdr.ethernet.{eth}) {{",
                        f"            {_lit(ETHERTYPE_STAG, 16)}: {TAG_PARSE};",
                        f"            default: {AFTER_ETH};", "        }", "    }",
                        f"    state {AFTER_ETH} {{"]
            for dst, src in st.sets:
                dexpr, dbits = self.ref(dst, True)
                sexpr, sbits = self.ref(src, True)
                out.append(f"        {dexpr} = {_cast(sexpr, sbits, dbits)};")
            tr = st.transition
            rejects |= "reject" in tr.targets()
            if tr.select and tr.cases:
                sel = [self.ref(f, True) for f in tr.select]
                out.append(f"        transition select({', '.join(e for e, _ in sel)}) {{")
                for values, target in tr.cases:
                    lits = [_lit(v, bits) for v, (_, bits) in zip(values, sel)]
                    keyset = lits[0] if len(lits) == 1 else f"({', '.join(lits)})"
                    out.append(f"            {keyset}: {self.state(target)};")
                out += [f"            default: {self.state(tr.default)};", "        }"]
            else:
                out.append(f"        transition {self.state(tr.default)};")
            out.append("    }")
        if self.tag:
            out += self.probe_parser()
        if rejects:
            out += ["    /* `transition reject` is ignored by v1model (the packet would go on",
                    "     * with no error); this records one, and ingress drops the packet */",
                    f"    state {REJECT_STATE} {{",
                    "        verify(false, error.NoMatch);",
                    "        transition accept;",
                    "    }"]
        return out + ["}", ""]

    def state(self, name: str) -> str:
        if name == "start" and self.tag:
            return MODEL_START
        if name == "accept" and self.tag:   # the model's parser is done: a probe's trailer
            return PROBE_AT
        return REJECT_STATE if name == "reject" else name

    def tag_parser(self) -> list[str]:
        """The generator's start: a frame long enough to be an oracle probe is peeked at
        (lookahead fails on a shorter one, so the length decides first) and a probe is
        recognised, then the model's start state; after ethernet, the lab's tag (VID
        0xFF0|slot) is extracted and its inner ethertype put back into ethernet, so the
        model's parser never sees it."""
        eth = self.p.header("ethernet").fields[2].name
        probe = (f"16w0x0800, 8w0x45, 8w17, 16w{PROBE_PORT}, 32w{PROBE_MAGIC:#x}")
        peek = lambda h: ", ".join(f"hdr.{h}.{f}" for f in   # noqa: E731
                                   ("ethertype", "version_ihl", "protocol", "dport", "magic"))
        tagged_short = [f"            ({k}, _, _, _, _, _, _): {MODEL_START};"
                        for k in _shorter_than(PEEK_BYTES + 4)]
        out = [f"    state start {{   /* shorter than {PEEK_BYTES} bytes: no oracle probe */",
               "        transition select(standard_metadata.packet_length) {"]
        out += [f"            {k}: {MODEL_START};" for k in _shorter_than(PEEK_BYTES)]
        out += [f"            default: {PEEK_STATE};", "        }", "    }",
                f"    state {PEEK_STATE} {{   /* an oracle probe: IPv4 (no options) UDP to "
                f"port {PROBE_PORT}, payload \"FXPR\"... */",
                f"        hdr.{PEEK_PLAIN} = packet.lookahead<{PEEK_PLAIN}_t>();",
                f"        transition select({peek(PEEK_PLAIN)}) {{",
                f"            ({_lit(ETHERTYPE_STAG, 16)}, _, _, _, _): {PEEK_TAGGED_STATE};",
                f"            ({probe}): {PROBE_FOUND};",
                f"            default: {MODEL_START};", "        }", "    }",
                f"    state {PEEK_TAGGED_STATE} {{   /* ... or the same after the lab's tag, "
                f"{PEEK_BYTES + 4} bytes at least */",
                f"        hdr.{PEEK_TAGGED} = packet.lookahead<{PEEK_TAGGED}_t>();",
                "        transition select(standard_metadata.packet_length, "
                f"hdr.{PEEK_TAGGED}.tag, {peek(PEEK_TAGGED)}) {{"]
        out += tagged_short
        out += [f"            (_, 32w0x88a80ff0 &&& 32w0xffff0ffe, {probe}): {PROBE_FOUND};",
                f"            default: {MODEL_START};", "        }", "    }",
                f"    state {PROBE_FOUND} {{",
                f"        meta.{PROBE_FLAG} = 1w1;",
                f"        meta.{PROBE_LEFT} = 16w{PAYLOAD_AT};   /* the lab's tag is not counted: "
                "the model never sees it */",
                f"        transition {MODEL_START};", "    }",
                f"    state {TAG_PARSE} {{   /* 802.1ad: the lab's tag has VID 0xFF0 | slot */",
                "        transition select(packet.lookahead<bit<16>>()) {",
                f"            16w0x0ff0 &&& 16w0x0ffe: {TAG_POP};",
                f"            default: {AFTER_ETH};", "        }", "    }",
                f"    state {TAG_POP} {{",
                f"        packet.extract(hdr.{TAG_HEADER});",
                f"        hdr.ethernet.{eth} = hdr.{TAG_HEADER}.ethertype;",
                f"        transition {AFTER_ETH};", "    }"]
        return out

    def probe_skips(self) -> list[int]:
        """Byte counts that can lie between the model's last extracted header and a
        probe's payload: PAYLOAD_AT minus every depth at which the model's parser can accept
        (states walked from its start; a path deeper than the payload parses into it and
        its probes are not recorded). 0 needs no skip header."""
        states = {st.name: st for st in self.p.parser}
        depths, seen = set(), set()
        todo = [(self.p.parser[0].name, 0)]
        while todo:
            name, depth = todo.pop()
            if (name, depth) in seen:
                continue
            seen.add((name, depth))
            st = states[name]
            depth += self.p.header(st.extract).size if st.extract else 0
            if depth > PAYLOAD_AT:
                continue
            for target in set(st.transition.targets()):
                if target == "accept":
                    depths.add(depth)
                elif target in states:
                    todo.append((target, depth))
        return sorted(PAYLOAD_AT - d for d in depths if d < PAYLOAD_AT)

    def probe_header_types(self) -> list[str]:
        out = ["/* an oracle probe's payload (compiler/probe.py): the trailer every switch writes",
               " * the version it ran into, slot[count], count + 1 (saturating) */",
               f"header {PROBE_TRAILER}_t {{", "    bit<32> magic;", "    bit<32> id;",
               "    bit<8> count;", "    bit<24> reserved;"]
        out += [f"    bit<32> slot{i};" for i in range(SLOTS)]
        out += ["}", ""]
        for n in self.probe_skips():
            out += [f"/* a probe's {n} bytes between the model's last header and the trailer */",
                    f"header {PROBE_SKIP}{n}_t {{"]
            out += [f"    bit<{min(64, 8 * n - 64 * i)}> b{i};" for i in range((n + 7) // 8)]
            out += ["}", ""]
        return out

    def probe_parser(self) -> list[str]:
        """After the model's parser accepts: a probe's skip (the bytes the model did not
        parse before the payload), then its trailer, so the deparser emits them again."""
        out = [f"    state {PROBE_AT} {{   /* the model's parser accepted */",
               f"        transition select(meta.{PROBE_FLAG}, meta.{PROBE_LEFT}) {{",
               f"            (1w1, 16w0): {PROBE_TRAILER};"]
        out += [f"            (1w1, 16w{n}): {PROBE_SKIP}{n}_bytes;" for n in self.probe_skips()]
        out += ["            default: accept;", "        }", "    }"]
        for n in self.probe_skips():
            out += [f"    state {PROBE_SKIP}{n}_bytes {{",
                    f"        packet.extract(hdr.{PROBE_SKIP}{n});",
                    f"        transition {PROBE_TRAILER};", "    }"]
        out += [f"    state {PROBE_TRAILER} {{",
                f"        packet.extract(hdr.{PROBE_TRAILER});",
                "        transition accept;", "    }"]
        return out

    def header_order(self) -> list[str]:
        """Headers in parser order: states topologically (ties in declaration order), then
        the headers no state extracts (vlan right after ethernet: push_vlan makes it)."""
        states = {st.name: st for st in self.p.parser}
        indeg = {n: 0 for n in states}
        for st in self.p.parser:
            for t in set(st.transition.targets()):
                if t in indeg:
                    indeg[t] += 1
        ready = [st.name for st in self.p.parser if indeg[st.name] == 0]
        order: list[str] = []
        while ready:
            name = ready.pop(0)
            st = states[name]
            if st.extract and st.extract not in order:
                order.append(st.extract)
            for t in dict.fromkeys(st.transition.targets()):
                if t in indeg:
                    indeg[t] -= 1
                    if indeg[t] == 0:
                        ready.append(t)
            ready.sort(key=list(states).index)
        for h in self.p.headers:
            if h.name not in order:
                if h.name == "vlan" and "ethernet" in order:
                    order.insert(order.index("ethernet") + 1, h.name)
                else:
                    order.append(h.name)
        if self.tag:   # pushed last, so it goes out right after the source MAC
            order.insert(order.index("ethernet") + 1, TAG_HEADER)
        return order

    # --- ingress ------------------------------------------------------------------------
    def ingress(self) -> list[str]:
        out = []
        if self.tag:   # ingress adds, egress subtracts: one instance outside both controls
            out += [f"/* {QUEUED_REG}: packets per version slot in the egress queues */",
                    f"register<bit<32>>(2) {QUEUED_REG};", ""]
        out += ["control ingress(inout headers hdr, inout metadata meta,",
               "                inout standard_metadata_t standard_metadata) {",
               f"    {STD_TYPE} std;", ""]
        for m in self.p.maps:
            out += ["    " + ln for ln in self.map_decl(m)]
        if self.p.maps:
            out.append("")
        for a in self.p.actions:
            out += self.action(a) + [""]
        for t in self.p.tables:
            out += self.table(t) + [""]
        if self.tag:
            out += self.tag_registers() + [""]
        temps = _Locals()
        body = self.body(temps)
        out.append("    apply {")
        out += ["        " + d for d in temps.decls]
        if self.tag:
            out += ["        " + ln for ln in self.tag_ingress()]
        out += ["        if (standard_metadata.parser_error != error.NoError) {",
                "            mark_to_drop(standard_metadata);   /* reject = drop */",
                "        } else {",
                "            std.ingress_port = (bit<16>)standard_metadata.ingress_port;",
                "            std.egress_port = 16w0;",
                "            std.drop = 1w0;"]
        out += ["            " + ln for ln in body]
        out += self.verdict()
        if self.tag:
            out += ["            " + ln for ln in self.tag_push()]
        out += ["        }", "    }", "}", ""]
        return out

    def body(self, temps: _Locals) -> list[str]:
        """The model's control statements in order."""
        body: list[str] = []
        for s, stmt in enumerate(self.p.control):
            body += self.stmt(stmt, temps, f"control[{s}]")
        return body

    # --- the version tag of per-packet consistent changes -----------------------------------
    @staticmethod
    def tag_registers() -> list[str]:
        return ["    /* per-packet consistent changes (plan/two_phase.py), written by the target:",
                f"     * {CONTROL_REG}: [0] the slot untagged packets run (the stamp), [1] tagging",
                "     *   on, [2] the slot of the new version (a pipeline holding two), [3] the",
                "     *   slot of an untagged packet from a trusted port while tagging is on (the",
                "     *   old one: its sender ran it before it tagged), [4] links counted;",
                f"     * {VERSION_REG}: [0] this load's version number ([1] the new one's);",
                f"     * {TRUST_REG} / {TAGPORT_REG}: per port, the tag is trusted on arrival /",
                "     *   pushed on departure (the neighbour there is a switch that knows it);",
                f"     * {VCOUNT_REG}: packets per slot while tagging is on (the drain);",
                f"     * {TAGPORT_REG}: 2 = also mark the tag (DEI) and count it in",
                f"     *   {LINK_SENT_REG}",
                "     *   while links are counted (the neighbour is a bmv2 switch, which counts",
                f"     *   what arrives marked in {LINK_RECV_REG}: sent - received is in flight);",
                f"     * {QUEUED_REG}: of those, how many wait in the egress queues (+1 here,",
                "     *   -1 in egress: the drain waits for them too). */",
                f"    register<bit<32>>(5) {CONTROL_REG};",
                f"    register<bit<32>>(2) {VERSION_REG};",
                f"    register<bit<1>>({BMV2_PORTS}) {TRUST_REG};",
                f"    register<bit<2>>({BMV2_PORTS}) {TAGPORT_REG};",
                f"    register<bit<64>>(2) {LINK_SENT_REG};",
                f"    register<bit<64>>(2) {LINK_RECV_REG};",
                f"    register<bit<64>>(2) {VCOUNT_REG};",
                "    bit<1> flexnet_version_slot;      /* the slot this packet runs */",
                "    bit<1> flexnet_is_new_version;    /* it runs the new version (two held) */",
                "    bit<32> flexnet_tagging_on;"]

    def tag_ingress(self) -> list[str]:
        """The eBPF root's part (compiler/ebpf.py root_source): the slot from a trusted tag or
        the stamp, the tag popped whether trusted or not (a host's forged tag never selects
        a version nor reaches the program), counted per slot while tagging is on, and an
        oracle probe's trailer given the version it runs."""
        out = ["bit<32> flexnet_reg_word;",
               "bit<1> flexnet_reg_bit1;", "bit<1> flexnet_tag_was_seen = 1w0;",
               "bit<64> flexnet_count_tmp;",
               "bit<2> flexnet_tag_port_kind;",
               f"{CONTROL_REG}.read(flexnet_reg_word, 32w0);",
               "flexnet_version_slot = (bit<1>)flexnet_reg_word;",
               f"{CONTROL_REG}.read(flexnet_tagging_on, 32w1);",
               f"{TRUST_REG}.read(flexnet_reg_bit1, (bit<32>)standard_metadata.ingress_port);",
               f"if (hdr.{TAG_HEADER}.isValid()) {{",
               "    flexnet_tag_was_seen = 1w1;",
               f"    if ((hdr.{TAG_HEADER}.tci & 16w{TAG_COUNTED:#x}) != 16w0) {{   /* marked */",
               f"        {LINK_RECV_REG}.read(flexnet_count_tmp, "
               f"(bit<32>)hdr.{TAG_HEADER}.tci[0:0]);",
               f"        {LINK_RECV_REG}.write((bit<32>)hdr.{TAG_HEADER}.tci[0:0], "
               "flexnet_count_tmp + 64w1);",
               "    }",
               "    if (flexnet_reg_bit1 == 1w1) {",
               f"        flexnet_version_slot = hdr.{TAG_HEADER}.tci[0:0];",
               "    }",
               f"    hdr.{TAG_HEADER}.setInvalid();   /* popped: ethernet has the inner "
               "ethertype */",
               "} else if (flexnet_reg_bit1 == 1w1 && flexnet_tagging_on != 32w0) {",
               "    /* sent untagged by a neighbour that stamps: before its tagging was on */",
               f"    {CONTROL_REG}.read(flexnet_reg_word, 32w3);",
               "    flexnet_version_slot = (bit<1>)flexnet_reg_word;",
               "}",
               "if (flexnet_tagging_on != 32w0) {",
               f"    {VCOUNT_REG}.read(flexnet_count_tmp, (bit<32>)flexnet_version_slot);",
               f"    {VCOUNT_REG}.write((bit<32>)flexnet_version_slot, flexnet_count_tmp + 64w1);",
               "}",
               "flexnet_is_new_version = 1w0;"]
        if self.dual:
            out += [f"{CONTROL_REG}.read(flexnet_reg_word, 32w2);",
                    "if (flexnet_version_slot == (bit<1>)flexnet_reg_word) {",
                    "    flexnet_is_new_version = 1w1;",
                    "}"]
        tr = f"hdr.{PROBE_TRAILER}"
        out += ["/* an oracle probe (its trailer parsed): the version this packet runs into "
                "slot[count] */",
                f"if ({tr}.isValid()) {{",
                f"    {VERSION_REG}.read(flexnet_reg_word, (bit<32>)flexnet_is_new_version);"]
        for i in range(SLOTS):
            out += [f"    {'if' if i == 0 else '} else if'} ({tr}.count == 8w{i}) {{",
                    f"        {tr}.slot{i} = flexnet_reg_word;"]
        out += ["    }",
                f"    if ({tr}.count != 8w{COUNT_MAX}) {{   /* saturates: above {SLOTS}, the "
                "trailer overflowed */",
                f"        {tr}.count = {tr}.count + 8w1;", "    }",
                "}",
                f"hdr.{PEEK_PLAIN}.setInvalid();", f"hdr.{PEEK_TAGGED}.setInvalid();"]
        return out

    @staticmethod
    def tag_push() -> list[str]:
        """While tagging is on, a packet leaving towards a switch that knows the tag carries
        its slot (never towards a host: the target marks only ports between switches), and
        is counted as queued until egress takes it."""
        return ["if (flexnet_tagging_on != 32w0 && standard_metadata.egress_spec != 9w511) {",
                f"    {QUEUED_REG}.read(flexnet_reg_word, (bit<32>)flexnet_version_slot);",
                f"    {QUEUED_REG}.write((bit<32>)flexnet_version_slot, flexnet_reg_word + 32w1);",
                "    meta.flexnet_queued_slot = (bit<2>)flexnet_version_slot + 2w1;",
                f"    {TAGPORT_REG}.read(flexnet_tag_port_kind, "
                "(bit<32>)standard_metadata.egress_spec);",
                "    if (flexnet_tag_port_kind != 2w0) {",
                f"        hdr.{TAG_HEADER}.setValid();",
                f"        hdr.{TAG_HEADER}.tci = 16w0x0ff0 | (bit<16>)flexnet_version_slot;",
                f"        hdr.{TAG_HEADER}.ethertype = hdr.ethernet.ethertype;",
                f"        hdr.ethernet.ethertype = {_lit(ETHERTYPE_STAG, 16)};",
                f"        {CONTROL_REG}.read(flexnet_reg_word, 32w4);",
                "        if (flexnet_tag_port_kind == 2w2 && flexnet_reg_word != 32w0) {",
                f"            hdr.{TAG_HEADER}.tci = hdr.{TAG_HEADER}.tci | 16w{TAG_COUNTED:#x};",
                f"            {LINK_SENT_REG}.read(flexnet_count_tmp, "
                "(bit<32>)flexnet_version_slot);",
                f"            {LINK_SENT_REG}.write((bit<32>)flexnet_version_slot, "
                "flexnet_count_tmp + 64w1);",
                "        }",
                "    }",
                "}"]

    def map_decl(self, m: Map) -> list[str]:
        if m.kind == "counter":
            # registers, not a P4 counter: PI's RECONCILE_AND_COMMIT reads counter entries
            # and replays them as INSERTs, which fails, so a program with counters could
            # never change hitlessly; registers are read and carried over by the lab
            return [f"/* counter {m.name}: (packets, bytes) per index, as a register pair */",
                    f"register<bit<64>>({m.size}) {m.name}_packets;",
                    f"register<bit<64>>({m.size}) {m.name}_bytes;"]
        if m.kind == "register":
            return [f"register<bit<64>>({m.size}) {m.name};"]
        if m.kind == "hash":
            return [f"/* hash map {m.name}: (packets, bytes) per key in {m.size} slots by a "
                    "crc32 hash of the key;",
                    " * bmv2 has no exact-key hash map, so flows whose hashes collide share "
                    "a slot */",
                    f"register<bit<64>>({m.size}) {m.name}_packets;",
                    f"register<bit<64>>({m.size}) {m.name}_bytes;"]
        if m.kind == "sketch":
            return [f"/* count-min sketch {m.name}: {m.rows} rows x {m.size} columns of "
                    f"packets, row r at r * {m.size} */",
                    f"register<bit<64>>({m.rows * m.size}) {m.name};"]
        # meter
        return [f"/* token bucket {m.name} per key (a crc32 hash of the key picks one of "
                f"{m.size} meters).",
                " * Meter rates are configured from the control plane, not in P4 source: "
                "the model's",
                f" * are cir = pir = {m.rate} bytes/s, cburst = pburst = {m.burst} bytes "
                "(P4Runtime MeterConfig).",
                " * An unconfigured bmv2 meter is always GREEN (never drops). */",
                f"meter({m.size}, MeterType.bytes) {m.name};"]

    def action(self, a: Action) -> list[str]:
        params = ", ".join(f"bit<{bits}> {name}" for name, bits in a.params)
        temps = _Locals()
        body: list[str] = []
        for i, op in enumerate(a.ops):
            body += self.op(op, a, temps, f"actions.{a.name}.ops[{i}]")
        return ([f"    action {a.name}({params}) {{"]
                + ["        " + ln for ln in temps.decls + body] + ["    }"])

    def table(self, t: Table) -> list[str]:
        out = [f"    table {t.name} {{", "        key = {"]
        for k in t.keys:
            expr, _ = self.key_ref(k.field)
            out.append(f"            {expr}: {k.kind} @name(\"{k.field}\");")
        out.append("        }")
        out.append("        actions = { " + " ".join(f"{a};" for a in t.actions) + " }")
        act = self.p.action(t.default_action)
        args = ", ".join(_lit(v, bits) for v, (_, bits) in zip(t.default_args, act.params))
        out += [f"        default_action = {t.default_action}({args});",
                f"        size = {t.size};", "    }"]
        return out

    def stmt(self, stmt: Stmt, temps: _Locals, element: str) -> list[str]:
        if stmt.table is None:
            out: list[str] = []
            for j, op in enumerate(stmt.ops):
                out += self.op(op, None, temps, f"{element}.ops[{j}]")
            return out
        t = self.p.table(stmt.table)
        headers = list(dict.fromkeys(k.field.split(".")[0] for k in t.keys
                                     if k.field.split(".")[0] not in ("meta", "std")))
        if not headers:
            return [f"{t.name}.apply();"]
        guard = " && ".join(f"hdr.{h}.isValid()" for h in headers)
        return [f"if ({guard}) {{", f"    {t.name}.apply();", "}"]

    def verdict(self) -> list[str]:
        return ["            /* verdict: a packet nothing forwarded (std.egress_port 0) is "
                "dropped;",
                f"             * {DROP_PORT_NOTE} */",
                "            if (std.drop == 1w1 || std.egress_port == 16w0) {",
                "                mark_to_drop(standard_metadata);",
                "            } else {",
                "                standard_metadata.egress_spec = (bit<9>)std.egress_port;",
                "            }"]

    # --- ops ----------------------------------------------------------------------------
    def op(self, op: Op, action: Action | None, temps: _Locals, where: str) -> list[str]:
        """P4 statements of one op; `where` names it in errors (control[2].ops[0])."""
        a = op.args
        if op.name == "forward":
            # drop is final, as on the eBPF targets: a later forward does not undo it
            return ["if (std.drop == 1w0) {",
                    f"    standard_metadata.egress_spec = {self.value(a[0], action, 9)};",
                    f"    std.egress_port = {self.value(a[0], action, 16)};",
                    "}"]
        if op.name == "drop":
            return ["mark_to_drop(standard_metadata);", "std.egress_port = 16w0;",
                    "std.drop = 1w1;"]
        if op.name == "nop":
            return []
        if op.name == "set":
            dst, bits = self.ref(a[0])
            out = [f"{dst} = {self.value(a[1], action, bits)};"]
            if a[0].startswith("ipv4.") and self.checksum:
                out.append(f"meta.{IPV4_SET} = 1w1;")
            return out
        if op.name in ("push_vlan", "pop_vlan"):
            return self.vlan_op(op, action, where)
        if op.name == "count":
            v, idx = temps.new("val", 64), temps.new("idx", 32)
            return [f"{idx} = {self.value(a[1], action, 32)};",
                    f"{a[0]}_packets.read({v}, {idx});",
                    f"{a[0]}_packets.write({idx}, {v} + 64w1);",
                    f"{a[0]}_bytes.read({v}, {idx});",
                    f"{a[0]}_bytes.write({idx}, {v} + (bit<64>)standard_metadata.packet_length);"]
        if op.name == "reg_write":
            return [f"{a[0]}.write({self.value(a[1], action, 32)}, "
                    f"{self.value(a[2], action, 64)});"]
        if op.name == "map_add":
            return self.map_add(self.p.map(a[0]), a[1], action, temps)
        if op.name == "sketch_add":
            return self.sketch_add(self.p.map(a[0]), a[1], action, temps)
        if op.name == "rate_limit":
            return self.rate_limit(self.p.map(a[0]), a[1], action, temps)
        raise ProgramError(where, f"no P4 code generator for op {op.name}")

    def vlan_op(self, op: Op, action: Action | None, where: str) -> list[str]:
        vlan, eth = self.p.header("vlan"), self.p.header("ethernet")
        need = {"vid", "ethertype"}
        if (vlan is None or eth is None or eth.field("ethertype") is None
                or not need <= {f.name for f in vlan.fields}):
            raise ProgramError(where, f"{op.name} needs the 'vlan' header (with vid and "
                                      "ethertype) and 'ethernet' in the program")
        if op.name == "push_vlan":
            out = ["hdr.vlan.setValid();   /* one tag: the new tag carries the old ethertype */"]
            for f in vlan.fields:
                if f.name == "vid":
                    out.append(f"hdr.vlan.vid = {self.value(op.args[0], action, f.bits)};")
                elif f.name == "ethertype":
                    out.append("hdr.vlan.ethertype = hdr.ethernet.ethertype;")
                else:
                    out.append(f"hdr.vlan.{f.name} = {_lit(0, f.bits)};")
            return out + [f"hdr.ethernet.ethertype = {_lit(ETHERTYPE_VLAN, 16)};"]
        return ["if (hdr.vlan.isValid()) {",
                "    hdr.ethernet.ethertype = hdr.vlan.ethertype;",
                "}",
                "hdr.vlan.setInvalid();"]

    def hashed_index(self, m: Map, key, action: Action | None,
                     temps: _Locals) -> tuple[str, list[str]]:
        """A crc32 hash of the key into the map's slots 0..size-1."""
        pre, data = self.key_list(key, action, temps)
        idx = temps.new("idx", 32)
        return idx, pre + [f"hash({idx}, HashAlgorithm.crc32, 32w0, {data}, 32w{m.size});"]

    def map_add(self, m: Map, key, action: Action | None, temps: _Locals) -> list[str]:
        idx, out = self.hashed_index(m, key, action, temps)
        v = temps.new("val", 64)
        return out + [f"{m.name}_packets.read({v}, {idx});",
                      f"{m.name}_packets.write({idx}, {v} + 64w1);",
                      f"{m.name}_bytes.read({v}, {idx});",
                      f"{m.name}_bytes.write({idx}, {v} + "
                      "(bit<64>)standard_metadata.packet_length);"]

    def sketch_add(self, m: Map, key, action: Action | None, temps: _Locals) -> list[str]:
        out, data = self.key_list(key, action, temps)
        h, mix = temps.new("hash", 32), temps.new("mix", 32)
        idx, v = temps.new("idx", 32), temps.new("val", 64)
        out.append(f"hash({h}, HashAlgorithm.crc32, 32w0, {data}, 32w0x80000000);   "
                   "/* 31 bits */")
        for r in range(m.rows):
            out += [f"{mix} = {h} * 32w{SKETCH_MULTIPLIERS[r]:#010x};   /* row {r} */",
                    f"hash({idx}, HashAlgorithm.crc32, 32w{r * m.size}, {{ {mix} }}, "
                    f"32w{m.size});",
                    f"{m.name}.read({v}, {idx});",
                    f"{m.name}.write({idx}, {v} + 64w1);"]
        return out

    def rate_limit(self, m: Map, key, action: Action | None, temps: _Locals) -> list[str]:
        idx, out = self.hashed_index(m, key, action, temps)
        color = temps.new("color", 2)
        return out + [f"{m.name}.execute_meter<bit<2>>({idx}, {color});",
                      f"if ({color} == 2w{METER_RED}) {{   /* RED: over the rate */",
                      "    std.egress_port = 16w0;",
                      "    std.drop = 1w1;",
                      "}"]

    # --- the rest -----------------------------------------------------------------------
    def tail(self) -> list[str]:
        out = ["control egress(inout headers hdr, inout metadata meta,",
               "               inout standard_metadata_t standard_metadata) {"]
        if self.tag:
            out += ["    apply {",
                    "        bit<32> flexnet_queued_count;",
                    "        bit<32> flexnet_queued_index;",
                    "        if (meta.flexnet_queued_slot != 2w0) {   /* out of the queue */",
                    "            flexnet_queued_index = (bit<32>)(meta.flexnet_queued_slot - 2w1);",
                    f"            {QUEUED_REG}.read(flexnet_queued_count, flexnet_queued_index);",
                    f"            {QUEUED_REG}.write(flexnet_queued_index, "
                    "flexnet_queued_count - 32w1);",
                    "        }",
                    "    }", "}", ""]
        else:
            out += ["    apply { }", "}", ""]
        out += ["control verifyChecksum(inout headers hdr, inout metadata meta) {",
                "    apply { }", "}", "",
               "control computeChecksum(inout headers hdr, inout metadata meta) {",
               "    apply {"]
        if self.checksum:
            ipv4 = self.p.header("ipv4")
            fields = [f"hdr.ipv4.{f.name}" for f in ipv4.fields if f.name != "checksum"]
            out += [f"        update_checksum(hdr.ipv4.isValid() && meta.{IPV4_SET} == 1w1,",
                    "            { " + ",\n              ".join(fields) + " },",
                    "            hdr.ipv4.checksum, HashAlgorithm.csum16);"]
        out += ["    }", "}", "",
                "control DeparserImpl(packet_out packet, in headers hdr) {", "    apply {"]
        out += [f"        packet.emit(hdr.{h});" for h in self.header_order()]
        if self.tag:   # an oracle probe's payload, where the model's headers end
            out += [f"        packet.emit(hdr.{PROBE_SKIP}{n});" for n in self.probe_skips()]
            out.append(f"        packet.emit(hdr.{PROBE_TRAILER});")
        out += ["    }", "}", "",
                "V1Switch(ParserImpl(), verifyChecksum(), ingress(), egress(), "
                "computeChecksum(), DeparserImpl()) main;"]
        return out


def _provenance(program: Program) -> list[str]:
    from ..program import library
    factories = {"infra": library.infrastructure, **library.HOST_PROGRAMS}
    factory = factories.get(program.name)
    if factory is not None and factory() == program:
        lines = [f" * Generated from flexnet_lab/program/library.py ({factory.__name__}()) by",
                 f" *   flexnet compile {program.name} --target p4 -o p4src"]
        if program.name == "infra":
            lines.append(" * p4src/infra.p4 is checked against the generator by "
                         "tests/unit/test_p4_backend.py.")
        return lines
    return [" * Generated from the model by flexnet_lab/compiler/p4.py "
            "(flexnet compile ... --target p4)."]


def _shorter_than(n: int) -> list[str]:
    """Keysets (value &&& mask) of a bit<32> packet_length below n."""
    out, low = [], 0
    for bit in reversed(range(n.bit_length())):
        if n & (1 << bit):
            out.append(f"32w{low:#x} &&& 32w{(0xFFFFFFFF << bit) & 0xFFFFFFFF:#x}")
            low |= 1 << bit
    return out


def tag_support(program: Program) -> bool:
    """Whether the pipeline can carry the lab's version tag: it parses ethernet (dst, src,
    ethertype: 48/48/16 bits) first, so the tag sits right behind it."""
    eth = program.header("ethernet")
    return bool(eth is not None and [f.bits for f in eth.fields] == [48, 48, 16]
                and program.parser and program.parser[0].extract == "ethernet"
                and program.parser[0].name == "start")


def generate_p4(program: Program, role: str = "switch") -> str:
    """P4_16 source (v1model, bmv2) of `program` as a switch pipeline."""
    if role not in ROLES:
        raise ProgramError(program.name if isinstance(program, Program) else "<program>",
                           f"the bmv2 target runs switch pipelines only, not role {role!r}")
    validate(program)
    check_target(program, P4_CAPABILITIES)
    _check_names(program)
    gen = _Gen(program, role)
    head = [f"/* FlexNet Lab: program '{program.name}' as P4_16 for bmv2 (v1model), "
            f"role {role}.", *_provenance(program),
            " * Do not edit: change the model and regenerate. */",
            "#include <core.p4>",
            "/* the extern signatures used here: counter, register<T>, meter indexed by bit<32> */",
            "#define V1MODEL_VERSION 20180101",
            "#include <v1model.p4>", ""]
    lines = head + gen.header_types() + gen.parser() + gen.ingress() + gen.tail()
    return "\n".join(lines) + "\n"


def write_p4(program: Program, out_dir: str) -> list[str]:
    """Write <out_dir>/<name>.p4; with p4c-bm2-ss on PATH also compile it to <name>.json
    and <name>.p4info.txt. Returns the paths written."""
    text = generate_p4(program)
    os.makedirs(out_dir, exist_ok=True)
    name = program.name
    src = os.path.join(out_dir, f"{name}.p4")
    with open(src, "w") as fh:
        fh.write(text)
    p4c = shutil.which("p4c-bm2-ss")
    if p4c is None:
        return [src]
    info, json_ = f"{name}.p4info.txt", f"{name}.json"
    res = subprocess.run([p4c, "--p4runtime-files", info, "-o", json_, f"{name}.p4"],
                         cwd=out_dir, capture_output=True, text=True)
    if res.returncode != 0:
        raise CompileError(f"p4c-bm2-ss failed on {src} (exit {res.returncode}):\n"
                           + (res.stderr or res.stdout).strip())
    return [src, os.path.join(out_dir, json_), os.path.join(out_dir, info)]
