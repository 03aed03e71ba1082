"""eBPF C backend: a Program becomes one pipeline function for tc or XDP (compiled by bcc).

Shape of the generated code, so a student can follow it:
  parser   - one label per state; each copies its header from the packet onto the stack
             (bpf_*_load_bytes), records its offset and validity, then jumps on select();
  control  - tables applied in order, each only when its key headers are valid; a table is
             a BPF map (hash for exact, LPM trie, or a bounded array scanned for ternary)
             holding action records; a miss takes the record in the table's default map;
  deparser - headers changed by `set` are written back (IPv4 checksum recomputed);
  verdict  - switch: redirect out of std.egress_port or drop; host: pass or drop.
A drop is final: once an action drops, a later forward does not undo it (an ACL placed
before the forwarding table works), and port_tx[0] counts the packet as dropped.
The whole pipeline is one function, so a packet sees exactly one program version: the
target swaps versions by writing the root program's tail-call slot.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProgramError
from ..program.model import Action, Map, Op, Program, Stmt, Table, action_id
from .layout import MAX_ARGS, key_words, map_c_name, table_layout
from .probe import (COUNT_AT, COUNT_MAX, PAYLOAD_AT, PROBE_FRAME_BYTES, PROBE_MAGIC, PROBE_PORT,
                    SLOTS, SLOTS_AT)

ROLES = ("switch", "host")
HOOKS = ("tc", "xdp")
PIPE_MAP = "flx_pipe"        # root program's tail-call slots 0 and 1 (one per version)
SLOT_MAP = "flx_slot"        # root: [0] slot of untagged packets (the stamp), [1] tagging on
VCNT_MAP = "flx_vcnt"        # root (tc): packets per version seen while tagging is on
TRUST_MAP = "flx_trust"      # root (tc): ifindex -> 1 when the neighbour there stamps tags
FLOW_MAP = "flx_flows"       # root (tc): per-flow level, 5-tuple -> slot it started with, seen
FCFG_MAP = "flx_fcfg"        # root (tc): [0] per-flow generation (0: off), [1] idle time, us
FCNT_MAP = "flx_fcnt"        # root (tc): this generation's flow entries made/left per slot
FLOW_SLOTS = 4096            # flows remembered per ingress point (LRU beyond)
VER_MAP = "flx_ver"          # pipeline (tc): this loaded version's number (never shared)
TAG_VID = 0xFF0              # version tag: 802.1ad S-tag, VID 0xFF0 | version (0 or 1)
PORT_PEER, PORT_TAG = 1, 2   # flx_port.peer bits: redirect_peer; push the version tag
PORTS_MAP = "flx_ports"      # switch: logical port -> {ifindex, peer-mode}
INPORT_MAP = "flx_inport"    # switch: ifindex -> logical port
NEXT_MAP = "flx_next"        # host function in a chain: slot of the next function on its hook
# ops each hook can run; the placement and the delta checks read this
CAPABILITIES = {
    "tc": {"forward", "drop", "nop", "set", "push_vlan", "pop_vlan", "count", "map_add",
           "sketch_add", "rate_limit", "reg_write", "exact", "lpm", "ternary"},
    "xdp": {"forward", "drop", "nop", "set", "count", "map_add", "sketch_add", "rate_limit",
            "reg_write", "exact", "lpm", "ternary"},
}


@dataclass(frozen=True)
class EbpfSource:
    """Generated C plus what the loader needs to know about it."""
    program: str
    hook: str
    role: str
    text: str
    function: str = "pipeline"


def _ctx(hook: str) -> str:
    return "struct __sk_buff" if hook == "tc" else "struct xdp_md"


_PRELUDE = """\
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>

struct flx_action { u32 action; u32 prio; u64 args[4]; };
struct flx_ctr { u64 packets; u64 bytes; };
struct flx_meter { u64 tokens; u64 last_ns; };
struct flx_port { u32 ifindex; u32 peer; };
struct flx_std { u64 ingress_port; u64 egress_port; u64 pkt_len; u32 drop; };
"""


_TC_WIRE_VIEW = """\
/* The kernel hands tc a frame's outer 802.1Q/802.1ad tag out of band (skb->vlan_*), not in
 * the frame. The parser and deparser work on the frame as it is on the wire: with a tag out
 * of band (vl), wire bytes 12..15 are that tag (tag[]) and wire byte n >= 16 is frame byte
 * n - 4. push_vlan/pop_vlan change the out-of-band tag and leave the frame bytes alone. */
