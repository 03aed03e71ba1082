"""The delta language: small, invertible changes to a running program.

Each op is a frozen dataclass whose ``apply(program)`` returns ``(new_program, inverse)``,
``inverse`` being a tuple of ops that, applied in order to ``new_program``, give ``program``
back exactly (order of tables, states, cases, statements... included). An op that cannot
apply raises ``DeltaError`` naming the program element (``tables.acl``, ``parser.udp``).
Patterns select elements by name with ``fnmatch`` (case-sensitive): ``acl*``.

Ops: AddTable, RemoveTables, ReplaceTable, SetTableActions, AddAction, RemoveActions,
ReplaceAction, AddParserState, RemoveParserStates, ReplaceParserState, AddMap, RemoveMaps,
AddHeader, RemoveHeader. The ``index``/``stmt_index`` fields place an element at a position
(used by inverses); by default new elements are appended.

``Delta(ops, name)`` applies ops in order to a valid program and validates the result (a
ProgramError becomes a DeltaError naming the same element), so nothing invalid is produced.

YAML form (``load_delta``/``delta_from_dict``)::

    name: acl-udp-9999
    ops:
      - add_table: {name: acl, keys: [[meta.ip_proto, exact]], actions: [drop, nop],
                    default: nop, size: 64, before: l3_fwd}     # or after: <table>
        actions: {nop: {ops: [[nop]]}}          # actions to add with the table, if absent
      - remove_tables: acl*
      - replace_table: {name: acl, table: {keys: ..., actions: ..., default: ...}}
      - set_table_actions: {table: "l3*", add: [nop], remove: [], default: drop, default_args: []}
      - add_action: {name: nop, ops: [[nop]]}
      - remove_actions: "no*"
      - replace_action: {name: forward, action: {params: [[port, 16]], ops: [[forward, $port]]}}
      - add_parser_state: {after: udp, values: [5555], select: [udp.dport],
                           state: {name: telemetry, extract: telemetry}, header: telemetry}
      - remove_parser_states: telemetry
      - replace_parser_state: {name: udp, state: {extract: udp}}
      - add_map: {name: hits, kind: counter, size: 4}
      - remove_maps: hits
      - add_header: {name: tel, fields: [[magic, 16]]}    # or a library header name
      - remove_header: tel

Tables, actions, states, maps and headers use the program's YAML form (``yaml_form``);
inside ``replace_*`` the new element's ``name`` defaults to the replaced one. Errors name the
file and the op: ``delta.yaml: ops[2].add_parser_state.after``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterator, Mapping, NoReturn, Union, get_args

from flexnet_lab.errors import DeltaError, ProgramError
from flexnet_lab.inputs import show

from .model import Action, Header, Map, Op, ParserState, Program, Stmt, Table, Transition
from .validate import ARG_ROLES, validate
# the YAML structure checks raise ProgramError; delta_from_dict turns it into DeltaError
from .yaml_form import (_keys, _list, _mapping, action_from_dict, header_from_dict, map_from_dict,
                        read_yaml, state_from_dict, table_from_dict)


# -- helpers ---------------------------------------------------------------------------


def _fail(element: str, message: str) -> NoReturn:
    raise DeltaError(element, message)


def _literal(name: str) -> str:
    """An fnmatch pattern that matches exactly ``name``."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _instance(value: Any, cls: type, element: str) -> Any:
    if not isinstance(value, cls) or not isinstance(value.name, str):
        _fail(element, f"expected a {cls.__name__} with a name, got {show(value)}")
    return value


def _str(value: Any, element: str) -> str:
    if not isinstance(value, str):
        _fail(element, f"expected a name, got {show(value)}")
    return value


