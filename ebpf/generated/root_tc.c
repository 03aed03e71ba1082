/* FlexNet Lab: the root program of every tc hook. Generated; do not edit. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>

struct flx_action { u32 action; u32 prio; u64 args[4]; };
struct flx_ctr { u64 packets; u64 bytes; };
struct flx_meter { u64 tokens; u64 last_ns; };
struct flx_port { u32 ifindex; u32 peer; };
struct flx_std { u64 ingress_port; u64 egress_port; u64 pkt_len; u32 drop; };
BPF_PROG_ARRAY(flx_pipe, 2);
BPF_ARRAY(flx_slot, u32, 4);
BPF_ARRAY(flx_vcnt, u64, 2);
BPF_HASH(flx_trust, u32, u32, 64);
struct flx_fkey { u32 src, dst; u16 sport, dport; u32 proto; };
struct flx_fval { u64 w; };
BPF_TABLE("lru_hash", struct flx_fkey, struct flx_fval, flx_flows, 4096);
BPF_ARRAY(flx_fcfg, u32, 2);
BPF_ARRAY(flx_fcnt, u64, 4);

static __always_inline void flx_fcount(u32 i)
{
    u64 *c = flx_fcnt.lookup(&i);
    if (c) __sync_fetch_and_add(c, 1);
}

static __always_inline u32 flx_flow_slot(struct __sk_buff *ctx, u32 stamp)
{
    u32 zero = 0, one = 1;
    u32 *gen = flx_fcfg.lookup(&zero);
    if (!gen || !*gen)
        return stamp;
    u8 ip[20]; u16 et = 0;
    if (bpf_skb_load_bytes(ctx, 12, &et, 2) < 0 || et != bpf_htons(ETH_P_IP) ||
        bpf_skb_load_bytes(ctx, 14, ip, 20) < 0 || (ip[0] >> 4) != 4)
        return stamp;
    struct flx_fkey k = {};
    __builtin_memcpy(&k.src, ip + 12, 4); __builtin_memcpy(&k.dst, ip + 16, 4);
    k.proto = ip[9];
    if ((ip[9] == 6 || ip[9] == 17) && !(((ip[6] & 0x3f) << 8) | ip[7]) &&
        bpf_skb_load_bytes(ctx, 14 + (ip[0] & 15) * 4, &k.sport, 4) < 0)
        return stamp;
    u32 g = *gen & 0x7fffffff;
    u64 now = bpf_ktime_get_ns() >> 10;
    struct flx_fval *f = flx_flows.lookup(&k);
    if (!f) {
        struct flx_fval n = { (now << 32) | (g << 1) | stamp };
        if (flx_flows.insert(&k, &n) == 0)
            flx_fcount(stamp);
        return stamp;
    }
    u64 w = f->w;
    u32 lo = (u32)w, age = (u32)now - (u32)(w >> 32);
    u32 *idle = flx_fcfg.lookup(&one);
    if ((lo >> 1) == g && age < (u32)(((u64)(idle ? *idle : 100000) * 1000) >> 10)) {
        if (age > 1024)   /* the time stamp moves about once a ms, not every packet */
            __sync_val_compare_and_swap(&f->w, w, (now << 32) | lo);
        return lo & 1;
    }
    u64 got = __sync_val_compare_and_swap(&f->w, w, (now << 32) | (g << 1) | stamp);
    if (got != w)         /* another CPU changed it first: what it decided holds */
        return ((u32)got >> 1) == g ? ((u32)got & 1) : stamp;
    if ((lo >> 1) == g)
        flx_fcount(2 + (lo & 1));
    flx_fcount(stamp);
    return stamp;
}


int root(struct __sk_buff *ctx) {
    u32 zero = 0, one = 1;
    u32 *slot = flx_slot.lookup(&zero), *tagging = flx_slot.lookup(&one);
    u32 v = slot ? (*slot & 1) : 0, entering = 1;
    if (ctx->vlan_present && ctx->vlan_proto == bpf_htons(ETH_P_8021AD) &&
        (ctx->vlan_tci & 0x0ffe) == 0xff0) {
        u32 ifi = ctx->ingress_ifindex; u32 *trusted = flx_trust.lookup(&ifi);
        if (trusted && *trusted) {
            v = ctx->vlan_tci & 1; entering = 0;
        }
        bpf_skb_vlan_pop(ctx);
    }
    if (entering)   /* per-flow level: a known, not idle flow keeps its slot */
        v = flx_flow_slot(ctx, v);
    ctx->cb[0] = 0; ctx->cb[1] = 0;
    if (tagging && *tagging) {
        u64 *c = flx_vcnt.lookup(&v);
        if (c) __sync_fetch_and_add(c, 1);
        ctx->cb[0] = v + 1;
    }
    {  /* oracle probe: IPv4 (no options) UDP to port 33999, payload magic + trailer */
        u8 *p = (u8 *)(long)ctx->data, *end = (u8 *)(long)ctx->data_end;
        if (p + 86 <= end && p[12] == 0x08 && p[13] == 0x00 && p[14] == 0x45 &&
            p[23] == 17 && p[36] == 132 && p[37] == 207 &&
            p[42] == 70 && p[43] == 88 && p[44] == 80 && p[45] == 82)
            ctx->cb[1] = 1;
    }
    flx_pipe.call(ctx, v);
    return TC_ACT_SHOT;  /* empty slot: never reached once a pipeline is set */
}
