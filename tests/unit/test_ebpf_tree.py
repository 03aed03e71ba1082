"""ebpf/: the generated C is the generator's (like p4src/), the examples and the chain
header are there, and the generated chain form differs from the plain one only by the
tail call to the next function."""
from __future__ import annotations

from pathlib import Path

from flexnet_lab.compiler.ebpf import NEXT_MAP, generate
from flexnet_lab.compiler.ebpf_tree import sources
from flexnet_lab.program import library

REPO = Path(__file__).resolve().parents[2]
GEN = REPO / "ebpf" / "generated"


def test_generated_tree_is_the_generators():
    want = sources()
    have = {p.name: p.read_text() for p in GEN.glob("*.c")}
    assert sorted(have) == sorted(want), (
        "ebpf/generated differs from the generator: run "
        "`python -m flexnet_lab.compiler.ebpf_tree ebpf/generated`")
    for name, text in want.items():
        assert have[name] == text, f"ebpf/generated/{name} differs from the generator"


def test_tree_holds_switch_root_and_host_functions():
    names = set(sources())
    assert {"switch_infra_tc.c", "root_tc.c", "root_xdp.c", "host_flow_counter_xdp.c",
            "host_acl_xdp.c", "host_vlan_tag_tc.c"} <= names
    assert "host_vlan_tag_xdp.c" not in names      # push_vlan is tc only


def test_chain_form_tail_calls_the_next_function():
    plain = generate(library.flow_counter(), "xdp", "host").text
    chain = generate(library.flow_counter(), "xdp", "host", True).text
    assert NEXT_MAP not in plain
    assert f"BPF_PROG_ARRAY({NEXT_MAP}, 1);" in chain and f"{NEXT_MAP}.call(ctx, 0);" in chain


def test_examples_and_makefile_are_there():
    ex = REPO / "ebpf" / "examples"
    for name in ("proto_count.c", "proto_count_v2.c", "udp_drop.c"):
        text = (ex / name).read_text()
        assert 'SEC(".maps")' in text and "flexnet_chain.h" in text
    assert (REPO / "ebpf" / "include" / "flexnet_chain.h").is_file()
    assert "clang" in (REPO / "ebpf" / "Makefile").read_text()
    assert (REPO / "ebpf" / "README.md").is_file()