def _strs(value: Any, element: str) -> tuple[str, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        _fail(element, f"expected a tuple of names, got {show(value)}")
    return value


def _tup(value: Any) -> tuple:
    """``value`` if it is a tuple, else () (junk holds no references)."""
    return value if isinstance(value, tuple) else ()


def _matching(items: tuple, pattern: Any, kind: str) -> list[int]:
    """Indices of the items whose name matches ``pattern``; at least one."""
    pattern = _str(pattern, kind)
    found = [i for i, item in enumerate(items) if fnmatchcase(item.name, pattern)]
    if not found:
        _fail(f"{kind}.{pattern}", "the pattern matches nothing")
    return found


def _index(items: tuple, name: Any, kind: str) -> int:
    name = _str(name, kind)
    for i, item in enumerate(items):
        if item.name == name:
            return i
    _fail(f"{kind}.{name}", "no such element")


def _absent(items: tuple, name: str, kind: str) -> None:
    if any(item.name == name for item in items):
        _fail(f"{kind}.{name}", "an element by that name exists")


def _position(index: Any, length: int, element: str) -> int:
    if index is None:
        return length
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= length:
        _fail(element, f"position {show(index)} is not in 0..{length}")
    return index


def _slot(program: Program, field: str, item: Any, cls: type, index: Any) -> tuple[str, int]:
    """Name of the new `item` (a `cls`) and its position in program.<field>; refused when
    it is not a named `cls`, the name is taken or the index is out of range."""
    items = getattr(program, field)
    name = _instance(item, cls, field).name
    _absent(items, name, field)
    return name, _position(index, len(items), f"{field}.{name}")


def _insert(items: tuple, index: int, item: Any) -> tuple:
    return items[:index] + (item,) + items[index:]


def _reinsert_indices(removed: list[int], order: list[int]) -> dict[int, int]:
    """Positions at which to re-insert removed items, in ``order``, to restore the list."""
    pending = set(removed)
    out: dict[int, int] = {}
    for i in order:
        pending.discard(i)
        out[i] = i - sum(1 for j in pending if j < i)
    return out


def _program_ops(program: Program) -> Iterator[tuple[str, Op]]:
    """(element, op) for every op of the actions and the control."""
    for action in program.actions:
        for i, op in enumerate(_tup(action.ops)):
            yield f"actions.{action.name}.ops[{i}]", op
    for s, stmt in enumerate(program.control):
        for i, op in enumerate(_tup(stmt.ops)):
            yield f"control[{s}].ops[{i}]", op


def _field_refs(program: Program) -> Iterator[tuple[str, Any]]:
    """(element, ref) for every field reference in the program."""
    for st in program.parser:
        for i, pair in enumerate(_tup(st.sets)):
            for ref in _tup(pair):
                yield f"parser.{st.name}.sets[{i}]", ref
        if isinstance(st.transition, Transition):
            for i, ref in enumerate(_tup(st.transition.select)):
                yield f"parser.{st.name}.transition.select[{i}]", ref
    for t in program.tables:
        for i, key in enumerate(_tup(t.keys)):
            yield f"tables.{t.name}.keys[{i}]", getattr(key, "field", None)
    for element, op in _program_ops(program):
        for i, arg in enumerate(_tup(getattr(op, "args", ()))):
            for ref in (arg if isinstance(arg, tuple) else (arg,)):
                yield f"{element}.args[{i}]", ref


def _merge_actions(program: Program, actions: Any) -> tuple[tuple[Action, ...], list[str]]:
    """The program's actions plus those of ``actions`` not yet present; names added."""
    if not isinstance(actions, tuple):
        _fail("actions", f"expected a tuple of actions, got {show(actions)}")
    merged, added = program.actions, []
    for action in actions:
        _instance(action, Action, "actions")
        existing = next((a for a in merged if a.name == action.name), None)
        if existing is None:
            merged, added = merged + (action,), added + [action.name]
        elif existing != action:
            _fail(f"actions.{action.name}", "an action by that name exists and differs")
    return merged, added


# -- tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AddTable:
    """Add a table (and any of ``actions`` not present) and apply it in control before or
    after the statement applying another table, at ``stmt_index``, or else at the end."""
    table: Table
    before: str | None = None
    after: str | None = None
    actions: tuple[Action, ...] = ()
    index: int | None = None
    stmt_index: int | None = None
    kind: ClassVar[str] = "add_table"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        name, at = _slot(program, "tables", self.table, Table, self.index)
        stmt_at = self._stmt_position(program)
        actions, added = _merge_actions(program, self.actions)
        new = program.with_(tables=_insert(program.tables, at, self.table), actions=actions,
                            control=_insert(program.control, stmt_at, Stmt(table=name)))
        inverse = (RemoveTables(_literal(name)),) + tuple(RemoveActions(_literal(a))
                                                          for a in added)
        return new, inverse

    def _stmt_position(self, program: Program) -> int:
        given = [x for x in (self.before, self.after, self.stmt_index) if x is not None]
        if len(given) > 1:
            _fail("control", "give at most one of before, after, stmt_index")
        anchor = self.before if self.before is not None else self.after
        if anchor is None:
            return _position(self.stmt_index, len(program.control), "control")
        anchor = _str(anchor, "tables")
        for i, stmt in enumerate(program.control):
            if stmt.table == anchor:
                return i if self.before is not None else i + 1
        _fail(f"tables.{anchor}", "no control statement applies this table")


@dataclass(frozen=True)
class RemoveTables:
    """Remove the tables matching ``pattern`` and the statements applying them."""
    pattern: str
    kind: ClassVar[str] = "remove_tables"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        idxs = _matching(program.tables, self.pattern, "tables")
        names = [program.tables[i].name for i in idxs]
        stmt_of = {n: self._stmt_of(program, n) for n in names}
        new = program.with_(
            tables=tuple(t for i, t in enumerate(program.tables) if i not in idxs),
            control=tuple(s for i, s in enumerate(program.control)
                          if i not in stmt_of.values()))
        order = sorted(idxs, key=lambda i: stmt_of[program.tables[i].name])
        at = _reinsert_indices(idxs, order)
        inverse = tuple(AddTable(program.tables[i], index=at[i],
                                 stmt_index=stmt_of[program.tables[i].name]) for i in order)
        return new, inverse

    @staticmethod
    def _stmt_of(program: Program, name: str) -> int:
        found = [i for i, s in enumerate(program.control) if s.table == name]
        if len(found) != 1:
            _fail(f"tables.{name}", "the table is not applied exactly once in control")
        return found[0]


@dataclass(frozen=True)
class ReplaceTable:
    """Replace table ``name`` by ``table`` (renamed or not), keeping its control position."""
    name: str
    table: Table
    kind: ClassVar[str] = "replace_table"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        i = _index(program.tables, self.name, "tables")
        new_name = _instance(self.table, Table, f"tables.{self.name}").name
        if new_name != self.name:
            _absent(program.tables, new_name, "tables")
        old = program.tables[i]
        control = tuple(replace(s, table=new_name) if s.table == self.name else s
                        for s in program.control)
        tables = program.tables[:i] + (self.table,) + program.tables[i + 1:]
        return program.with_(tables=tables, control=control), (ReplaceTable(new_name, old),)


@dataclass(frozen=True)
class SetTableActions:
    """Add and remove actions of the tables matching ``pattern``; optionally set the
    default action (removing the default requires a new one)."""
    pattern: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    default: str | None = None
    default_args: tuple[int, ...] = ()
    kind: ClassVar[str] = "set_table_actions"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        add, remove = self._check(program)
        idxs = _matching(program.tables, self.pattern, "tables")
        for name in remove:
            if not any(name in _tup(program.tables[i].actions) for i in idxs):
                _fail(f"tables.{self.pattern}.actions", f"no matching table has action {show(name)}")
        tables, inverse = list(program.tables), []
        for i in idxs:
            old = program.tables[i]
            tables[i] = self._changed(old, add, remove)
            if tables[i] != old:
                inverse.append(ReplaceTable(old.name, old))
        return program.with_(tables=tuple(tables)), tuple(inverse)

    def _check(self, program: Program) -> tuple[tuple[str, ...], tuple[str, ...]]:
        add, remove = _strs(self.add, "actions"), _strs(self.remove, "actions")
        for name in add:
            if program.action(name) is None:
                _fail(f"actions.{name}", "no such action")
        if set(add) & set(remove):
            _fail("actions", f"{sorted(set(add) & set(remove))} both added and removed")
        if self.default is not None:
            _str(self.default, "actions")
            if not isinstance(self.default_args, tuple):
                _fail("default_args", f"expected a tuple, got {show(self.default_args)}")
        return add, remove

    def _changed(self, table: Table, add: tuple[str, ...], remove: tuple[str, ...]) -> Table:
        current = _tup(table.actions)
        actions = tuple(a for a in current if a not in remove)
        actions += tuple(a for i, a in enumerate(add) if a not in current and a not in add[:i])
        if self.default is not None:
            return replace(table, actions=actions, default_action=self.default,
                           default_args=self.default_args)
        if table.default_action in remove:
            _fail(f"tables.{table.name}.default_action",
                  f"removes the default action {show(table.default_action)}; give a new default")
        return replace(table, actions=actions)


# -- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AddAction:
    """Add an action (at ``index``, default last)."""
    action: Action
    index: int | None = None
    kind: ClassVar[str] = "add_action"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        name, at = _slot(program, "actions", self.action, Action, self.index)
        new = program.with_(actions=_insert(program.actions, at, self.action))
        return new, (RemoveActions(_literal(name)),)


@dataclass(frozen=True)
class RemoveActions:
    """Remove the actions matching ``pattern``; refused while a table uses one."""
    pattern: str
    kind: ClassVar[str] = "remove_actions"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        idxs = _matching(program.actions, self.pattern, "actions")
        names = [program.actions[i].name for i in idxs]
        for t in program.tables:
            used = [n for n in names if n in _tup(t.actions) or n == t.default_action]
            if used:
                _fail(f"tables.{t.name}.actions", f"the table still uses action {show(used[0])}")
        new = program.with_(actions=tuple(a for i, a in enumerate(program.actions)
                                          if i not in idxs))
        return new, tuple(AddAction(program.actions[i], index=i) for i in idxs)


@dataclass(frozen=True)
class ReplaceAction:
    """Replace action ``name`` by ``action``; a rename follows in the tables using it."""
    name: str
    action: Action
    kind: ClassVar[str] = "replace_action"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        i = _index(program.actions, self.name, "actions")
        new_name = _instance(self.action, Action, f"actions.{self.name}").name
        if new_name != self.name:
            _absent(program.actions, new_name, "actions")
        old = program.actions[i]
        actions = program.actions[:i] + (self.action,) + program.actions[i + 1:]
        tables = tuple(self._renamed(t, new_name) for t in program.tables)
        return (program.with_(actions=actions, tables=tables),
                (ReplaceAction(new_name, old),))

    def _renamed(self, table: Table, new_name: str) -> Table:
        if new_name == self.name:
            return table
        actions = _tup(table.actions)
        if self.name not in actions and table.default_action != self.name:
            return table
        return replace(table,
                       actions=tuple(new_name if a == self.name else a for a in actions),
                       default_action=(new_name if table.default_action == self.name
                                       else table.default_action))


# -- parser ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AddParserState:
    """Add ``state`` (and ``header`` when absent) and a case ``values -> state`` in state
    ``after``; ``select`` gives the fields when ``after`` selects on nothing yet.
    ``after=None`` adds the state without a case (used by inverses)."""
    state: ParserState
    after: str | None
    values: tuple[int, ...] = ()
    select: tuple[str, ...] = ()
    header: Header | None = None
    index: int | None = None
    kind: ClassVar[str] = "add_parser_state"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        name = _instance(self.state, ParserState, "parser").name
        _absent(program.parser, name, "parser")
        at = _position(self.index, len(program.parser), f"parser.{name}")
        headers, header_inverse = self._with_header(program)
        parser, after_inverse = self._with_case(program, name)
        new = program.with_(headers=headers, parser=_insert(parser, at, self.state))
        return new, after_inverse + (RemoveParserStates(_literal(name)),) + header_inverse

    def _with_header(self, program: Program) -> tuple[tuple[Header, ...], tuple]:
        if self.header is None:
            return program.headers, ()
        header = _instance(self.header, Header, "headers")
        existing = program.header(header.name)
        if existing is None:
            return program.headers + (header,), (RemoveHeader(header.name),)
        if existing != header:
            _fail(f"headers.{header.name}", "a header by that name exists and differs")
        return program.headers, ()

    def _with_case(self, program: Program, name: str) -> tuple[tuple[ParserState, ...], tuple]:
        if self.after is None:
            if self.values or self.select:
                _fail(f"parser.{name}", "values and select need an 'after' state")
            return program.parser, ()
        i = _index(program.parser, self.after, "parser")
        old = program.parser[i]
        path = f"parser.{self.after}.transition"
        tr = old.transition
        if not isinstance(tr, Transition) or not isinstance(tr.cases, tuple):
            _fail(path, "the state's transition is malformed")
        values = self.values
        if not isinstance(values, tuple):
            _fail(f"{path}.cases", f"expected a tuple of values, got {show(values)}")
        if any(isinstance(c, tuple) and len(c) == 2 and c[0] == values for c in tr.cases):
            _fail(f"{path}.cases", f"values {show(values)} already have a case")
        new_tr = replace(tr, select=self._select(tr, path), cases=tr.cases + ((values, name),))
        parser = program.parser[:i] + (replace(old, transition=new_tr),) + program.parser[i + 1:]
        return parser, (ReplaceParserState(self.after, old),)

    def _select(self, tr: Transition, path: str) -> tuple:
        select = _strs(self.select, f"{path}.select")
        if tr.select:
            if select and select != tr.select:
                _fail(f"{path}.select", f"the state already selects on {show(tr.select)}")
            return tr.select
        if not select:
            _fail(f"{path}.select", "the state selects on nothing yet; give select fields")
        return select


@dataclass(frozen=True)
class RemoveParserStates:
    """Remove the states matching ``pattern`` (not the start state), every case leading to
    them; defaults leading to them become "accept"."""
    pattern: str
    kind: ClassVar[str] = "remove_parser_states"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        idxs = _matching(program.parser, self.pattern, "parser")
        if 0 in idxs:
            _fail(f"parser.{program.parser[0].name}", "the start state cannot be removed")
        names = tuple(program.parser[i].name for i in idxs)
        kept, restore = [], []
        for i, state in enumerate(program.parser):
            if i in idxs:
                continue
            pruned = _without_targets(state, names)
            kept.append(pruned)
            if pruned != state:
                restore.append(ReplaceParserState(state.name, state))
        inverse = tuple(AddParserState(program.parser[i], None, index=i) for i in idxs)
        return program.with_(parser=tuple(kept)), inverse + tuple(restore)


def _without_targets(state: ParserState, names: tuple[str, ...]) -> ParserState:
    tr = state.transition
    if not isinstance(tr, Transition):
        return state
    cases = tuple(c for c in _tup(tr.cases)
                  if not (isinstance(c, tuple) and len(c) == 2 and c[1] in names))
    default = "accept" if tr.default in names else tr.default
    if cases == tr.cases and default == tr.default:
        return state
    return replace(state, transition=replace(tr, cases=cases, default=default))


@dataclass(frozen=True)
class ReplaceParserState:
    """Replace state ``name`` by ``state`` in place; a rename follows in transitions."""
    name: str
    state: ParserState
    kind: ClassVar[str] = "replace_parser_state"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        i = _index(program.parser, self.name, "parser")
        new_name = _instance(self.state, ParserState, f"parser.{self.name}").name
        if new_name != self.name:
            _absent(program.parser, new_name, "parser")
        old = program.parser[i]
        parser = program.parser[:i] + (self.state,) + program.parser[i + 1:]
        if new_name != self.name:
            parser = tuple(_retarget(s, self.name, new_name) for s in parser)
        return program.with_(parser=parser), (ReplaceParserState(new_name, old),)


def _retarget(state: ParserState, old: str, new: str) -> ParserState:
    tr = state.transition
    if not isinstance(tr, Transition):
        return state
    cases = tuple((c[0], new) if isinstance(c, tuple) and len(c) == 2 and c[1] == old else c
                  for c in _tup(tr.cases))
    default = new if tr.default == old else tr.default
    if cases == tr.cases and default == tr.default:
        return state
    return replace(state, transition=replace(tr, cases=cases, default=default))


# -- maps and headers ------------------------------------------------------------------


@dataclass(frozen=True)
class AddMap:
    """Add a map (at ``index``, default last)."""
    map: Map
    index: int | None = None
    kind: ClassVar[str] = "add_map"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        name, at = _slot(program, "maps", self.map, Map, self.index)
        new = program.with_(maps=_insert(program.maps, at, self.map))
        return new, (RemoveMaps(_literal(name)),)


@dataclass(frozen=True)
class RemoveMaps:
    """Remove the maps matching ``pattern``; refused while an op uses one."""
    pattern: str
    kind: ClassVar[str] = "remove_maps"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        idxs = _matching(program.maps, self.pattern, "maps")
        names = tuple(program.maps[i].name for i in idxs)
        for element, op in _program_ops(program):
            if _map_arg(op) in names:
                _fail(element, f"the op uses map {show(_map_arg(op))}")
        new = program.with_(maps=tuple(m for i, m in enumerate(program.maps) if i not in idxs))
        return new, tuple(AddMap(program.maps[i], index=i) for i in idxs)


def _map_arg(op: Any) -> str | None:
    """The map an op names, if it is a map op."""
    if not isinstance(op, Op) or not isinstance(op.name, str):
        return None
    roles = ARG_ROLES.get(op.name, ())
    args = _tup(op.args)
    if roles and roles[0].startswith("map:") and args and isinstance(args[0], str):
        return args[0]
    return None


@dataclass(frozen=True)
class AddHeader:
    """Add a header type (at ``index``, default last)."""
    header: Header
    index: int | None = None
    kind: ClassVar[str] = "add_header"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        name, at = _slot(program, "headers", self.header, Header, self.index)
        new = program.with_(headers=_insert(program.headers, at, self.header))
        return new, (RemoveHeader(name),)


@dataclass(frozen=True)
class RemoveHeader:
    """Remove header ``name``; refused while a state extracts it or a field of it is used."""
    name: str
    kind: ClassVar[str] = "remove_header"

    def apply(self, program: Program) -> tuple[Program, tuple]:
        i = _index(program.headers, self.name, "headers")
        for state in program.parser:
            if state.extract == self.name:
                _fail(f"parser.{state.name}.extract", f"the state extracts {show(self.name)}")
        for element, ref in _field_refs(program):
            if isinstance(ref, str) and ref.partition(".")[0] == self.name and "." in ref:
                _fail(element, f"uses {ref}")
        new = program.with_(headers=program.headers[:i] + program.headers[i + 1:])
        return new, (AddHeader(program.headers[i], index=i),)


DeltaOp = Union[AddTable, RemoveTables, ReplaceTable, SetTableActions, AddAction, RemoveActions,
                ReplaceAction, AddParserState, RemoveParserStates, ReplaceParserState, AddMap,
                RemoveMaps, AddHeader, RemoveHeader]
OP_TYPES: tuple[type, ...] = get_args(DeltaOp)


# -- Delta -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """A named sequence of ops, applied in order; the result is validated."""
    ops: tuple = ()
    name: str = ""

    def apply(self, program: Program) -> tuple[Program, "Delta"]:
        """The new program and the Delta that undoes this one."""
        _valid(program, "the running program is invalid: ")
        if not isinstance(self.ops, tuple):
            _fail("ops", f"expected a tuple of ops, got {show(self.ops)}")
        current, inverses = program, []
        for i, op in enumerate(self.ops):
            if not isinstance(op, OP_TYPES):
                _fail(f"ops[{i}]", f"not a delta op: {show(op)}")
            try:
                current, inverse = op.apply(current)
            except DeltaError as exc:
                raise DeltaError(exc.element, f"ops[{i}] {op.kind}: {exc.message}") from exc
            inverses.append(inverse)
        _valid(current, "the result would be invalid: ")
        undo = tuple(op for inverse in reversed(inverses) for op in inverse)
        name = self.name if isinstance(self.name, str) else show(self.name)
        return current, Delta(undo, f"undo {name}" if name else "undo")


def _valid(program: Any, prefix: str) -> None:
    try:
        validate(program)
    except ProgramError as exc:
        raise DeltaError(exc.element, prefix + exc.message) from exc


# -- YAML form -------------------------------------------------------------------------


def load_delta(path: str | Path) -> Delta:
    """Read a delta from a YAML file."""
    return delta_from_dict(read_yaml(path, DeltaError), str(path))


def delta_from_dict(data: Any, source: str = "<data>") -> Delta:
    """A Delta from its parsed YAML form; errors name ``source`` and the op."""
    try:
        return _delta(data, source)
    except (DeltaError, ProgramError) as exc:
        raise DeltaError(f"{source}: {exc.element}", exc.message) from exc


def _delta(data: Any, source: str) -> Delta:
    root = _mapping(data, "<root>")
    _keys(root, ("name", "ops"), "")
    default = "" if source.startswith("<") else Path(source).stem
    name = root.get("name", default)
    if not isinstance(name, str):
        _fail("name", f"expected a string, got {show(name)}")
    ops = root.get("ops")
    if not isinstance(ops, list) or not ops:
        _fail("ops", "expected a non-empty list of ops")
    return Delta(tuple(_op(item, f"ops[{i}]") for i, item in enumerate(ops)), name)


def _op(item: Any, path: str) -> Any:
    item = _mapping(item, path)
    kinds = [k for k in item if k in _PARSERS]
    if len(kinds) != 1:
        _fail(path, f"expected exactly one op, one of {', '.join(_PARSERS)}")
    kind = kinds[0]
    _keys(item, (kind, "actions") if kind == "add_table" else (kind,), path)
    return _PARSERS[kind](item[kind], item, f"{path}.{kind}")


Parser = Callable[[Any, dict, str], Any]


def _add_table(value: Any, item: dict, path: str) -> AddTable:
    data = _mapping(value, path)
    if "name" not in data:
        _fail(f"{path}.name", "missing")
    table = table_from_dict(data["name"], data, path, extra=("name", "before", "after"))
    base = f"{path.rpartition('.')[0]}.actions"
    actions = _mapping(item.get("actions"), base, optional=True)
    return AddTable(table, data.get("before"), data.get("after"),
                    tuple(action_from_dict(n, a, f"{base}.{n}") for n, a in actions.items()))


def _pattern(make: Callable[[str], Any]) -> Parser:
    def parse(value: Any, item: dict, path: str) -> Any:
        if not isinstance(value, str):
            _fail(path, f"expected a name or pattern, got {show(value)}")
        return make(value)
    return parse


def _replace(make: Callable[[str, Any], Any], part: str,
             build: Callable[[Any, Any, str], Any]) -> Parser:
    def parse(value: Any, item: dict, path: str) -> Any:
        data = _mapping(value, path)
        _keys(data, ("name", part), path, required=("name", part))
        body = _mapping(data[part], f"{path}.{part}")
        rest = {k: v for k, v in body.items() if k != "name"}
        return make(data["name"], build(body.get("name", data["name"]), rest, f"{path}.{part}"))
    return parse


def _set_table_actions(value: Any, item: dict, path: str) -> SetTableActions:
    data = _mapping(value, path)
    _keys(data, ("table", "add", "remove", "default", "default_args"), path, required=("table",))
    return SetTableActions(data["table"], _tuple(data.get("add"), f"{path}.add"),
                           _tuple(data.get("remove"), f"{path}.remove"), data.get("default"),
                           _tuple(data.get("default_args"), f"{path}.default_args"))


def _named_body(value: Any, path: str) -> tuple[Any, dict]:
    data = dict(_mapping(value, path))
    if "name" not in data:
        _fail(f"{path}.name", "missing")
    return data.pop("name"), data


def _add_action(value: Any, item: dict, path: str) -> AddAction:
    return AddAction(action_from_dict(*_named_body(value, path), path))


def _add_map(value: Any, item: dict, path: str) -> AddMap:
    return AddMap(map_from_dict(*_named_body(value, path), path))


def _add_header(value: Any, item: dict, path: str) -> AddHeader:
    return AddHeader(header_from_dict(value, path))


def _add_parser_state(value: Any, item: dict, path: str) -> AddParserState:
    data = _mapping(value, path)
    _keys(data, ("after", "values", "select", "state", "header"), path,
          required=("after", "values", "state"))
    values = data["values"]
    values = tuple(values) if isinstance(values, list) else (values,)
    header = data.get("header")
    return AddParserState(state_from_dict(data["state"], f"{path}.state"), data["after"],
                          values, _tuple(data.get("select"), f"{path}.select"),
                          None if header is None else header_from_dict(header, f"{path}.header"))


def _state_named(name: Any, data: dict, path: str) -> ParserState:
    return state_from_dict({"name": name, **data}, path)


_PARSERS: Mapping[str, Parser] = MappingProxyType({
    "add_table": _add_table,
    "remove_tables": _pattern(RemoveTables),
    "replace_table": _replace(ReplaceTable, "table", table_from_dict),
    "set_table_actions": _set_table_actions,
    "add_action": _add_action,
    "remove_actions": _pattern(RemoveActions),
    "replace_action": _replace(ReplaceAction, "action", action_from_dict),
    "add_parser_state": _add_parser_state,
    "remove_parser_states": _pattern(RemoveParserStates),
    "replace_parser_state": _replace(ReplaceParserState, "state", _state_named),
    "add_map": _add_map,
    "remove_maps": _pattern(RemoveMaps),
    "add_header": _add_header,
    "remove_header": _pattern(RemoveHeader),
})


def _tuple(value: Any, path: str) -> tuple:
    return tuple(_list(value, path))
