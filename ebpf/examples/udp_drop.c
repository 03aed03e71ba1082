// SPDX-License-Identifier: GPL-2.0
/* A small ACL as a tc program (SEC("tc")): drops UDP datagrams to the port stored in
 * slot 0 of `blocked_port` (0: none), counts drops, passes the rest on. Shows a tc
 * object, an egress/ingress hook and a second function on one hook. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "flexnet_chain.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} blocked_port SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} dropped SEC(".maps");

SEC("tc")
int udp_drop(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    __u32 zero = 0;

    if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
        ip->protocol != IPPROTO_UDP || ip->ihl != 5)
        return FLX_NEXT_TC(skb);
    struct udphdr *udp = (void *)(ip + 1);
    __u64 *port = bpf_map_lookup_elem(&blocked_port, &zero);
    if ((void *)(udp + 1) <= end && port && *port && bpf_ntohs(udp->dest) == *port) {
        __u64 *n = bpf_map_lookup_elem(&dropped, &zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        return TC_ACT_SHOT;
    }
    return FLX_NEXT_TC(skb);
}

char LICENSE[] SEC("license") = "GPL";
