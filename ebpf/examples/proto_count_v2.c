// SPDX-License-Identifier: GPL-2.0
/* Version 2 of proto_count.c: the same per-protocol packet counter (same map name, type
 * and size, so `swap h2 ebpf/build/proto_count_v2.o` carries its counts over) plus a new
 * map of bytes per protocol, which starts at zero. */
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

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, __u64);
} proto_bytes SEC(".maps");

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
    __u64 *b = bpf_map_lookup_elem(&proto_bytes, &proto);
    if (b)
        __sync_fetch_and_add(b, (__u64)(end - data));
    return FLX_NEXT_XDP(ctx);
}

char LICENSE[] SEC("license") = "GPL";
