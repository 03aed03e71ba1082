"""The change planner: what replacing a running program by another costs (pure, no kernel).

``plan_change(old, new)`` classifies the change:

* ``none``: the programs are identical;
* ``entries_only``: only tables' default action/arguments differ (no recompilation);
* ``full_swap``: a header was removed or changed (same name, other fields) or the metadata
  changed: packet layout changes, the program is swapped whole;
* ``pipeline``: anything else: a new pipeline is loaded and kept tables and maps carry
  their entries and state over.

A table is *kept* when it has the same name, keys and size (its entries survive; entries of
actions it no longer has, or whose parameters changed, are listed in ``actions_removed_from``
and must be deleted first) and *changed* otherwise (entries are dropped). A map is kept when
its definition is identical; a changed map (``maps_changed``) starts from empty state.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from flexnet_lab.program.delta import Delta
from flexnet_lab.program.model import Program

KINDS = ("none", "entries_only", "pipeline", "full_swap")


@dataclass(frozen=True)
class ChangePlan:
    """What changes between two programs and how it must be carried out."""
    kind: str
    tables_added: tuple[str, ...] = ()
    tables_removed: tuple[str, ...] = ()
    tables_changed: tuple[str, ...] = ()
    tables_kept: tuple[str, ...] = ()
    actions_removed_from: dict[str, tuple[str, ...]] = field(default_factory=dict)
    parser_changed: bool = False
    maps_added: tuple[str, ...] = ()
    maps_removed: tuple[str, ...] = ()
    maps_kept: tuple[str, ...] = ()
    headers_changed: bool = False
    maps_changed: tuple[str, ...] = ()

    def explain(self) -> str:
        """One human line per item, the classification first."""
        lines = [_KIND_LINES[self.kind]]
        lines += [f"table {t}: added" for t in self.tables_added]
        lines += [f"table {t}: removed, its entries are deleted" for t in self.tables_removed]
        lines += [f"table {t}: keys or size changed, its entries are dropped"
                  for t in self.tables_changed]
        lines += [f"table {t}: kept, its entries survive" for t in self.tables_kept]
        lines += [f"table {t}: entries of action {a} are deleted first"
                  for t, names in self.actions_removed_from.items() for a in names]
        lines += ["parser: changed"] if self.parser_changed else []
        lines += ["headers: changed"] if self.headers_changed else []
        lines += [f"map {m}: added, starts empty" for m in self.maps_added]
        lines += [f"map {m}: removed, its state is lost" for m in self.maps_removed]
        lines += [f"map {m}: changed, its state is reset" for m in self.maps_changed]
        lines += [f"map {m}: kept, its state survives" for m in self.maps_kept]
        return "\n".join(lines)


_KIND_LINES: Mapping[str, str] = MappingProxyType({
    "none": "no change",
    "entries_only": "entries only: table defaults change, no new pipeline",
    "pipeline": "pipeline: a new pipeline replaces the running one, kept state carries over",
    "full_swap": "full swap: packet layout changes, the program is replaced whole",
})


def plan_change(old: Program, new: Program) -> ChangePlan:
    """Classify and itemise the change from ``old`` to ``new``."""
    tables = _table_diff(old, new)
    maps = _map_diff(old, new)
    return ChangePlan(
        kind=_kind(old, new),
        **tables,
        actions_removed_from=_actions_removed(old, new, tables["tables_kept"]),
        parser_changed=old.parser != new.parser,
        **maps,
        headers_changed=old.headers != new.headers,
    )


def plan_delta(old: Program, delta: Delta) -> tuple[Program, ChangePlan, Delta]:
    """Apply ``delta`` to ``old``: the new program, the plan and the inverse delta."""
    new, inverse = delta.apply(old)
    return new, plan_change(old, new), inverse


def _kind(old: Program, new: Program) -> str:
    if old == new:
        return "none"
    if _without_defaults(old) == _without_defaults(new):
        return "entries_only"
    if old.metadata != new.metadata or _layout_changed(old, new):
        return "full_swap"
    return "pipeline"


def _without_defaults(program: Program) -> Program:
    return program.with_(tables=tuple(replace(t, default_action="", default_args=())
                                      for t in program.tables))


def _layout_changed(old: Program, new: Program) -> bool:
    """A header was removed or redefined."""
    return any(new.header(h.name) != h for h in old.headers)


def _names(items: tuple) -> tuple[str, ...]:
    return tuple(x.name for x in items)


def _table_diff(old: Program, new: Program) -> dict[str, tuple[str, ...]]:
    both = [t for t in _names(new.tables) if old.table(t) is not None]
    kept = tuple(t for t in both if _same_shape(old, new, t))
    return {
        "tables_added": tuple(t for t in _names(new.tables) if old.table(t) is None),
        "tables_removed": tuple(t for t in _names(old.tables) if new.table(t) is None),
        "tables_changed": tuple(t for t in both if t not in kept),
        "tables_kept": kept,
    }


def _same_shape(old: Program, new: Program, name: str) -> bool:
    a, b = old.table(name), new.table(name)
    return a.keys == b.keys and a.size == b.size


def _actions_removed(old: Program, new: Program,
                     kept: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Per kept table, the actions whose entries cannot stay: gone from the table, or
    with other parameters than before."""
    out: dict[str, tuple[str, ...]] = {}
    for name in kept:
        new_actions = new.table(name).actions
        gone = tuple(a for a in old.table(name).actions
                     if a not in new_actions or _params(old, a) != _params(new, a))
        if gone:
            out[name] = gone
    return out


def _params(program: Program, action: str) -> tuple | None:
    found = program.action(action)
    return found.params if found else None


def _map_diff(old: Program, new: Program) -> dict[str, tuple[str, ...]]:
    both = [m for m in _names(new.maps) if old.map(m) is not None]
    return {
        "maps_added": tuple(m for m in _names(new.maps) if old.map(m) is None),
        "maps_removed": tuple(m for m in _names(old.maps) if new.map(m) is None),
        "maps_kept": tuple(m for m in both if old.map(m) == new.map(m)),
        "maps_changed": tuple(m for m in both if old.map(m) != new.map(m)),
    }