static __always_inline int flx_load(struct __sk_buff *ctx, u32 off, u8 *to, u32 len,
                                    const u8 *tag, int vl)
{
    if (!vl || off >= 16)
        return bpf_skb_load_bytes(ctx, vl ? off - 4 : off, to, len);
    /* a header over wire bytes 12..15: frame bytes before the tag, the tag's bytes, frame
     * bytes from 12 on: at most two loads (byte-wise loads cost the verifier ~5x more) */
    u32 a = off < 12 ? 12 - off : 0;
    if (a > len)
        a = len;
    if (a && bpf_skb_load_bytes(ctx, off, to, a) < 0)
        return -1;
    for (u32 w = 12; w < 16; w++)
        if (w >= off && w < off + len)
            to[w - off] = tag[w - 12];
    if (off + len > 16 && bpf_skb_load_bytes(ctx, 12, to + (16 - off), off + len - 16) < 0)
        return -1;
    return 0;
}

static __always_inline void flx_store(struct __sk_buff *ctx, u32 off, const u8 *from,
                                      u32 len, u8 *tag, int vl)
{
    if (!vl || off >= 16) {
        bpf_skb_store_bytes(ctx, vl ? off - 4 : off, from, len, 0);
        return;
    }
    u32 a = off < 12 ? 12 - off : 0;
    if (a > len)
        a = len;
    if (a)
        bpf_skb_store_bytes(ctx, off, from, a, 0);
    for (u32 w = 12; w < 16; w++)
        if (w >= off && w < off + len)
            tag[w - 12] = from[w - off];
    if (off + len > 16)
        bpf_skb_store_bytes(ctx, 12, from + (16 - off), off + len - 16, 0);
}
"""


def root_source(hook: str) -> str:
    """The program attached to the interface. It never changes: it jumps into a slot of
    flx_pipe, so replacing the pipeline is one map write, atomic for every packet. The slot
    number is read from a map on purpose: with a constant key the kernel would patch the
    root's JIT code on every update (text poke, IPIs to all CPUs: milliseconds under load);
    a key it cannot predict makes the update a plain pointer exchange.

    tc roots also carry the version tag of per-packet consistent updates (plan/two_phase.py):
    a packet arriving with the lab's S-tag (802.1ad, VID 0xFF0|v) from a trusted neighbour
    runs the version in slot v; any other packet runs the stamp slot flx_slot[0]. The tag is
    popped here whether trusted or not, so a tag forged by a host never selects a version
    and never reaches a program. While tagging is on (flx_slot[1]) the version goes to the
    pipeline in cb[0] (it re-stamps towards eBPF switches) and is counted in flx_vcnt (the
    drain wait watches those counters). cb[1] is 1 for an oracle probe (compiler/probe.py:
    the pipeline writes its version into the probe's trailer). A packet
    entering the network (no trusted tag) runs the stamp, or, while a per-flow change is
    on, the slot its flow started with (_flow_source)."""
    ctx, fail = _ctx(hook), ("TC_ACT_SHOT" if hook == "tc" else "XDP_DROP")
    head = _PRELUDE + f"BPF_PROG_ARRAY({PIPE_MAP}, 2);\nBPF_ARRAY({SLOT_MAP}, u32, 4);\n"
    if hook != "tc":
        return (head + f"\nint root({ctx} *ctx) {{\n"
                f"    u32 zero = 0; u32 *slot = {SLOT_MAP}.lookup(&zero);\n"
                f"    {PIPE_MAP}.call(ctx, slot ? *slot : 0);\n"
                f"    return {fail};  /* empty slot: never reached once a pipeline is set */\n}}\n")
    magic = " && ".join(f"p[{PAYLOAD_AT + i}] == {b}"
                        for i, b in enumerate(PROBE_MAGIC.to_bytes(4, "big")))
    return head + f"""BPF_ARRAY({VCNT_MAP}, u64, 2);
BPF_HASH({TRUST_MAP}, u32, u32, 64);
{_flow_source()}

int root({ctx} *ctx) {{
    u32 zero = 0, one = 1;
    u32 *slot = {SLOT_MAP}.lookup(&zero), *tagging = {SLOT_MAP}.lookup(&one);
    u32 v = slot ? (*slot & 1) : 0, entering = 1;
    if (ctx->vlan_present && ctx->vlan_proto == bpf_htons(ETH_P_8021AD) &&
        (ctx->vlan_tci & 0x0ffe) == {TAG_VID:#x}) {{
        u32 ifi = ctx->ingress_ifindex; u32 *trusted = {TRUST_MAP}.lookup(&ifi);
        if (trusted && *trusted) {{
            v = ctx->vlan_tci & 1; entering = 0;
        }}
        bpf_skb_vlan_pop(ctx);
    }}
    if (entering)   /* per-flow level: a known, not idle flow keeps its slot */
        v = flx_flow_slot(ctx, v);
    ctx->cb[0] = 0; ctx->cb[1] = 0;
    if (tagging && *tagging) {{
        u64 *c = {VCNT_MAP}.lookup(&v);
        if (c) __sync_fetch_and_add(c, 1);
        ctx->cb[0] = v + 1;
    }}
    {{  /* oracle probe: IPv4 (no options) UDP to port {PROBE_PORT}, payload magic + trailer */
        u8 *p = (u8 *)(long)ctx->data, *end = (u8 *)(long)ctx->data_end;
        if (p + {PROBE_FRAME_BYTES} <= end && p[12] == 0x08 && p[13] == 0x00 && p[14] == 0x45 &&
            p[23] == 17 && p[36] == {PROBE_PORT >> 8} && p[37] == {PROBE_PORT & 0xff} &&
            {magic})
            ctx->cb[1] = 1;
    }}
    {PIPE_MAP}.call(ctx, v);
    return {fail};  /* empty slot: never reached once a pipeline is set */
}}
"""


def _flow_source() -> str:
    """The per-flow level's part of the tc root (plan/two_phase.py, level per-flow): the
    slot a packet entering the network runs. Off (flx_fcfg[0] == 0, outside a per-flow
    change) it is one array read and the stamp. On, an IPv4 packet's flow (source,
    destination, protocol and, for TCP/UDP, ports; fragments without ports; each
    direction its own flow) is looked up in an LRU hash: a flow of this generation seen
    less than the idle time ago keeps the slot it started with, any other flow starts
    now with the stamp. Non-IPv4 packets (ARP) are no flow: they run the stamp. The
    generation (fresh for every change) makes entries of an earlier change count as new.

    A flow's state is one word (last seen, in 1.024 us units, << 32 | generation << 1 |
    slot), so a flow starting anew is one compare-and-swap: two CPUs never both count it.
    flx_fcnt counts, for this generation, the entries that took slot s ([s]: inserted,
    taken over from another generation, or started again after idle) and that left slot
    s in place ([2 + s]: started again). The LRU evicts silently when the table is full;
    made - left - the entries still there (read once tracking is off) is how many were
    evicted (EbpfDatapath.flow_census): a flow evicted while active starts again with the
    stamp, which after the flip is the new version."""
    return f"""struct flx_fkey {{ u32 src, dst; u16 sport, dport; u32 proto; }};
