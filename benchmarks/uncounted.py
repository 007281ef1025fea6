"""The worker's own request path with its counting lines taken out, for measuring what
counting costs (benchmarks/bench_scrape.py, part 2).

Not a copy: `uncounted(function)` reads the real method's source at run time, drops every
statement that adds to `counters[...]`, then every assignment whose name nothing reads any
more (the duration's `took` and `bucket`, the `counters` local itself), and compiles what is
left in the method's own module. So the bare path changes whenever the real one does, and
`bench_scrape` checks that both answer the same bytes before it times them.
"""

from __future__ import annotations
import __future__

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _counts(statement: ast.stmt) -> bool:
    """`counters[...] += ...` (also `device.counters[...]`)."""
    if not isinstance(statement, ast.AugAssign) or not isinstance(statement.target, ast.Subscript):
        return False
    held = statement.target.value
    return (isinstance(held, ast.Name) and held.id == "counters") or (
        isinstance(held, ast.Attribute) and held.attr == "counters"
    )


def _assigned(statement: ast.stmt) -> set[str]:
    if isinstance(statement, ast.Assign) and all(
        isinstance(t, ast.Name) for t in statement.targets
    ):
        return {t.id for t in statement.targets if isinstance(t, ast.Name)}
    return set()


class _Strip(ast.NodeTransformer):
    """Drops counting statements, then assignments to names in `dead`."""

    def __init__(self, dead: set[str]) -> None:
        self.dead = dead

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                kept = [s for s in block if not _counts(s) and not (_assigned(s) & self.dead)]
                setattr(node, name, kept or [ast.Pass()])
        return node


def _dead_names(tree: ast.AST) -> set[str]:
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    written = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            written |= _assigned(node)
    return written - read


def uncounted(function: Callable[..., T]) -> Callable[..., T]:
    """`function` (a plain function or method) without its counting lines."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    _Strip(set()).visit(tree)  # edits the blocks in place
    while dead := _dead_names(tree):  # an unread name may have kept another one read
        _Strip(dead).visit(tree)
    ast.fix_missing_locations(tree)
    flags = __future__.annotations.compiler_flag
    code = compile(tree, inspect.getfile(function), "exec", flags=flags, dont_inherit=True)
    scope: dict[str, Any] = {}
    exec(code, function.__globals__, scope)
    stripped: Callable[..., T] = scope[function.__name__]
    return stripped


def without_counting(kind: type[T], *methods: str) -> type[T]:
    """A subclass of `kind` whose `methods` are `uncounted`."""
    overrides: dict[str, Any] = {name: uncounted(getattr(kind, name)) for name in methods}
    if "__slots__" in vars(kind):
        overrides["__slots__"] = ()
    return type(f"Uncounted{kind.__name__}", (kind,), overrides)
