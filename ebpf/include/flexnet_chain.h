/* FlexNet Lab: how a hand-written XDP/tc program hands a packet to the next function on
 * the same hook (see ebpf/README.md). The lab binds this object's `flx_next` map to the
 * slot of the function after it; where no function follows, the tail call finds an empty
 * slot and the packet passes as usual. A program without `flx_next` ends the chain. */
#ifndef FLEXNET_CHAIN_H
#define FLEXNET_CHAIN_H
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} flx_next SEC(".maps");

/* run the next function on this hook, or pass the packet when there is none */
#define FLX_NEXT_XDP(ctx) (bpf_tail_call((ctx), &flx_next, 0), XDP_PASS)
#define FLX_NEXT_TC(ctx)  (bpf_tail_call((ctx), &flx_next, 0), TC_ACT_OK)
#endif