struct flx_fval {{ u64 w; }};
BPF_TABLE("lru_hash", struct flx_fkey, struct flx_fval, {FLOW_MAP}, {FLOW_SLOTS});
BPF_ARRAY({FCFG_MAP}, u32, 2);
BPF_ARRAY({FCNT_MAP}, u64, 4);

static __always_inline void flx_fcount(u32 i)
{{
    u64 *c = {FCNT_MAP}.lookup(&i);
    if (c) __sync_fetch_and_add(c, 1);
}}

static __always_inline u32 flx_flow_slot(struct __sk_buff *ctx, u32 stamp)
{{
    u32 zero = 0, one = 1;
    u32 *gen = {FCFG_MAP}.lookup(&zero);
    if (!gen || !*gen)
        return stamp;
    u8 ip[20]; u16 et = 0;
    if (bpf_skb_load_bytes(ctx, 12, &et, 2) < 0 || et != bpf_htons(ETH_P_IP) ||
        bpf_skb_load_bytes(ctx, 14, ip, 20) < 0 || (ip[0] >> 4) != 4)
        return stamp;
    struct flx_fkey k = {{}};
    __builtin_memcpy(&k.src, ip + 12, 4); __builtin_memcpy(&k.dst, ip + 16, 4);
    k.proto = ip[9];
    if ((ip[9] == 6 || ip[9] == 17) && !(((ip[6] & 0x3f) << 8) | ip[7]) &&
        bpf_skb_load_bytes(ctx, 14 + (ip[0] & 15) * 4, &k.sport, 4) < 0)
        return stamp;
    u32 g = *gen & 0x7fffffff;
    u64 now = bpf_ktime_get_ns() >> 10;
    struct flx_fval *f = {FLOW_MAP}.lookup(&k);
    if (!f) {{
        struct flx_fval n = {{ (now << 32) | (g << 1) | stamp }};
        if ({FLOW_MAP}.insert(&k, &n) == 0)
            flx_fcount(stamp);
        return stamp;
    }}
    u64 w = f->w;
    u32 lo = (u32)w, age = (u32)now - (u32)(w >> 32);
    u32 *idle = {FCFG_MAP}.lookup(&one);
    if ((lo >> 1) == g && age < (u32)(((u64)(idle ? *idle : 100000) * 1000) >> 10)) {{
        if (age > 1024)   /* the time stamp moves about once a ms, not every packet */
            __sync_val_compare_and_swap(&f->w, w, (now << 32) | lo);
        return lo & 1;
    }}
    u64 got = __sync_val_compare_and_swap(&f->w, w, (now << 32) | (g << 1) | stamp);
    if (got != w)         /* another CPU changed it first: what it decided holds */
        return ((u32)got >> 1) == g ? ((u32)got & 1) : stamp;
    if ((lo >> 1) == g)
        flx_fcount(2 + (lo & 1));
    flx_fcount(stamp);
    return stamp;
}}
"""


class _Gen:
    def __init__(self, program: Program, hook: str, role: str, chain: bool = False):
        self.p, self.hook, self.role, self.chain = program, hook, role, chain
        self.lines: list[str] = []
        self.tmp = 0
        # headers some `set` can change: only these are written back. A program that
        # writes none has no write-back at all, so the verifier need not walk the rest of
        # the pipeline once per way the parser read the frame (tag out of band or not)
        self.written = {op.args[0].split(".")[0] for ops in
                        [a.ops for a in program.actions] + [st.ops for st in program.control]
                        for op in ops if op.name == "set"} - {"meta", "std"}

    # --- expressions --------------------------------------------------------------------
    def field_get(self, ref: str) -> str:
        scope, _, name = ref.partition(".")
        if scope == "std":
            return f"std.{name}"
        if scope == "meta":
            return f"meta.{name}"
        hdr = self.p.header(scope)
        off, width = hdr.offset(name), hdr.field(name).bits
        first, last = off // 8, (off + width - 1) // 8
        parts = [f"((u64)h_{scope}[{i}] << {8 * (last - i)})" for i in range(first, last + 1)]
        shift = 8 * (last + 1) - (off + width)
        mask = (1 << width) - 1
        expr = " | ".join(parts)
        return f"((({expr}) >> {shift}) & {mask:#x}ULL)"

    def field_set(self, ref: str, value: str) -> list[str]:
        scope, _, name = ref.partition(".")
        if scope == "meta":
            return [f"meta.{name} = {value};"]
        hdr = self.p.header(scope)
        off, width = hdr.offset(name), hdr.field(name).bits
        first, last = off // 8, (off + width - 1) // 8
        v = self.fresh("v")
        out = [f"{{ u64 {v} = {value};"]
        end = off + width                          # bit position after the field
        for i in range(first, last + 1):
            lo, hi = i * 8, i * 8 + 8              # bits of this byte
            s, e = max(lo, off), min(hi, end)
            byte_mask = ((1 << (e - s)) - 1) << (hi - e)
            shift = end - e                        # value bits to drop for this byte
            out.append(f"  h_{scope}[{i}] = (h_{scope}[{i}] & {0xFF & ~byte_mask:#x}) | "
                       f"(((u8)({v} >> {shift}) << {hi - e}) & {byte_mask:#x});")
        out.append(f"  dirty_{scope} = 1; }}")
        return out

    def value(self, arg, action: Action | None) -> str:
        if isinstance(arg, bool):
            return str(int(arg))
        if isinstance(arg, int):
            return f"{arg}ULL"
        if isinstance(arg, str) and arg.startswith("$"):
            names = [n for n, _ in action.params]
            return f"a->args[{names.index(arg[1:])}]"
        return self.field_get(arg)

    def fresh(self, stem: str) -> str:
        self.tmp += 1
        return f"{stem}{self.tmp}"

    # --- declarations -------------------------------------------------------------------
    def declarations(self) -> list[str]:
        out = [_PRELUDE]
        if self.chain:
            out.append(f"BPF_PROG_ARRAY({NEXT_MAP}, 1);  /* the next function on this hook */")
        if self.role == "switch":
            out += [f"BPF_ARRAY({PORTS_MAP}, struct flx_port, 64);",
                    f"BPF_HASH({INPORT_MAP}, u32, u32, 64);"]
        if self.hook == "tc":   # the number oracle probes record (root_source)
            out.append(f"BPF_ARRAY({VER_MAP}, u32, 1);")
        for m in self.p.maps:
            out.append(self.map_decl(m))
        for t in self.p.tables:
            out += self.table_decl(t)
        out.append("")
        out.append("struct flx_meta {" + "".join(f" u64 {f.name};" for f in self.p.metadata)
                   + " u64 _pad; };")
        return out

    def map_decl(self, m: Map) -> str:
        name = map_c_name("m", m.name)
        if m.kind == "counter":
            return f"BPF_ARRAY({name}, struct flx_ctr, {m.size});"
        if m.kind == "register":
            return f"BPF_ARRAY({name}, u64, {m.size});"
        if m.kind == "sketch":
            return f"BPF_ARRAY({name}, u64, {m.size * m.rows});"
        words = key_words(m)
        kt = f"struct k_{m.name} {{ u64 w[{words}]; }};\n"
        vt = "struct flx_ctr" if m.kind == "hash" else "struct flx_meter"
        return kt + f"BPF_HASH({name}, struct k_{m.name}, {vt}, {m.size});"

    def table_decl(self, t: Table) -> list[str]:
        lay = table_layout(self.p, t)
        name, dname = map_c_name("t", t.name), map_c_name("d", t.name)
        out = [f"/* table {t.name}: {lay.kind}, keys "
               + ", ".join(k.field for k in t.keys) + " */"]
        if lay.kind == "lpm":
            nbytes = lay.key_size - 4
            out.append(f"struct k_{t.name} {{ u32 prefixlen; u8 data[{nbytes}]; }};")
            out.append(f"BPF_LPM_TRIE({name}, struct k_{t.name}, struct flx_action, {t.size});")
        elif lay.kind == "ternary":
            out.append(f"struct e_{t.name} {{ struct flx_action a; u64 value[{lay.nkeys}]; "
                       f"u64 mask[{lay.nkeys}]; }};")
            out.append(f"BPF_ARRAY({name}, struct e_{t.name}, {t.size});")
        else:
            out.append(f"struct k_{t.name} {{ u64 w[{lay.nkeys}]; }};")
            out.append(f"BPF_HASH({name}, struct k_{t.name}, struct flx_action, {t.size});")
        out.append(f"BPF_ARRAY({dname}, struct flx_action, 1);")
        return out

    # --- parser ------------------------------------------------------------------------
    def parser(self) -> list[str]:
        out = [f"    goto st_{self.p.parser[0].name};"]
        for st in self.p.parser:
            out.append(f"st_{st.name}:")
            if st.extract:
                h = self.p.header(st.extract)
                load = (f"flx_load(ctx, off, h_{h.name}, {h.size}, flx_tag, flx_vl)"
                        if self.hook == "tc" else
                        f"bpf_xdp_load_bytes(ctx, off, h_{h.name}, {h.size})")
                out += [f"    if ({load} < 0) goto reject;",
                        f"    off_{h.name} = off; valid_{h.name} = 1; off += {h.size};"]
            for dst, src in st.sets:
                out.append(f"    meta.{dst.split('.', 1)[1]} = {self.field_get(src)};")
            tr = st.transition
            if tr.select:
                sel = [self.field_get(f) for f in tr.select]
                for values, target in tr.cases:
                    cond = " && ".join(f"{s} == {v:#x}ULL" for s, v in zip(sel, values))
                    out.append(f"    if ({cond}) goto {self.label(target)};")
            out.append(f"    goto {self.label(tr.default)};")
        return out

    @staticmethod
    def label(state: str) -> str:
        return {"accept": "accept", "reject": "reject"}.get(state, f"st_{state}")

    # --- control -----------------------------------------------------------------------
    def control(self) -> list[str]:
        out: list[str] = []
        for stmt in self.p.control:
            out += self.stmt(stmt)
        return out

    def stmt(self, stmt: Stmt) -> list[str]:
        if stmt.table is None:
            out = ["    {"]
            for op in stmt.ops:
                out += ["        " + ln for ln in self.op(op, None)]
            return out + ["    }"]
        return self.apply(self.p.table(stmt.table))

    def apply(self, t: Table) -> list[str]:
        lay = table_layout(self.p, t)
        headers = sorted({k.field.split(".")[0] for k in t.keys} - {"meta", "std"})
        guard = " && ".join(f"valid_{h}" for h in headers) or "1"
        tname, dname = map_c_name("t", t.name), map_c_name("d", t.name)
        keys = [self.field_get(k.field) for k in t.keys]
        out = [f"    if ({guard}) {{  /* apply {t.name} */",
               "        struct flx_action *a = 0; u32 zero = 0;"]
        if lay.kind == "lpm":
            nbytes = lay.key_size - 4
            shift = nbytes * 8 - lay.key_bits[0]
            out.append(f"        struct k_{t.name} k = {{ .prefixlen = {nbytes * 8} }};")
            out.append(f"        u64 kv = {keys[0]} << {shift};")
            for i in range(nbytes):
                out.append(f"        k.data[{i}] = (u8)(kv >> {8 * (nbytes - 1 - i)});")
            out.append(f"        a = {tname}.lookup(&k);")
        elif lay.kind == "ternary":
            out.append("        u64 kv[%d] = { %s };" % (lay.nkeys, ", ".join(keys)))
            cond = " && ".join(f"((kv[{i}] ^ e->value[{i}]) & e->mask[{i}]) == 0"
                               for i in range(lay.nkeys))
            out += [f"        for (u32 i = 0; i < {t.size}; i++) {{",
                    "            u32 idx = i;",
                    f"            struct e_{t.name} *e = {tname}.lookup(&idx);",
                    "            if (!e || !e->a.action) break;  /* entries are packed */",
                    f"            if ({cond}) {{ a = &e->a; break; }}",
                    "        }"]
        else:
            out.append(f"        struct k_{t.name} k = {{}};")
            for i, kexpr in enumerate(keys):
                out.append(f"        k.w[{i}] = {kexpr};")
            out.append(f"        a = {tname}.lookup(&k);")
        out += [f"        if (!a) a = {dname}.lookup(&zero);",
                "        if (a) switch (a->action) {"]
        for aname in t.actions:
            act = self.p.action(aname)
            out.append(f"        case {action_id(aname)}u: /* {aname} */")
            for op in act.ops:
                out += ["            " + ln for ln in self.op(op, act)]
            out.append("            break;")
        out += ["        default: break;", "        }", "    }"]
        return out

    def op(self, op: Op, action: Action | None) -> list[str]:
        a = op.args
        if op.name == "forward":
            # drop is final: a later table's forward does not bring the packet back
            return [f"if (!std.drop) std.egress_port = {self.value(a[0], action)};"]
        if op.name == "drop":
            return ["std.drop = 1; std.egress_port = 0;"]
        if op.name == "nop":
            return [";"]
        if op.name == "set":
            return self.field_set(a[0], self.value(a[1], action))
        if op.name == "push_vlan":
            return [f"bpf_skb_vlan_push(ctx, bpf_htons(ETH_P_8021Q), "
                    f"(u16){self.value(a[0], action)});"]
        if op.name == "pop_vlan":
            return ["bpf_skb_vlan_pop(ctx);"]
        if op.name == "count":
            m = map_c_name("m", a[0])
            return [f"{{ u32 i = {self.value(a[1], action)}; struct flx_ctr *c = {m}.lookup(&i);",
                    "  if (c) { __sync_fetch_and_add(&c->packets, 1); "
                    "__sync_fetch_and_add(&c->bytes, std.pkt_len); } }"]
        if op.name == "reg_write":
            m = map_c_name("m", a[0])
            return [f"{{ u32 i = {self.value(a[1], action)}; u64 v = {self.value(a[2], action)};"
                    f" {m}.update(&i, &v); }}"]
        if op.name in ("map_add", "sketch_add", "rate_limit"):
            return self.keyed_op(op, action)
        raise ProgramError(f"op {op.name}", "no eBPF code generator for this op")

    def keyed_op(self, op: Op, action: Action | None) -> list[str]:
        m = self.p.map(op.args[0])
        fields = op.args[1] if isinstance(op.args[1], tuple) else (op.args[1],)
        words = key_words(m)
        vals = [self.value(f, action) for f in fields][:words]
        vals += ["0"] * (words - len(vals))
        name = map_c_name("m", m.name)
        out = [f"{{ struct k_{m.name} k = {{ .w = {{ {', '.join(vals)} }} }};"
               if m.kind != "sketch" else
               f"{{ u64 kw[{words}] = {{ {', '.join(vals)} }};"]
        if m.kind == "hash":
            out += [f"  struct flx_ctr *c = {name}.lookup(&k);",
                    f"  if (!c) {{ struct flx_ctr z = {{}}; {name}.update(&k, &z); "
                    f"c = {name}.lookup(&k); }}",
                    "  if (c) { __sync_fetch_and_add(&c->packets, 1); "
                    "__sync_fetch_and_add(&c->bytes, std.pkt_len); } }"]
        elif m.kind == "sketch":
            out.append("  u64 h = 0xcbf29ce484222325ULL;")
            for w in range(words):
                out.append(f"  h = (h ^ kw[{w}]) * 0x100000001b3ULL;")
            for r in range(m.rows):
                seed = 0x9E3779B97F4A7C15 * (r + 1) & 0xFFFFFFFFFFFFFFFF
                out += [f"  {{ u64 x = (h ^ {seed:#x}ULL) * 0xff51afd7ed558ccdULL; x ^= x >> 33;",
                        f"    u32 i = {r * m.size} + (u32)(x % {m.size});",
                        f"    u64 *c = {name}.lookup(&i); if (c) __sync_fetch_and_add(c, 1); }}"]
            out.append("}")
        else:  # meter: token bucket in bytes, refilled at m.rate bytes/s up to m.burst
            out += [f"  struct flx_meter *b = {name}.lookup(&k); u64 now = bpf_ktime_get_ns();",
                    f"  if (!b) {{ struct flx_meter n = {{ {m.burst}ULL, now }}; "
                    f"{name}.update(&k, &n); b = {name}.lookup(&k); }}",
                    "  if (b) {",
                    f"    u64 add = (now - b->last_ns) * {m.rate}ULL / 1000000000ULL;",
                    f"    u64 t = b->tokens + add; if (t > {m.burst}ULL) t = {m.burst}ULL;",
                    "    if (add) b->last_ns = now;",
                    "    if (t >= std.pkt_len) t -= std.pkt_len; "
                    "else { std.drop = 1; std.egress_port = 0; }",
                    "    b->tokens = t;", "  } }"]
        return out

    # --- deparser and verdict -----------------------------------------------------------
    def deparser(self) -> list[str]:
        out = []
        for h in self.p.headers:
            if h.name not in self.written:
                continue
            out.append(f"    if (dirty_{h.name}) {{")
            if h.name == "ipv4" and h.field("checksum"):
                out += ["        u32 s = 0; h_ipv4[10] = 0; h_ipv4[11] = 0;",
                        "        for (int i = 0; i < 20; i += 2) s += ((u32)h_ipv4[i] << 8) | h_ipv4[i + 1];",
                        "        s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16); s = ~s & 0xffff;",
                        "        h_ipv4[10] = s >> 8; h_ipv4[11] = s & 0xff;"]
            out += [f"        flx_store(ctx, off_{h.name}, h_{h.name}, {h.size}, flx_tag, flx_vl);"
                    if self.hook == "tc" else
                    f"        bpf_xdp_store_bytes(ctx, off_{h.name}, h_{h.name}, {h.size});",
                    "    }"]
        if self.hook == "tc" and self.written:   # a field of the out-of-band tag was set: re-tag
            out += ["    if (flx_vl && ctx->vlan_present && "
                    "__builtin_memcmp(flx_tag, flx_tag0, 4) != 0) {",
                    "        bpf_skb_vlan_pop(ctx);",
                    "        bpf_skb_vlan_push(ctx, bpf_htons(((u16)flx_tag[0] << 8) | flx_tag[1]), "
                    "((u16)flx_tag[2] << 8) | flx_tag[3]);",
                    "    }"]
        return out

    def verdict(self, record: list[str]) -> list[str]:
        """The packet's fate; `record` (an oracle probe's trailer written) comes first for a
        host function, right before the redirect for a switch (a dropped probe records
        nothing)."""
        if self.role == "host":
            ok, bad = ("TC_ACT_OK", "TC_ACT_SHOT") if self.hook == "tc" else ("XDP_PASS", "XDP_DROP")
            stamp = ([f"    if (!std.drop && ctx->cb[0])  /* host egress: stamp the version */",
                      f"        bpf_skb_vlan_push(ctx, bpf_htons(ETH_P_8021AD), "
                      f"{TAG_VID:#x} | ((ctx->cb[0] - 1) & 1));"] if self.hook == "tc" else [])
            if self.chain:   # a packet this function passes goes on to the next one (which
                # stamps at its own end); the last one stamps
                return record + [f"    if (std.drop) return {bad};",
                                 f"    {NEXT_MAP}.call(ctx, 0);  /* no next function: pass */"] + \
                    stamp + [f"    return {ok};", "reject:", f"    return {bad};"]
            return record + stamp + [f"    return std.drop ? {bad} : {ok};", "reject:",
                                     f"    return {bad};"]
        if self.hook != "tc":
            raise ProgramError(f"program {self.p.name}", "the eBPF switch runs on tc only")
        return ["    if (std.drop || std.egress_port == 0) return TC_ACT_SHOT;",
                "    { u32 p = std.egress_port; struct flx_port *pp = "
                f"{PORTS_MAP}.lookup(&p);",
                "      if (!pp || !pp->ifindex) return TC_ACT_SHOT;"] + \
            ["  " + ln for ln in record] + [
                "      /* towards an eBPF switch while tagging is on: carry the version */",
                f"      if (ctx->cb[0] && (pp->peer & {PORT_TAG}))",
                f"          bpf_skb_vlan_push(ctx, bpf_htons(ETH_P_8021AD), "
                f"{TAG_VID:#x} | ((ctx->cb[0] - 1) & 1));",
                "      /* between switches: straight into the peer namespace's ingress */",
                f"      return (pp->peer & {PORT_PEER}) ? bpf_redirect_peer(pp->ifindex, 0) "
                ": bpf_redirect(pp->ifindex, 0); }",
                "reject:", "    return TC_ACT_SHOT;"]

    def function(self) -> list[str]:
        ctx = _ctx(self.hook)
        out = [f"int pipeline({ctx} *ctx) {{",
               "    struct flx_std std = {}; struct flx_meta meta = {}; u32 off = 0;"]
        if self.hook == "tc":
            keep = bool(self.written)   # the tag as read, to see whether a set changed it
            out += ["    u8 flx_tag[4] = {}" + (", flx_tag0[4] = {}" if keep else "")
                    + "; int flx_vl = ctx->vlan_present;",
                    "    if (flx_vl) {",
                    "        u16 tpid = bpf_ntohs(ctx->vlan_proto), tci = ctx->vlan_tci;",
                    "        flx_tag[0] = tpid >> 8; flx_tag[1] = tpid; "
                    "flx_tag[2] = tci >> 8; flx_tag[3] = tci;"]
            out += ["        __builtin_memcpy(flx_tag0, flx_tag, 4);"] if keep else []
            out += ["    }",
                    "    std.pkt_len = ctx->len + (flx_vl ? 4 : 0);   /* as on the wire */"]
        else:
            out.append("    std.pkt_len = (u64)((long)ctx->data_end - (long)ctx->data);")
        # a program that pushes or pops a tag may move the frame's bytes (a tag out of band
        # goes into the frame under a new one): it records before it runs
        shifts = any(op.name in ("push_vlan", "pop_vlan") for ops in
                     [a.ops for a in self.p.actions] + [st.ops for st in self.p.control]
                     for op in ops)
        record = self.probe_record() if self.hook == "tc" else []
        if shifts:
            out, record = out + record, []
        if self.role == "switch":
            out += ["    { u32 ifi = ctx->ingress_ifindex; u32 *pp = "
                    f"{INPORT_MAP}.lookup(&ifi); std.ingress_port = pp ? *pp : 0; }}"]
        for h in self.p.headers:
            out.append(f"    u8 h_{h.name}[{h.size}] = {{}}; u32 off_{h.name} = 0; "
                       f"u8 valid_{h.name} = 0, dirty_{h.name} = 0;")
        out += self.parser()
        out.append("accept:")
        out += self.control()
        out += self.deparser()
        # otherwise recorded last, on the way out: little is left for the verifier to walk
        # once per way the probe test went (from the start, the whole program twice)
        out += self.verdict(record)
        out.append("}")
        return out

    @staticmethod
    def probe_record() -> list[str]:
        """An oracle probe (the root set cb[1]): this version into slot[count] of its
        trailer, count + 1 (saturating), at fixed frame offsets (the root popped the lab's
        tag and saw IPv4 right after ethernet)."""
        count, slot0 = PAYLOAD_AT + COUNT_AT, PAYLOAD_AT + SLOTS_AT
        return ["    if (ctx->cb[1]) {  /* an oracle probe: this version into its next slot */",
                "        u8 n = 0;",
                f"        if (bpf_skb_load_bytes(ctx, {count}, &n, 1) == 0) {{",
                f"            u32 z = 0, *g = {VER_MAP}.lookup(&z);",
                f"            if (n < {SLOTS}) {{",
                "                u32 v = bpf_htonl(g ? *g : 0);",
                f"                bpf_skb_store_bytes(ctx, {slot0} + 4 * (u32)n, &v, 4, 0);",
                "            }",
                f"            if (n < {COUNT_MAX}) {{  /* saturates: above {SLOTS}, the trailer "
                "overflowed */",
                "                n += 1;",
                f"                bpf_skb_store_bytes(ctx, {count}, &n, 1, 0);",
                "            }",
                "        }",
                "    }"]


def generate(program: Program, hook: str = "tc", role: str = "switch",
             chain: bool = False) -> EbpfSource:
    """C source of `program` for a tc or XDP hook, as a switch pipeline or a host function;
    chain: a host function followed by others on its hook (it tail-calls `flx_next`)."""
    if hook not in HOOKS or role not in ROLES or (chain and role != "host"):
        raise ProgramError(program.name, f"unknown hook/role {hook}/{role}")
    gen = _Gen(program, hook, role, chain)
    text = "\n".join([f"/* FlexNet Lab: program '{program.name}' for {hook} ({role}"
                      f"{', in a chain' if chain else ''}). "
                      "Generated from the model; do not edit. */"]
                     + gen.declarations() + [""] + ([_TC_WIRE_VIEW] if hook == "tc" else [])
                     + gen.function()) + "\n"
    return EbpfSource(program.name, hook, role, text)
