"""Validation of FlexBPF-lite programs and of a target's capabilities.

``validate(program)`` returns the program unchanged or raises one ``ProgramError`` whose
``element`` is a dotted path: top-level elements by name (``tables.acl``, ``parser.ipv4``,
``maps.cms.rows``, ``metadata.l3_dst``), their parts by index (``tables.acl.keys[0]``,
``actions.forward.ops[0].args[1]``, ``parser.ipv4.transition.cases[1]``,
``headers.tel.fields[0]``, ``control[2].table``); an element whose name is itself invalid is
named by index (``tables[3].name``). Garbage inside the dataclasses (None, wrong types) is
reported as a ProgramError too; nothing else is ever raised.

Rules beyond the obvious: names match ``[A-Za-z_][A-Za-z0-9_]{0,14}`` (BPF object names);
the first parser state is the start state and is named ``start``; states may not be named
``accept``/``reject`` and headers not ``meta``/``std``; the parser graph is acyclic; a
``sets`` source must fit its ``meta.*`` target; constants fit their fields (``push_vlan``:
12 bits, ``count``/``reg_write`` index: below the map's size); an op's key (a field ref, a
tuple of them or a ``$param``) fits the map's ``key_bits``; a control statement either applies
one table or runs ops; every table is applied exactly once.
"""
from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Iterable, Mapping, NoReturn

from flexnet_lab.errors import ProgramError
from flexnet_lab.inputs import show

from .model import (MAP_KINDS, MATCH_KINDS, OPS, Action, Field, Header, Key, Map, Op,
                    ParserState, Program, Stmt, Table, Transition)

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,14}")
MAX_HEADER_BYTES = 64
MAX_FIELD_BITS = 64
MAX_MAP_SIZE = 65536
MAX_TABLE_SIZE = 65536
MAX_TERNARY_SIZE = 256
MAX_KEYS = 8
MAX_PARAMS = 4
MAX_SKETCH_ROWS = 8
MAX_KEY_BITS = 320
U64 = (1 << 64) - 1
TERMINAL_STATES = ("accept", "reject")
RESERVED_SCOPES = ("meta", "std")
KEYED_MAP_KINDS = ("hash", "sketch", "meter")
MATCH_CAPS = MATCH_KINDS

# What each op argument is: "map:<kind>", "value", "index", "key" or "dest".
ARG_ROLES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "forward": ("value",),
    "drop": (),
    "nop": (),
    "set": ("dest", "value"),
    "push_vlan": ("vid",),
    "pop_vlan": (),
    "count": ("map:counter", "index"),
    "map_add": ("map:hash", "key"),
    "sketch_add": ("map:sketch", "key"),
    "rate_limit": ("map:meter", "key"),
    "reg_write": ("map:register", "index", "value"),
})


# -- public API ------------------------------------------------------------------------


def validate(program: Program) -> Program:
    """Return ``program`` unchanged if valid, else raise one ProgramError naming the element."""
    if not isinstance(program, Program):
        _fail("<program>", f"expected a Program, got {type(program).__name__}")
    _ident(program.name, "name")
    _check_headers(program)
    _check_metadata(program)
    _check_parser(program)
    _check_maps(program)
    _check_actions(program)
    _check_tables(program)
    _check_control(program)
    return program


def check_target(program: Program, caps: set[str]) -> None:
    """Raise a ProgramError naming the first op or match kind that a target with
    capabilities ``caps`` (op names plus "exact", "lpm", "ternary") lacks."""
    for element, need in _features(program):
        if need not in caps:
            _fail(element, f"the target does not support {need}")


def check_entry(program: Program, table: Any, match: Any, action: Any, args: Any = (),
                priority: Any = 0) -> None:
    """Raise a ProgramError naming the part of a table entry that ``program`` cannot take
    (``table``, ``action``, ``args[i]``, ``match[i]``, ``priority``): the same checks a device
    makes on insert, so a bad entry is refused before any lab."""
    t = program.table(table) if isinstance(table, str) else None
    if t is None:
        _fail("table", f"program {program.name} has no table {show(table)}"
              f" (has {', '.join(x.name for x in program.tables) or 'none'})")
    if not isinstance(action, str) or action not in t.actions:
        _fail("action", f"table {t.name} has no action {show(action)} "
              f"(has {', '.join(t.actions)})")
    params = program.action(action).params
    if not isinstance(args, (list, tuple)) or len(args) != len(params):
        _fail("args", f"action {action} takes {len(params)} arguments "
              f"({', '.join(n for n, _ in params) or 'none'}), got {show(args)}")
    for i, ((name, bits), value) in enumerate(zip(params, args)):
        _int(value, f"args[{i}]", 0, (1 << bits) - 1)
    if not isinstance(match, (list, tuple)) or len(match) != len(t.keys):
        _fail("match", f"table {t.name} matches {len(t.keys)} fields "
              f"({', '.join(f'{k.field} {k.kind}' for k in t.keys)}), got {show(match)}")
    for i, (key, value) in enumerate(zip(t.keys, match)):
        bits = program.field_bits(key.field) or 64
        where = f"match[{i}]"
        if key.kind == "exact":
            _int(value, where, 0, (1 << bits) - 1)
            continue
        second = "prefix length" if key.kind == "lpm" else "mask"
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            _fail(where, f"{key.field} is {key.kind}: expected [value, {second}], "
                  f"got {show(value)}")
        _int(value[0], where, 0, (1 << bits) - 1)
        _int(value[1], where, 0, bits if key.kind == "lpm" else (1 << bits) - 1)
    _int(priority, "priority", 0, (1 << 31) - 1)


