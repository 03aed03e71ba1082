/* FlexNet Lab: program 'flow_counter' for tc (host). Generated from the model; do not edit. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>

struct flx_action { u32 action; u32 prio; u64 args[4]; };
struct flx_ctr { u64 packets; u64 bytes; };
struct flx_meter { u64 tokens; u64 last_ns; };
struct flx_port { u32 ifindex; u32 peer; };
struct flx_std { u64 ingress_port; u64 egress_port; u64 pkt_len; u32 drop; };

BPF_ARRAY(flx_ver, u32, 1);
BPF_ARRAY(m_pkts, struct flx_ctr, 1);
struct k_flows { u64 w[5]; };
BPF_HASH(m_flows, struct k_flows, struct flx_ctr, 4096);

struct flx_meta { u64 l3_dst; u64 ip_proto; u64 l4_sport; u64 l4_dport; u64 _pad; };

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

int pipeline(struct __sk_buff *ctx) {
    struct flx_std std = {}; struct flx_meta meta = {}; u32 off = 0;
    u8 flx_tag[4] = {}; int flx_vl = ctx->vlan_present;
    if (flx_vl) {
        u16 tpid = bpf_ntohs(ctx->vlan_proto), tci = ctx->vlan_tci;
        flx_tag[0] = tpid >> 8; flx_tag[1] = tpid; flx_tag[2] = tci >> 8; flx_tag[3] = tci;
    }
    std.pkt_len = ctx->len + (flx_vl ? 4 : 0);   /* as on the wire */
    u8 h_ethernet[14] = {}; u32 off_ethernet = 0; u8 valid_ethernet = 0, dirty_ethernet = 0;
    u8 h_ipv4[20] = {}; u32 off_ipv4 = 0; u8 valid_ipv4 = 0, dirty_ipv4 = 0;
    u8 h_tcp[20] = {}; u32 off_tcp = 0; u8 valid_tcp = 0, dirty_tcp = 0;
    u8 h_udp[8] = {}; u32 off_udp = 0; u8 valid_udp = 0, dirty_udp = 0;
    goto st_start;
st_start:
    if (flx_load(ctx, off, h_ethernet, 14, flx_tag, flx_vl) < 0) goto reject;
    off_ethernet = off; valid_ethernet = 1; off += 14;
    if ((((((u64)h_ethernet[12] << 8) | ((u64)h_ethernet[13] << 0)) >> 0) & 0xffffULL) == 0x800ULL) goto st_ipv4;
    goto accept;
st_ipv4:
    if (flx_load(ctx, off, h_ipv4, 20, flx_tag, flx_vl) < 0) goto reject;
    off_ipv4 = off; valid_ipv4 = 1; off += 20;
    meta.l3_dst = (((((u64)h_ipv4[16] << 24) | ((u64)h_ipv4[17] << 16) | ((u64)h_ipv4[18] << 8) | ((u64)h_ipv4[19] << 0)) >> 0) & 0xffffffffULL);
    meta.ip_proto = (((((u64)h_ipv4[9] << 0)) >> 0) & 0xffULL);
    if ((((((u64)h_ipv4[0] << 0)) >> 0) & 0xfULL) == 0x5ULL && (((((u64)h_ipv4[9] << 0)) >> 0) & 0xffULL) == 0x6ULL) goto st_tcp;
    if ((((((u64)h_ipv4[0] << 0)) >> 0) & 0xfULL) == 0x5ULL && (((((u64)h_ipv4[9] << 0)) >> 0) & 0xffULL) == 0x11ULL) goto st_udp;
    goto accept;
st_tcp:
    if (flx_load(ctx, off, h_tcp, 20, flx_tag, flx_vl) < 0) goto reject;
    off_tcp = off; valid_tcp = 1; off += 20;
    meta.l4_sport = (((((u64)h_tcp[0] << 8) | ((u64)h_tcp[1] << 0)) >> 0) & 0xffffULL);
    meta.l4_dport = (((((u64)h_tcp[2] << 8) | ((u64)h_tcp[3] << 0)) >> 0) & 0xffffULL);
    goto accept;
st_udp:
    if (flx_load(ctx, off, h_udp, 8, flx_tag, flx_vl) < 0) goto reject;
    off_udp = off; valid_udp = 1; off += 8;
    meta.l4_sport = (((((u64)h_udp[0] << 8) | ((u64)h_udp[1] << 0)) >> 0) & 0xffffULL);
    meta.l4_dport = (((((u64)h_udp[2] << 8) | ((u64)h_udp[3] << 0)) >> 0) & 0xffffULL);
    goto accept;
accept:
    {
        { u32 i = 0ULL; struct flx_ctr *c = m_pkts.lookup(&i);
          if (c) { __sync_fetch_and_add(&c->packets, 1); __sync_fetch_and_add(&c->bytes, std.pkt_len); } }
    }
    {
        { struct k_flows k = { .w = { (((((u64)h_ipv4[12] << 24) | ((u64)h_ipv4[13] << 16) | ((u64)h_ipv4[14] << 8) | ((u64)h_ipv4[15] << 0)) >> 0) & 0xffffffffULL), (((((u64)h_ipv4[16] << 24) | ((u64)h_ipv4[17] << 16) | ((u64)h_ipv4[18] << 8) | ((u64)h_ipv4[19] << 0)) >> 0) & 0xffffffffULL), meta.ip_proto, meta.l4_sport, meta.l4_dport } };
          struct flx_ctr *c = m_flows.lookup(&k);
          if (!c) { struct flx_ctr z = {}; m_flows.update(&k, &z); c = m_flows.lookup(&k); }
          if (c) { __sync_fetch_and_add(&c->packets, 1); __sync_fetch_and_add(&c->bytes, std.pkt_len); } }
    }
    if (ctx->cb[1]) {  /* an oracle probe: this version into its next slot */
        u8 n = 0;
        if (bpf_skb_load_bytes(ctx, 50, &n, 1) == 0) {
            u32 z = 0, *g = flx_ver.lookup(&z);
            if (n < 8) {
                u32 v = bpf_htonl(g ? *g : 0);
                bpf_skb_store_bytes(ctx, 54 + 4 * (u32)n, &v, 4, 0);
            }
            if (n < 255) {  /* saturates: above 8, the trailer overflowed */
                n += 1;
                bpf_skb_store_bytes(ctx, 50, &n, 1, 0);
            }
        }
    }
    if (!std.drop && ctx->cb[0])  /* host egress: stamp the version */
        bpf_skb_vlan_push(ctx, bpf_htons(ETH_P_8021AD), 0xff0 | ((ctx->cb[0] - 1) & 1));
    return std.drop ? TC_ACT_SHOT : TC_ACT_OK;
reject:
    return TC_ACT_SHOT;
}
