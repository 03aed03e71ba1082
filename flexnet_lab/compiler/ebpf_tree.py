"""The eBPF C the lab runs, as files: what `ebpf/generated/` holds (like `p4src/`).

Every file is the generator's output for a program of the library: the eBPF switch's
pipeline (infrastructure program, tc), the root dispatcher of each hook, and each host
function for each hook that can run it; one of them (flow_counter, XDP) also as a
function in a chain, where it tail-calls the next function instead of passing. `python -m flexnet_lab.compiler.ebpf_tree
ebpf/generated` rewrites them; tests/unit/test_ebpf_tree.py fails when they differ."""
from __future__ import annotations

import os
import sys

from ..errors import ProgramError
from ..program import library
from ..program.validate import check_target
from .ebpf import CAPABILITIES, HOOKS, generate, root_source


def sources() -> dict[str, str]:
    """File name -> C text, for every generated source of ebpf/generated/."""
    out = {"switch_infra_tc.c": generate(library.infrastructure(), "tc", "switch").text}
    for hook in HOOKS:
        out[f"root_{hook}.c"] = (f"/* FlexNet Lab: the root program of every {hook} hook. "
                                 "Generated; do not edit. */\n" + root_source(hook))
    for name, make in sorted(library.HOST_PROGRAMS.items()):
        prog = make()
        for hook in HOOKS:
            try:
                check_target(prog, CAPABILITIES[hook])
            except ProgramError:
                continue        # e.g. push_vlan: tc only
            out[f"host_{name}_{hook}.c"] = generate(prog, hook, "host").text
    out["host_flow_counter_xdp_chain.c"] = generate(library.flow_counter(), "xdp", "host",
                                                    True).text
    return out


def write(folder: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    files = sources()
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    return sorted(files)


if __name__ == "__main__":
    for n in write(sys.argv[1] if len(sys.argv) > 1 else "ebpf/generated"):
        print(n)
