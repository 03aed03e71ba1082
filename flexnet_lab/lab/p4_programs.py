"""The P4 programs of a topology's switches that run a user's own program: found, compiled
and their runtime files checked before anything of the lab exists, so a bad file is one
error naming the file and the field, and nothing is created.

Which program a switch runs, first that applies:
  1. the switch's own `program` (coursework) or `p4` (lab YAML): a `.p4`, or a bmv2 JSON;
  2. `--p4 prog.p4` (already in the spec when the file names none);
  3. the `.p4` beside the exercise whose name the runtime file's `bmv2_json` carries
     (`build/basic.json` -> `basic.p4`), or the only `.p4` in the exercise folder;
  4. the runtime file's `bmv2_json` + `p4info` when they exist (a prebuilt `build/`).
A `build/` path that does not exist yet is satisfied by the lab's own compile.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from ..compiler.p4_user import (P4Build, P4Info, Resolved, compile_p4, load_prebuilt,
                                parse_p4info, resolve_runtime)
from ..errors import TopologyError
from ..program.runtime_json import RuntimeFile, load_runtime
from ..topology.model import P4Spec, Topology


@dataclass(frozen=True)
class SwitchP4:
    """A switch's program, compiled, and its runtime file's entries built for it."""
    build: P4Build
    runtime: Resolved


def _program_for(spec: P4Spec, rt: RuntimeFile | None) -> tuple[str, str | None]:
    """(path, p4info for a prebuilt JSON or None)."""
    src, field = spec.source.rsplit(": ", 1)
    if spec.program is not None:
        if spec.program.endswith(".json"):
            info = spec.p4info or (rt.p4info if rt else None)
            if info is None or not os.path.isfile(info):
                stem = spec.program[:-len(".json")]
                info = next((p for p in (f"{stem}.p4.p4info.txt", f"{stem}.p4info.txt",
                                         f"{stem}.p4info") if os.path.isfile(p)), info)
            if info is None or not os.path.isfile(info):
                raise TopologyError(src, f"{field}.program", "a compiled bmv2 JSON needs its "
                                    "P4Info: put it beside it as NAME.p4.p4info.txt, or name "
                                    "it in the runtime file (p4info)")
            return spec.program, info
        return spec.program, None
    if rt is not None and rt.bmv2_json:
        stem = os.path.splitext(os.path.basename(rt.bmv2_json))[0]
        beside = os.path.join(spec.base, f"{stem}.p4")
        if os.path.isfile(beside):
            return beside, None
    sources = sorted(glob.glob(os.path.join(spec.base, "*.p4")))
    if len(sources) == 1:
        return sources[0], None
    if rt is not None and rt.bmv2_json and os.path.isfile(rt.bmv2_json) and rt.p4info \
            and os.path.isfile(rt.p4info):
        return rt.bmv2_json, rt.p4info
    why = (f"{len(sources)} .p4 files in the exercise folder" if sources
           else "no .p4 in the exercise folder")
    raise TopologyError(src, field, f"no P4 program ({why}): name it with --p4 prog.p4")


def prepare_p4(topology: Topology) -> dict[str, SwitchP4]:
    """Every switch of `topology` that runs a user's program: compiled (each distinct
    program once) with its runtime entries checked. Nothing is created."""
    specs = {s.name: s.p4 for s in topology.switches if s.p4 is not None}
    runtimes = {n: load_runtime(p.runtime, p.base) if p.runtime else None
                for n, p in specs.items()}
    programs = {n: _program_for(p, runtimes[n]) for n, p in specs.items()}
    builds: dict[tuple, P4Build] = {}
    out = {}
    for n, (path, info_path) in programs.items():
        key = (path, info_path)
        if key not in builds:
            builds[key] = (load_prebuilt(path, info_path, specs[n].source) if info_path
                           else compile_p4(path))
        build = builds[key]
        rt = runtimes[n]
        info = P4Info(parse_p4info(build.p4info, build.source))
        resolved = resolve_runtime(rt, info) if rt else Resolved("", frozenset(), (), ())
        out[n] = SwitchP4(build, resolved)
    return out