# -- helpers ---------------------------------------------------------------------------


def _fail(element: str, message: str) -> NoReturn:
    raise ProgramError(element, message)


def _tuple(value: Any, element: str) -> tuple:
    if not isinstance(value, tuple):
        _fail(element, f"expected a tuple, got {type(value).__name__}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, element: str, lo: int, hi: int) -> int:
    if not _is_int(value):
        _fail(element, f"expected an integer, got {show(value)}")
    if not lo <= value <= hi:
        _fail(element, f"{show(value)} is out of range {lo}..{hi}")
    return value


def _ident(value: Any, element: str) -> str:
    if not isinstance(value, str) or not IDENT.fullmatch(value):
        _fail(element, f"invalid name {show(value)}: need {IDENT.pattern}")
    return value


def _named(items: Any, cls: type, path: str) -> dict[str, Any]:
    """Check a tuple of ``cls`` with valid, unique names; return them by name."""
    seen: dict[str, Any] = {}
    for i, item in enumerate(_tuple(items, path)):
        if not isinstance(item, cls):
            _fail(f"{path}[{i}]", f"expected a {cls.__name__}, got {type(item).__name__}")
        _ident(item.name, f"{path}[{i}].name")
        if item.name in seen:
            _fail(f"{path}.{item.name}", f"duplicate name {show(item.name)}")
        seen[item.name] = item
    return seen


def _field_bits(program: Program, ref: Any) -> int | None:
    return program.field_bits(ref) if isinstance(ref, str) else None


def _field(program: Program, ref: Any, element: str) -> int:
    """Width of a known field reference, else fail."""
    bits = _field_bits(program, ref)
    if bits is None:
        _fail(element, f"unknown field {show(ref)}")
    return bits


def _fits(value: int, bits: int) -> bool:
    return 0 <= value < (1 << bits)


# -- headers and metadata --------------------------------------------------------------


def _check_fields(fields: Any, path: str, by_name: bool) -> None:
    seen: set[str] = set()
    for i, f in enumerate(_tuple(fields, path)):
        if not isinstance(f, Field):
            _fail(f"{path}[{i}]", f"expected a Field, got {type(f).__name__}")
        _ident(f.name, f"{path}[{i}].name")
        element = f"{path}.{f.name}" if by_name else f"{path}[{i}]"
        if f.name in seen:
            _fail(element, f"duplicate field {show(f.name)}")
        seen.add(f.name)
        _int(f.bits, element, 1, MAX_FIELD_BITS)


def _check_headers(program: Program) -> None:
    for name, header in _named(program.headers, Header, "headers").items():
        element = f"headers.{name}"
        if name in RESERVED_SCOPES:
            _fail(element, f"{show(name)} is reserved for field references")
        _check_fields(header.fields, f"{element}.fields", by_name=False)
        if not header.fields:
            _fail(f"{element}.fields", "a header needs at least one field")
        bits = header.bits
        if bits % 8:
            _fail(element, f"{bits} bits is not a whole number of bytes")
        if bits > MAX_HEADER_BYTES * 8:
            _fail(element, f"{bits // 8} bytes is more than {MAX_HEADER_BYTES}")


def _check_metadata(program: Program) -> None:
    _check_fields(program.metadata, "metadata", by_name=True)


# -- parser ----------------------------------------------------------------------------


def _check_parser(program: Program) -> None:
    states = _named(program.parser, ParserState, "parser")
    if not states:
        _fail("parser", "the parser needs at least a start state")
    first = program.parser[0].name
    if first != "start":
        _fail(f"parser.{first}", "the first state is the start state and must be named 'start'")
    extracted: dict[str, str] = {}
    for name, state in states.items():
        if name in TERMINAL_STATES:
            _fail(f"parser.{name}", f"{show(name)} is a terminal state, not a state name")
        _check_state(program, state, f"parser.{name}", extracted)
    _check_acyclic(states)


def _check_state(program: Program, state: ParserState, path: str,
                 extracted: dict[str, str]) -> None:
    if state.extract is not None:
        if not isinstance(state.extract, str) or program.header(state.extract) is None:
            _fail(f"{path}.extract", f"unknown header {show(state.extract)}")
        if state.extract in extracted:
            _fail(f"{path}.extract",
                  f"header {show(state.extract)} is already extracted by {show(extracted[state.extract])}")
        extracted[state.extract] = state.name
    for i, pair in enumerate(_tuple(state.sets, f"{path}.sets")):
        _check_set(program, pair, f"{path}.sets[{i}]")
    if not isinstance(state.transition, Transition):
        _fail(f"{path}.transition", f"expected a Transition, got {type(state.transition).__name__}")
    _check_transition(program, state.transition, f"{path}.transition")


def _check_set(program: Program, pair: Any, element: str) -> None:
    if not isinstance(pair, tuple) or len(pair) != 2:
        _fail(element, f"expected a (meta.field, source) pair, got {show(pair)}")
    target, source = pair
    if not isinstance(target, str) or not target.startswith("meta."):
        _fail(element, f"the target must be a meta.* field, got {show(target)}")
    target_bits = _field(program, target, element)
    source_bits = _field(program, source, element)
    if source_bits > target_bits:
        _fail(element, f"{source} ({source_bits} bits) does not fit {target} ({target_bits} bits)")


def _check_transition(program: Program, tr: Transition, path: str) -> None:
    widths = [_field(program, ref, f"{path}.select[{i}]")
              for i, ref in enumerate(_tuple(tr.select, f"{path}.select"))]
    cases = _tuple(tr.cases, f"{path}.cases")
    if cases and not widths:
        _fail(f"{path}.cases", "cases need select fields")
    for i, case in enumerate(cases):
        _check_case(program, case, widths, f"{path}.cases[{i}]")
    _check_target_state(program, tr.default, f"{path}.default")


def _check_case(program: Program, case: Any, widths: list[int], element: str) -> None:
    if not isinstance(case, tuple) or len(case) != 2:
        _fail(element, f"expected a (values, state) pair, got {show(case)}")
    values, target = case
    if not isinstance(values, tuple) or len(values) != len(widths):
        _fail(element, f"expected a tuple of {len(widths)} values, got {show(values)}")
    for value, bits in zip(values, widths):
        if not _is_int(value) or not _fits(value, bits):
            _fail(element, f"{show(value)} does not fit a {bits}-bit field")
    _check_target_state(program, target, element)


def _check_target_state(program: Program, target: Any, element: str) -> None:
    if not isinstance(target, str) or (target not in TERMINAL_STATES
                                       and program.state(target) is None):
        _fail(element, f"unknown state {show(target)}")


def _check_acyclic(states: dict[str, ParserState]) -> None:
    """Depth-first search over the parser graph; fail naming the first cycle found."""
    done: set[str] = set()
    for root in states:
        if root in done:
            continue
        path = [root]
        stack = [iter(_next_states(states, root))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                done.add(path.pop())
                stack.pop()
            elif nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                _fail(f"parser.{path[-1]}.transition", "parser cycle " + " -> ".join(cycle))
            elif nxt not in done:
                path.append(nxt)
                stack.append(iter(_next_states(states, nxt)))


def _next_states(states: dict[str, ParserState], name: str) -> list[str]:
    return [t for t in states[name].transition.targets() if t in states]


# -- maps ------------------------------------------------------------------------------


def _check_maps(program: Program) -> None:
    for name, m in _named(program.maps, Map, "maps").items():
        _check_map(m, f"maps.{name}")


def _check_map(m: Map, path: str) -> None:
    if not isinstance(m.kind, str) or m.kind not in MAP_KINDS:
        _fail(f"{path}.kind", f"unknown map kind {show(m.kind)}; one of {', '.join(MAP_KINDS)}")
    _int(m.size, f"{path}.size", 1, MAX_MAP_SIZE)
    for attr in ("key_bits", "rows", "rate", "burst"):
        _int(getattr(m, attr), f"{path}.{attr}", 0, U64)
    if m.kind in KEYED_MAP_KINDS:
        _int(m.key_bits, f"{path}.key_bits", 1, MAX_KEY_BITS)
    if m.kind == "sketch":
        _int(m.rows, f"{path}.rows", 1, MAX_SKETCH_ROWS)
    if m.kind == "meter":
        _int(m.rate, f"{path}.rate", 1, U64)
        _int(m.burst, f"{path}.burst", 1, U64)


# -- actions and ops -------------------------------------------------------------------


def _check_actions(program: Program) -> None:
    for name, action in _named(program.actions, Action, "actions").items():
        path = f"actions.{name}"
        params = _check_params(action.params, f"{path}.params")
        for i, op in enumerate(_tuple(action.ops, f"{path}.ops")):
            _check_op(program, op, f"{path}.ops[{i}]", params)


def _check_params(params: Any, path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    params = _tuple(params, path)
    if len(params) > MAX_PARAMS:
        _fail(path, f"{len(params)} parameters; at most {MAX_PARAMS}")
    for i, param in enumerate(params):
        element = f"{path}[{i}]"
        if not isinstance(param, tuple) or len(param) != 2:
            _fail(element, f"expected a (name, bits) pair, got {show(param)}")
        name = _ident(param[0], element)
        if name in out:
            _fail(element, f"duplicate parameter {show(name)}")
        out[name] = _int(param[1], element, 1, MAX_FIELD_BITS)
    return out


def _check_op(program: Program, op: Any, element: str, params: dict[str, int] | None) -> None:
    """Check one op; ``params`` is None in control statements (no action data there)."""
    if not isinstance(op, Op):
        _fail(element, f"expected an Op, got {type(op).__name__}")
    if not isinstance(op.name, str) or op.name not in OPS:
        _fail(element, f"unknown op {show(op.name)}")
    args = _tuple(op.args, f"{element}.args")
    if len(args) != OPS[op.name]:
        _fail(element, f"{op.name} takes {OPS[op.name]} argument(s), got {len(args)}")
    roles = ARG_ROLES[op.name]
    map_ = _check_map_arg(program, args[0], roles[0], f"{element}.args[0]") if roles else None
    for i, (arg, role) in enumerate(zip(args, roles)):
        arg_el = f"{element}.args[{i}]"
        if role == "dest":
            _check_dest(program, arg, arg_el)
        elif role == "key":
            _check_key_arg(program, arg, arg_el, params, map_)
        elif role in ("value", "vid", "index"):
            _check_value(program, arg, arg_el, params, _const_bits(role, args, program))
            if role == "index" and map_ is not None and _is_int(arg) and arg >= map_.size:
                _fail(arg_el, f"index {arg} is beyond the map's {map_.size} slots")


def _const_bits(role: str, args: tuple, program: Program) -> int:
    """How many bits a constant in this position may have."""
    if role == "vid":
        return 12
    if role == "value" and len(args) == 2 and isinstance(args[0], str):  # set(dest, value)
        return _field_bits(program, args[0]) or 64
    return 64


def _check_map_arg(program: Program, arg: Any, role: str, element: str) -> Map | None:
    if not role.startswith("map:"):
        return None
    kind = role[4:]
    m = program.map(arg) if isinstance(arg, str) else None
    if m is None:
        _fail(element, f"unknown map {show(arg)}")
    if m.kind != kind:
        _fail(element, f"map {show(arg)} is a {m.kind}, this op needs a {kind}")
    return m


def _check_dest(program: Program, arg: Any, element: str) -> None:
    if not isinstance(arg, str) or arg.startswith("std."):
        _fail(element, f"set needs a header or meta field, got {show(arg)}")
    _field(program, arg, element)


def _check_value(program: Program, arg: Any, element: str, params: dict[str, int] | None,
                 bits: int = 64) -> int:
    """An int constant, "$param" or a field ref; returns its width in bits."""
    if _is_int(arg):
        if not _fits(arg, bits):
            _fail(element, f"constant {show(arg)} does not fit {bits} bits")
        return bits
    if isinstance(arg, str) and arg.startswith("$"):
        if params is None:
            _fail(element, f"{arg} is an action parameter; control ops cannot use them")
        if arg[1:] not in params:
            _fail(element, f"{arg} is not a parameter of the action")
        return params[arg[1:]]
    if isinstance(arg, str) and "." in arg:
        return _field(program, arg, element)
    _fail(element, f"expected a constant, $param or field reference, got {show(arg)}")


def _check_key_arg(program: Program, arg: Any, element: str, params: dict[str, int] | None,
                   map_: Map | None) -> None:
    if isinstance(arg, tuple):
        if not arg:
            _fail(element, "a key needs at least one field")
        bits = sum(_field(program, ref, element) for ref in arg)
    else:
        bits = _check_value(program, arg, element, params)
        if _is_int(arg):
            return
    if map_ is not None and bits > map_.key_bits:
        _fail(element, f"the key is {bits} bits; map {show(map_.name)} holds {map_.key_bits}")


# -- tables ----------------------------------------------------------------------------


def _check_tables(program: Program) -> None:
    for name, table in _named(program.tables, Table, "tables").items():
        path = f"tables.{name}"
        ternary = _check_keys(program, table.keys, f"{path}.keys")
        limit = MAX_TERNARY_SIZE if ternary else MAX_TABLE_SIZE
        _int(table.size, f"{path}.size", 1, limit)
        _check_table_actions(program, table, path)


def _check_keys(program: Program, keys: Any, path: str) -> bool:
    """Check a table's keys; return whether the table is ternary."""
    keys = _tuple(keys, path)
    if not 1 <= len(keys) <= MAX_KEYS:
        _fail(path, f"a table has 1..{MAX_KEYS} keys, got {len(keys)}")
    seen: set[str] = set()
    for i, key in enumerate(keys):
        element = f"{path}[{i}]"
        if not isinstance(key, Key):
            _fail(element, f"expected a Key, got {type(key).__name__}")
        _field(program, key.field, element)
        if key.field in seen:
            _fail(element, f"{key.field} is matched twice")
        seen.add(key.field)
        if not isinstance(key.kind, str) or key.kind not in MATCH_KINDS:
            _fail(element, f"unknown match kind {show(key.kind)}; one of {', '.join(MATCH_KINDS)}")
    kinds = {k.kind for k in keys}
    if "lpm" in kinds and len(keys) != 1:
        _fail(path, "an lpm table has exactly one key")
    return "ternary" in kinds


def _check_table_actions(program: Program, table: Table, path: str) -> None:
    names = _tuple(table.actions, f"{path}.actions")
    if not names:
        _fail(f"{path}.actions", "a table needs at least one action")
    for i, name in enumerate(names):
        if not isinstance(name, str) or program.action(name) is None:
            _fail(f"{path}.actions[{i}]", f"unknown action {show(name)}")
        if names.index(name) != i:
            _fail(f"{path}.actions[{i}]", f"action {show(name)} is listed twice")
    default = table.default_action
    if not isinstance(default, str) or default not in names:
        _fail(f"{path}.default_action", f"{show(default)} is not one of the table's actions")
    params = program.action(default).params
    args = _tuple(table.default_args, f"{path}.default_args")
    if len(args) != len(params):
        _fail(f"{path}.default_args",
              f"{default} takes {len(params)} argument(s), got {len(args)}")
    for i, (arg, (pname, bits)) in enumerate(zip(args, params)):
        if not _is_int(arg) or not _fits(arg, bits):
            _fail(f"{path}.default_args[{i}]", f"{show(arg)} does not fit {pname} ({bits} bits)")


# -- control ---------------------------------------------------------------------------


def _check_control(program: Program) -> None:
    applied: set[str] = set()
    for i, stmt in enumerate(_tuple(program.control, "control")):
        _check_stmt(program, stmt, f"control[{i}]", applied)
    for table in program.tables:
        if table.name not in applied:
            _fail(f"tables.{table.name}", "the table is never applied in control")


def _check_stmt(program: Program, stmt: Any, path: str, applied: set[str]) -> None:
    if not isinstance(stmt, Stmt):
        _fail(path, f"expected a Stmt, got {type(stmt).__name__}")
    ops = _tuple(stmt.ops, f"{path}.ops")
    if stmt.table is not None and ops:
        _fail(path, "a statement applies a table or runs ops, not both")
    if stmt.table is None and not ops:
        _fail(path, "an empty statement")
    if stmt.table is not None:
        if not isinstance(stmt.table, str) or program.table(stmt.table) is None:
            _fail(f"{path}.table", f"unknown table {show(stmt.table)}")
        if stmt.table in applied:
            _fail(f"{path}.table", f"table {show(stmt.table)} is already applied")
        applied.add(stmt.table)
    for j, op in enumerate(ops):
        _check_op(program, op, f"{path}.ops[{j}]", None)


# -- target capabilities ---------------------------------------------------------------


def _features(program: Program) -> Iterable[tuple[str, str]]:
    """(element, capability) for every op and match kind the program uses, in order."""
    for action in program.actions:
        for i, op in enumerate(action.ops):
            yield f"actions.{action.name}.ops[{i}]", op.name
    for table in program.tables:
        for i, key in enumerate(table.keys):
            yield f"tables.{table.name}.keys[{i}]", key.kind
    for s, stmt in enumerate(program.control):
        for i, op in enumerate(stmt.ops):
            yield f"control[{s}].ops[{i}]", op.name
