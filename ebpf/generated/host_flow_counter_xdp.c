/* FlexNet Lab: program 'flow_counter' for xdp (host). Generated from the model; do not edit. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>

struct flx_action { u32 action; u32 prio; u64 args[4]; };
struct flx_ctr { u64 packets; u64 bytes; };
struct flx_meter { u64 tokens; u64 last_ns; };
struct flx_port { u32 ifindex; u32 peer; };
struct flx_std { u64 ingress_port; u64 egress_port; u64 pkt_len; u32 drop; };

BPF_ARRAY(m_pkts, struct flx_ctr, 1);
struct k_flows { u64 w[5]; };
BPF_HASH(m_flows, struct k_flows, struct flx_ctr, 4096);

struct flx_meta { u64 l3_dst; u64 ip_proto; u64 l4_sport; u64 l4_dport; u64 _pad; };

int pipeline(struct xdp_md *ctx) {
    struct flx_std std = {}; struct flx_meta meta = {}; u32 off = 0;
    std.pkt_len = (u64)((long)ctx->data_end - (long)ctx->data);
    u8 h_ethernet[14] = {}; u32 off_ethernet = 0; u8 valid_ethernet = 0, dirty_ethernet = 0;
    u8 h_ipv4[20] = {}; u32 off_ipv4 = 0; u8 valid_ipv4 = 0, dirty_ipv4 = 0;
    u8 h_tcp[20] = {}; u32 off_tcp = 0; u8 valid_tcp = 0, dirty_tcp = 0;
    u8 h_udp[8] = {}; u32 off_udp = 0; u8 valid_udp = 0, dirty_udp = 0;
    goto st_start;
st_start:
    if (bpf_xdp_load_bytes(ctx, off, h_ethernet, 14) < 0) goto reject;
    off_ethernet = off; valid_ethernet = 1; off += 14;
    if ((((((u64)h_ethernet[12] << 8) | ((u64)h_ethernet[13] << 0)) >> 0) & 0xffffULL) == 0x800ULL) goto st_ipv4;
    goto accept;
st_ipv4:
    if (bpf_xdp_load_bytes(ctx, off, h_ipv4, 20) < 0) goto reject;
    off_ipv4 = off; valid_ipv4 = 1; off += 20;
    meta.l3_dst = (((((u64)h_ipv4[16] << 24) | ((u64)h_ipv4[17] << 16) | ((u64)h_ipv4[18] << 8) | ((u64)h_ipv4[19] << 0)) >> 0) & 0xffffffffULL);
    meta.ip_proto = (((((u64)h_ipv4[9] << 0)) >> 0) & 0xffULL);
    if ((((((u64)h_ipv4[0] << 0)) >> 0) & 0xfULL) == 0x5ULL && (((((u64)h_ipv4[9] << 0)) >> 0) & 0xffULL) == 0x6ULL) goto st_tcp;
    if ((((((u64)h_ipv4[0] << 0)) >> 0) & 0xfULL) == 0x5ULL && (((((u64)h_ipv4[9] << 0)) >> 0) & 0xffULL) == 0x11ULL) goto st_udp;
    goto accept;
st_tcp:
    if (bpf_xdp_load_bytes(ctx, off, h_tcp, 20) < 0) goto reject;
    off_tcp = off; valid_tcp = 1; off += 20;
    meta.l4_sport = (((((u64)h_tcp[0] << 8) | ((u64)h_tcp[1] << 0)) >> 0) & 0xffffULL);
    meta.l4_dport = (((((u64)h_tcp[2] << 8) | ((u64)h_tcp[3] << 0)) >> 0) & 0xffffULL);
    goto accept;
st_udp:
    if (bpf_xdp_load_bytes(ctx, off, h_udp, 8) < 0) goto reject;
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
    return std.drop ? XDP_DROP : XDP_PASS;
reject:
    return XDP_DROP;
}
