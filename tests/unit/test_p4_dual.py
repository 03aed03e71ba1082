"""The two-version bmv2 pipeline generator (compiler/p4_dual.py) and the version tag of the
P4 backend: what is shared, what is per version, what is refused; p4c compiles the result
where it is installed."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from flexnet_lab.compiler import p4 as p4mod
from flexnet_lab.compiler.p4_dual import NEW_PREFIX, DualPipelineError, align, generate_dual
from flexnet_lab.errors import ProgramError
from flexnet_lab.program import library
from flexnet_lab.program.delta import load_delta
from flexnet_lab.program.headers import TELEMETRY
from flexnet_lab.program.model import Field, Map, Op, Stmt

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base():
    return library.infrastructure()


@pytest.fixture(scope="module")
def with_acl(base):
    return load_delta(str(REPO / "scenarios/deltas/acl-udp-9999.yaml")).apply(base)[0]


def test_shared_objects_keep_their_names_new_ones_are_renamed(base, with_acl):
    d = generate_dual(base, with_acl)
    assert d.tables[("old", "l3_fwd")] == d.tables[("new", "l3_fwd")] == "l3_fwd"
    assert d.tables[("new", "acl")] == NEW_PREFIX + "acl"
    assert d.actions[("new", "forward")] == "forward"
    assert d.actions[("new", "nop")] == NEW_PREFIX + "nop"      # only the new version has it
    assert d.maps[("new", "port_rx")] == "port_rx"
    text = d.text
    assert text.count("table l3_fwd {") == 1 and text.count("l3_fwd.apply();") == 1
    assert f"table {NEW_PREFIX}acl {{" in text
    # the ACL runs for new-version packets only, before forwarding (the delta's order)
    m = re.search(r"if \(flexnet_is_new_version == 1w1\) \{[^}]*" + NEW_PREFIX
                  + r"acl\.apply\(\);\s*\}\s*l3_fwd\.apply\(\);", text)
    assert m, text
    assert "flexnet_control_words.read(flexnet_reg_word, 32w2);" in text


def test_the_inverse_keeps_the_old_versions_names(base, with_acl):
    d = generate_dual(with_acl, base)
    assert d.tables[("old", "acl")] == "acl" and ("new", "acl") not in d.tables
    assert re.search(r"if \(flexnet_is_new_version == 1w0\) \{[^\n]*\n\s*acl\.apply\(\);", d.text)


def test_a_changed_map_is_per_version(base):
    bigger = replace(base, maps=(Map("port_rx", "counter", 64),) + base.maps[1:])
    d = generate_dual(base, bigger)
    assert d.maps[("old", "port_rx")] == "port_rx"
    assert d.maps[("new", "port_rx")] == NEW_PREFIX + "port_rx"
    assert d.maps[("new", "port_tx")] == "port_tx"
    assert f"register<bit<64>>(64) {NEW_PREFIX}port_rx_packets;" in d.text
    assert "register<bit<64>>(32) port_rx_packets;" in d.text


def test_statements_align_by_longest_common_subsequence():
    a, b, c, x = (Stmt(table=n) for n in "abcx")
    assert align((a, b, c), (a, x, c)) == [("both", a), ("old", b), ("new", x), ("both", c)]
    assert align((), (a,)) == [("new", a)]


@pytest.mark.parametrize("change, element", [
    (lambda p: replace(p, metadata=p.metadata[:-1] + (Field("l4_dport", 32),)),
     "metadata.l4_dport"),
    (lambda p: replace(p, headers=p.headers + (TELEMETRY,),
                       parser=p.parser[:-1] + (replace(p.parser[-1], extract="telemetry"),)),
     "parser.udp"),
])
def test_what_one_pipeline_cannot_hold_is_refused(base, change, element):
    with pytest.raises(DualPipelineError) as exc:
        generate_dual(base, change(base))
    assert isinstance(exc.value, ProgramError)
    assert exc.value.element == element


def test_a_shared_table_applied_at_different_points_is_refused(with_acl):
    c = with_acl.control
    acl = next(i for i, s in enumerate(c) if s.table == "acl")
    fwd = next(i for i, s in enumerate(c) if s.table == "l3_fwd")
    swapped = list(c)
    swapped[acl], swapped[fwd] = c[fwd], c[acl]
    with pytest.raises(DualPipelineError) as exc:
        generate_dual(with_acl, replace(with_acl, control=tuple(swapped)))
    assert exc.value.element in ("tables.acl", "tables.l3_fwd")
    assert "applies a table once" in exc.value.message


def test_a_program_without_ethernet_first_has_no_tag(base):
    odd = replace(base, parser=base.parser[1:] + (base.parser[0],))
    assert not p4mod.tag_support(odd)
    assert p4mod.tag_support(base)


def test_single_pipeline_carries_the_tag(base):
    text = p4mod.generate_p4(base)
    for reg in p4mod.TAG_REGISTERS:
        assert re.search(rf"register<bit<\d+>>\(\d+\) {reg};", text), reg
    assert "16w0x0ff0 &&& 16w0x0ffe" in text               # VID 0xFF0 | slot
    assert "hdr.flexnet_version_tag.setInvalid();" in text  # popped, trusted or not
    assert "flexnet_is_new_version = 1w1;" not in text      # one version
    emits = re.findall(r"packet\.emit\(hdr\.(\w+)\);", text)
    assert emits[:2] == ["ethernet", "flexnet_version_tag"]


@pytest.mark.skipif(shutil.which("p4c-bm2-ss") is None,
                    reason="p4c-bm2-ss not found: install p4lang-p4c")
@pytest.mark.parametrize("which", ["add", "remove", "map"])
def test_p4c_compiles_the_dual_pipeline(base, with_acl, which, tmp_path):
    pairs = {"add": (base, with_acl), "remove": (with_acl, base),
             "map": (base, replace(base, maps=(Map("port_rx", "counter", 64),) + base.maps[1:],
                                   control=base.control + (Stmt(ops=(Op("nop"),)),)))}
    src = tmp_path / "dual.p4"
    src.write_text(generate_dual(*pairs[which]).text)
    res = subprocess.run(["p4c-bm2-ss", "--p4runtime-files", "dual.p4info.txt", "-o",
                          "dual.json", "dual.p4"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "dual.json").stat().st_size > 0
