"""Parse row-filter text into a pyarrow compute expression, without ``eval``.

Grammar (Python syntax, pyarrow semantics)::

    position > 1000
    (chrom == 'chr1') & (strand != '-')          # also: and / or / not, | and ~
    chrom in ['chr1', 'chr2']                    # also: not in
    field('odd name') >= 0.5                     # columns whose names are not identifiers; also `odd name` >= 0.5
    is_null(gene_type) | is_valid(gene_type)            # also: gene_type is None, gene_type is not None

A null never satisfies a comparison, ``in`` or ``not in``; select nulls with ``is_null``.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from extmem.errors import FilterError

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_PREDICATES = {"is_null": "is_null", "is_valid": "is_valid"}
MAX_FILTER_CHARS = 100_000
MAX_DEPTH = 200
"""Deepest nesting of a filter's syntax tree: ``a & b & c ...`` nests one level per term."""
_INT64 = (-(2**63), 2**63 - 1)
_SHOWN_CHARS = 80
_BACKQUOTED = re.compile(r"`([^`]*)`")
"""A column name in backquotes, as pandas' query writes one that is not an identifier."""


def quoted(text: str) -> str:
    """Filter text quoted for a message, shortened to its first characters when long."""
    return repr(text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "...")


@dataclass(frozen=True)
class RowFilter:
    """A parsed filter: the expression and the columns it reads."""

    text: str
    expression: pc.Expression
    columns: frozenset[str]


def parse_filter(text: str) -> RowFilter:
    """Parse ``text`` into a :class:`RowFilter`; raise FilterError naming the problem."""
    if len(text) > MAX_FILTER_CHARS:
        msg = f"Invalid 'filter' {quoted(text)}: {len(text):,} characters, more than the {MAX_FILTER_CHARS:,} a filter may have."
        raise FilterError(msg, options=("filter",))
    try:
        tree = ast.parse(_BACKQUOTED.sub(lambda name: f"field({name[1]!r})", text.strip()), mode="eval")
    except SyntaxError as exc:
        msg = f"Invalid 'filter' {quoted(text)}: {exc.msg} at column {exc.offset}."
        raise FilterError(msg, options=("filter",)) from None
    except (RecursionError, MemoryError):
        msg = f"Invalid 'filter' {quoted(text)}: nested too deeply."
        raise FilterError(msg, options=("filter",)) from None
    if _depth(tree.body) > MAX_DEPTH:
        msg = f"Invalid 'filter' {quoted(text)}: nested more than {MAX_DEPTH} levels deep (combine many values with 'column in [...]')."
        raise FilterError(msg, options=("filter",))
    columns: set[str] = set()
    try:
        expression = _condition(tree.body, text, columns)
    except FilterError:
        raise
    except (pa.ArrowException, OverflowError, ValueError, TypeError) as exc:
        msg = f"Invalid 'filter' {quoted(text)}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}."
        raise FilterError(msg, options=("filter",)) from None
    return RowFilter(text=text, expression=expression, columns=frozenset(columns))


def _depth(root: ast.AST) -> int:
    """The depth of a syntax tree, measured without recursion."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _fail(text: str, node: ast.AST, why: str) -> FilterError:
    return FilterError(f"Invalid 'filter' {quoted(text)}: {why} ({quoted(ast.unparse(node))}).", options=("filter",))


def _convert(node: ast.AST, text: str, columns: set[str]) -> Any:
    if isinstance(node, ast.Name):
        columns.add(node.id)
        return pc.field(node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        if isinstance(node.value, int) and not _INT64[0] <= node.value <= _INT64[1]:
            raise _fail(text, node, "an integer beyond the 64-bit range")
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_literal(element, text) for element in node.elts]
        if len({_kind(value) for value in values}) > 1:
            raise _fail(text, node, "a list mixing numbers, strings and booleans; give values of one kind")
        return values
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1 and not node.keywords:
        name = node.func.id
        if name == "field":
            column = _literal(node.args[0], text)
            if not isinstance(column, str):
                raise _fail(text, node, "field() takes a column name string")
            columns.add(column)
            return pc.field(column)
        if name in _PREDICATES:
            return getattr(_expression(node.args[0], text, columns), _PREDICATES[name])()
        raise _fail(text, node, f"unknown function {name}(); supported: field, is_null, is_valid")
    if isinstance(node, ast.Compare):
        return _compare(node, text, columns)
    if isinstance(node, ast.BoolOp):
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        result = _condition(node.values[0], text, columns)
        for value in node.values[1:]:
            result = combine(result, _condition(value, text, columns))
        return result
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        combine = operator.and_ if isinstance(node.op, ast.BitAnd) else operator.or_
        return combine(_condition(node.left, text, columns), _condition(node.right, text, columns))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
        return ~_condition(node.operand, text, columns)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand, text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    raise _fail(text, node, "unsupported syntax")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _literal(node: ast.AST, text: str) -> Any:
    value = _convert(node, text, set())
    if isinstance(value, pc.Expression):
        raise _fail(text, node, "expected a literal value")
    return value


def _expression(node: ast.AST, text: str, columns: set[str]) -> pc.Expression:
    value = _convert(node, text, columns)
    if not isinstance(value, pc.Expression):
        raise _fail(text, node, "expected a column comparison")
    return value


def _condition(node: ast.AST, text: str, columns: set[str]) -> pc.Expression:
    """A node that yields true/false per row: a comparison, a predicate, or a combination."""
    is_predicate = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _PREDICATES
    boolean_op = isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr))
    negation = isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert))
    if not (isinstance(node, (ast.Compare, ast.BoolOp)) or is_predicate or boolean_op or negation):
        raise _fail(text, node, 'expected a condition such as "position > 100"')
    return _expression(node, text, columns)


def _compare(node: ast.Compare, text: str, columns: set[str]) -> pc.Expression:
    result: pc.Expression | None = None
    left = _convert(node.left, text, columns)
    for op, right_node in zip(node.ops, node.comparators):
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(left, pc.Expression) and isinstance(right_node, ast.Constant) and right_node.value is None):
                raise _fail(text, node, "use 'column is None' or is_null(column) to select nulls")
            term = left.is_null() if isinstance(op, ast.Is) else left.is_valid()
            result = term if result is None else result & term
            continue
        right = _convert(right_node, text, columns)
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(left, pc.Expression) or not isinstance(right, list):
                raise _fail(text, node, "use 'column in [value, ...]'")
            term = left.isin(right)
            term = (~term & left.is_valid()) if isinstance(op, ast.NotIn) else term
        elif type(op) in _COMPARE:
            if not isinstance(left, pc.Expression) and not isinstance(right, pc.Expression):
                named = next((side for side in (left, right) if isinstance(side, str)), None)
                hint = f"; {named!r} is a string: a column named so is `{named}` or field({named!r})" if named is not None else ""
                raise _fail(text, node, f"a comparison needs a column{hint}")
            term = _COMPARE[type(op)](left, right)
        else:
            raise _fail(text, node, "unsupported comparison")
        result = term if result is None else result & term
        left = right
    assert result is not None
    return result
