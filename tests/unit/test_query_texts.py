"""The statements of pgqueue/_store/_queries.py are made of constants only.

They are typed ``LiteralString``, but mypy reads ``LiteralString`` as ``str``: a statement
joined with a variable or an f-string type-checks all the same. This test is the check."""

from __future__ import annotations

import ast
from pathlib import Path

import pgqueue._store._queries as q

SOURCE = Path(q.__file__).read_text(encoding="utf-8")


def _constant(node: ast.expr, constants: set[str], params: set[str]) -> bool:
    """Whether ``node`` is made of string literals, the module's constants and ``params``
    only, joined with ``+`` or through ``_errors_plus``."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return node.id in constants or node.id in params
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _constant(node.left, constants, params) and _constant(node.right, constants, params)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return (
            node.func.id == "_errors_plus"
            and not node.keywords
            and all(_constant(arg, constants, params) for arg in node.args)
        )
    return False


def _unbuilt(source: str) -> list[str]:
    """Where ``source`` builds a text from anything but constants (see _constant)."""
    tree = ast.parse(source)
    constants: set[str] = set()
    found = []
    for node in tree.body:  # in order: a constant may use only those defined above it
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if _constant(node.value, constants, set()):
                constants.update(names)
            else:
                found.append(f"{', '.join(names)} (line {node.lineno})")
        elif isinstance(node, ast.FunctionDef):
            params = {a.arg for a in node.args.args}
            returns = [r for r in ast.walk(node) if isinstance(r, ast.Return)]
            found += [
                f"{node.name} (line {r.lineno})"
                for r in returns
                if r.value is None or not _constant(r.value, constants, params)
            ]
    return found


def test_every_statement_is_made_of_constants_only() -> None:
    """No statement (nor any other module-level value of the queries' module) is built
    from a variable, an f-string, ``%`` or ``.format``; ``_errors_plus`` joins its
    arguments, constants at every call, with literals."""
    assert _unbuilt(SOURCE) == []


def test_a_statement_built_from_a_variable_is_found() -> None:
    """The check above can fail: an f-string, a variable or a call in a statement is named."""
    built = SOURCE + '\nwho = input()\nBAD: LiteralString = f"SELECT {who}"\n'
    built += 'WORSE: LiteralString = "SELECT " + _errors_plus(who, "x")\n'
    end = SOURCE.count("\n")
    assert _unbuilt(built) == [f"who (line {end + 2})", f"BAD (line {end + 3})",
                               f"WORSE (line {end + 4})"]  # fmt: skip
