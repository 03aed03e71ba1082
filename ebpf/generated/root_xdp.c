/* FlexNet Lab: the root program of every xdp hook. Generated; do not edit. */
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

int root(struct xdp_md *ctx) {
    u32 zero = 0; u32 *slot = flx_slot.lookup(&zero);
    flx_pipe.call(ctx, slot ? *slot : 0);
    return XDP_DROP;  /* empty slot: never reached once a pipeline is set */
}
