"""Write a k-ary fat-tree topology file in the layout of topologies/fat-tree-k4.yaml.

    python scripts/gen_fat_tree.py 8 > topologies/fat-tree-k8.yaml

Cores c1..c(k/2)^2, aggregation a1..a(k*k/2), edge e1..e(k*k/2) (k pods of k/2 each), k/2
hosts per edge switch; hosts auto-addressed 10.0.0.N/24 (so k <= 10: at most 254 hosts).
"""
from __future__ import annotations

import sys


def fat_tree(k: int, target: str) -> str:
    if k < 2 or k % 2 or (k ** 3) // 4 > 254:
        raise SystemExit("k must be even, 2..10 (hosts share one /24)")
    half = k // 2
    cores, aggs, edges = half * half, k * half, k * half
    hosts = edges * half
    out = [f"# Fat tree, k={k}: cores c1..c{cores}, aggregation a1..a{aggs}, edge e1..e{edges} "
           f"({k} pods), hosts h1..h{hosts}, {half} per edge.",
           "# Written by scripts/gen_fat_tree.py.",
           f"name: fat-tree-k{k}", "defaults:", f"  target: {target}", "hosts:"]
    out += [f"  h{i}:" for i in range(1, hosts + 1)]
    out.append("switches:")
    out += [f"  c{i}:" for i in range(1, cores + 1)]
    out += [f"  a{i}:" for i in range(1, aggs + 1)]
    out += [f"  e{i}:" for i in range(1, edges + 1)]
    out += ["links:", f"  # hosts: edge ports 1-{half}"]
    out += [f"  - [h{h}, e{(h - 1) // half + 1}]" for h in range(1, hosts + 1)]
    out.append(f"  # edge uplinks (edge ports {half + 1}-{k}) to every aggregation switch of "
               f"the pod (agg ports 1-{half})")
    for e in range(edges):
        pod = e // half
        out += [f"  - [e{e + 1}, a{pod * half + j + 1}]" for j in range(half)]
    out.append(f"  # aggregation uplinks (agg ports {half + 1}-{k}): the j-th agg of each pod "
               f"to cores j*{half}+1..(j+1)*{half} (core port = pod + 1)")
    for a in range(aggs):
        j = a % half
        out += [f"  - [a{a + 1}, c{j * half + c + 1}]" for c in range(half)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    sys.stdout.write(fat_tree(k, sys.argv[2] if len(sys.argv) > 2 else "ebpf"))
