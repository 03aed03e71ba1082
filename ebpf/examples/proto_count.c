// SPDX-License-Identifier: GPL-2.0
/* An XDP program as a tutorial writes it (libbpf conventions): counts packets per IP
 * protocol in a BTF-defined array map, then passes every packet on.
 * Build: make -C ebpf   (clang -O2 -g -target bpf). Attach in the lab:
 *   flexnet> attach h2 ebpf/build/proto_count.o xdp
 * Slot 0 counts non-IPv4 frames; slot N counts IPv4 packets of protocol N (1 ICMP,
 * 6 TCP, 17 UDP). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "flexnet_chain.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, __u64);
} proto_pkts SEC(".maps");

SEC("xdp")
int count_proto(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    __u32 proto = 0;

    if ((void *)(eth + 1) <= end && eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) <= end)
            proto = ip->protocol;
    }
    __u64 *n = bpf_map_lookup_elem(&proto_pkts, &proto);
    if (n)
        __sync_fetch_and_add(n, 1);
    return FLX_NEXT_XDP(ctx);
}

char LICENSE[] SEC("license") = "GPL";
