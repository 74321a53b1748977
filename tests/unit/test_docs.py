"""The README and docs stay true: the CI runs the README's test command, links resolve."""

from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeGuard

import pytest

import pgqueue
from pgqueue import _events
from pgqueue._worker._worker import WorkerStats

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# Pages other branches write; the lead drops names from here as their branches merge.
PLANNED: set[str] = set()


def markdown_pages() -> list[Path]:
    """The pages users read: README.md, CHANGELOG.md and everything under docs/."""
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


def quickstart_commands() -> list[str]:
    """The commands in the README's Quickstart code block."""
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1]
    block = section.split("```console", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.strip()]


def test_readme_quickstart_has_two_commands_and_ci_runs_the_second_verbatim() -> None:
    """The README's test command is, verbatim, the line after .ci/run's marker comment."""
    commands = quickstart_commands()
    assert len(commands) == 2
    assert commands[0] == "pip install '.[demo]' && pgqueue demo"
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    marker = ci_lines.index("# The README's test command, verbatim:")
    assert commands[1] == ci_lines[marker + 1]


def test_every_relative_link_in_readme_and_docs_resolves() -> None:
    """No link in README.md, CHANGELOG.md or docs/ points at a missing file (planned pages
    excepted)."""
    pages = markdown_pages()
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (page.parent / target).resolve()
            if not resolved.exists() and str(resolved.relative_to(ROOT)) not in PLANNED:
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_python_api_reference_documents_every_public_name() -> None:
    """docs/reference/python-api.md documents every name in pgqueue.__all__."""
    text = (ROOT / "docs" / "reference" / "python-api.md").read_text()
    missing = [n for n in pgqueue.__all__ if f"`{n}" not in text and f"`pgqueue.{n}" not in text]
    assert missing == []


def test_worker_stats_are_the_counters_the_python_api_reference_lists() -> None:
    """worker.stats holds the counters docs/reference/python-api.md lists, and only those:
    each a number the worker keeps (a field it never wrote, by_state, stood there unused)."""
    text = (ROOT / "docs" / "reference" / "python-api.md").read_text()
    [row] = [line for line in text.splitlines() if line.startswith("| `worker.stats` |")]
    listed = re.findall(r"`(\w+)`", row.split("|")[2])
    stats = dataclasses.fields(WorkerStats)
    assert [(f.name, f.type) for f in stats] == [(name, "int") for name in listed]


def test_python_snippets_in_readme_and_guides_are_valid_python() -> None:
    """Every ```python block outside the signature listings of the API reference compiles."""
    pages = markdown_pages()
    bad = []
    for page in pages:
        if page.name == "python-api.md":  # signatures with annotations and defaults, not code
            continue
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S)):
            try:
                compile(block, f"{page.name}#{i}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            except SyntaxError as exc:
                bad.append(f"{page.relative_to(ROOT)} block {i}: {exc}")
    assert bad == []


def test_cli_reference_documents_every_option_and_its_environment_variable() -> None:
    """docs/reference/cli.md names every command, option and PGQUEUE_* variable of the CLI."""
    import click

    from pgqueue._cli import cli

    text = (ROOT / "docs" / "reference" / "cli.md").read_text()
    commands: list[click.Command] = [cli, *cli.commands.values()]
    missing = [
        f"pgqueue {c.name}" for c in cli.commands.values() if f"pgqueue {c.name}" not in text
    ]
    for command in commands:
        for param in command.params:
            names = [*param.opts, *([param.envvar] if isinstance(param.envvar, str) else [])]
            missing += [n for n in names if f"`{n}`" not in text and f"`{n} " not in text]
    assert missing == []


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings (outside code blocks)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_anchor_in_readme_and_docs_names_a_heading() -> None:
    """A link's #anchor (on its own page or another) matches a heading of the target page."""
    pages = markdown_pages()
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", text):
            linked = (page.parent / target).resolve() if target else page
            if linked.suffix != ".md" or not linked.is_file():  # files: the test above
                continue
            if anchor not in heading_anchors(linked):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert broken == []


def test_python_api_signature_blocks_list_every_parameter() -> None:
    """The signature listings of PgQueue, app.task, task.using, Worker and RetryPolicy in
    docs/reference/python-api.md name every parameter the code takes."""
    from pgqueue._task import Task

    text = (ROOT / "docs" / "reference" / "python-api.md").read_text()
    listings = {
        "pgqueue.PgQueue(\n": pgqueue.PgQueue.__init__,
        "@app.task(\n": pgqueue.PgQueue.task,
        "task.using(\n": Task.using,
        "pgqueue.Worker(\n": pgqueue.Worker.__init__,
        "pgqueue.RetryPolicy(": pgqueue.RetryPolicy,
    }
    missing = []
    for opener, fn in listings.items():
        listing = text.split(f"\n{opener}", 1)[1].split("\n)", 1)[0]
        names = inspect.signature(fn).parameters.keys() - {"self", "fn", "app"}
        missing += [f"{opener.strip()} {n}" for n in names if f"{n}:" not in listing]
    assert missing == []


# Actions built at run time, by the source that builds them (as ast.unparse gives it), and
# every value each can take. _log_event looks its level up in _LEVELS by the same state, so
# a state not there is never logged.
DYNAMIC_ACTIONS: dict[str, Callable[[], set[str]]] = {
    "f'job_{event.state}'": lambda: {f"job_{state}" for state in _events._LEVELS},
}
# Levels given at run time (``log.log(level, ...)``), by their source, for each action.
DYNAMIC_LEVELS: dict[str, Callable[[str], str]] = {
    "_LEVELS[event.state]": lambda action: logging.getLevelName(_events._LEVELS[action[4:]]),
}
# Spreads of a parameter (``**name``), by name, and the function whose returned dict has the
# keys it has: _log_summary's delta is the difference of two _totals.
SPREADS = {"delta": "_totals"}


def action_values(node: ast.AST) -> list[ast.expr]:
    """The expressions ``node`` gives as an action: ``{"action": ...}`` or ``dict(action=...)``."""
    if isinstance(node, ast.Dict):
        pairs = zip(node.keys, node.values, strict=True)
        return [v for k, v in pairs if isinstance(k, ast.Constant) and k.value == "action"]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return [k.value for k in node.keywords if k.arg == "action"]
    return []


class Actions:
    """Resolves the actions of some modules' sources to the strings they can be."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.trees = {name: ast.parse(text, name) for name, text in sources.items()}
        self.parents = {
            child: node
            for tree in self.trees.values()
            for node in ast.walk(tree)
            for child in ast.iter_child_nodes(node)
        }

    def collect(self) -> tuple[set[str], list[str]]:
        """Every action found, and where one could not be resolved."""
        found: set[str] = set()
        unresolved: list[str] = []
        for name, tree in self.trees.items():
            for value in [v for node in ast.walk(tree) for v in action_values(node)]:
                resolved = self.resolve(value)
                if resolved is None:
                    unresolved.append(f"{name}:{value.lineno}: {ast.unparse(value)}")
                found |= resolved or set()
        return found, unresolved

    def resolve(self, value: ast.expr) -> set[str] | None:
        """The strings ``value`` can be: a literal, a known dynamic action, or a parameter of
        its function given a literal at every call; ``None`` if it is none of those."""
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return {value.value}
        if isinstance(value, ast.JoinedStr) and ast.unparse(value) in DYNAMIC_ACTIONS:
            return DYNAMIC_ACTIONS[ast.unparse(value)]()
        if isinstance(value, ast.Name):
            return self.resolve_parameter(value)
        return None

    def enclosing(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.Module:
        """The function (or else the module) ``node`` is in."""
        while not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
            node = self.parents[node]
        return node

    def resolve_parameter(self, name: ast.Name) -> set[str] | None:
        node = self.enclosing(name)
        params = [a.arg for a in node.args.args] if not isinstance(node, ast.Module) else []
        if name.id not in params:
            return None
        calls = [
            n for tree in self.trees.values() for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == node.name
        ]  # fmt: skip
        values: set[str] = set()
        for call in calls:
            given = [k.value for k in call.keywords if k.arg == name.id]
            index = params.index(name.id)
            given += call.args[index : index + 1]
            resolved = self.resolve(given[0]) if given else None
            if resolved is None:
                return None
            values |= resolved
        return values or None

    def fields(self) -> dict[str, set[str]]:
        """The fields besides ``action`` that each action's records carry: the keys of the
        dict that names it, with those of a ``**`` spread of what a function returns."""
        found: dict[str, set[str]] = {}
        for tree in self.trees.values():
            for node in ast.walk(tree):
                for value in action_values(node):
                    for action in self.resolve(value) or set():
                        found.setdefault(action, set()).update(self.keys(node) - {"action"})
        return found

    def keys(self, node: ast.AST) -> set[str]:
        """The keys of the ``{...}`` or ``dict(...)`` ``node``."""
        if isinstance(node, ast.Call):  # dict(action=..., ...)
            return {str(k.arg) for k in node.keywords}
        assert isinstance(node, ast.Dict)
        keys = set()
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                keys |= self.returned_keys(self.spread_from(value))
            elif isinstance(key, ast.Constant):
                keys.add(str(key.value))
        return keys

    def spread_from(self, value: ast.expr) -> str:
        """The function whose returned dict ``**value`` spreads: called there, assigned to a
        name in the same function, or given in SPREADS."""
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            return value.func.id
        assert isinstance(value, ast.Name), f"cannot read the fields of **{ast.unparse(value)}"
        for node in ast.walk(self.enclosing(value)):
            if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == value.id:
                return self.spread_from(node.value)
        assert value.id in SPREADS, f"cannot read the fields of **{value.id}"
        return SPREADS[value.id]

    def returned_keys(self, function: str) -> set[str]:
        """The constant keys of the dict literals ``function`` returns."""
        returns = [
            node.value for tree in self.trees.values() for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef) and fn.name == function
            for node in ast.walk(fn) if isinstance(node, ast.Return)
        ]  # fmt: skip
        assert returns and all(isinstance(r, ast.Dict) for r in returns), function
        return {str(k.value) for r in returns for k in r.keys if isinstance(k, ast.Constant)}

    def levels(self) -> dict[str, set[str]]:
        """The levels each action is logged at, read from the ``log.<level>(...)`` calls."""
        found: dict[str, set[str]] = {}
        for tree in self.trees.values():
            for call in [n for n in ast.walk(tree) if is_log_call(n)]:
                assert isinstance(call.func, ast.Attribute)
                [extra] = [k.value for k in call.keywords if k.arg == "extra"]
                for action in self.actions_of(extra):
                    for level in self.level_of(call.func.attr, call.args[0], action):
                        found.setdefault(action, set()).add(level)
        return found

    def actions_of(self, extra: ast.expr) -> set[str]:
        """The actions of a log call's ``extra``: a dict, a name given one, or a call of a
        function that returns one (its action a parameter given at this call)."""
        if isinstance(extra, ast.Name):
            for node in ast.walk(self.enclosing(extra)):
                if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == extra.id:
                    return self.actions_of(node.value)
        if isinstance(extra, ast.Call) and isinstance(extra.func, ast.Name):
            [fn] = [
                n for tree in self.trees.values() for n in ast.walk(tree)
                if isinstance(n, ast.FunctionDef) and n.name == extra.func.id
            ]  # fmt: skip
            [value] = [v for n in ast.walk(fn) for v in action_values(n)]
            if isinstance(value, ast.Name):
                value = extra.args[[a.arg for a in fn.args.args].index(value.id)]
            return self.resolve(value) or set()
        return {a for v in action_values(extra) for a in self.resolve(v) or set()}

    @staticmethod
    def level_of(method: str, first: ast.expr, action: str) -> set[str]:
        """The levels of a ``log.<method>(first, ...)`` call of ``action``."""
        if method != "log":
            return {"ERROR" if method == "exception" else method.upper()}
        if isinstance(first, ast.IfExp):
            return {ast.unparse(e).removeprefix("logging.") for e in (first.body, first.orelse)}
        return {DYNAMIC_LEVELS[ast.unparse(first)](action)}


def is_log_call(node: ast.AST) -> TypeGuard[ast.Call]:
    """Whether ``node`` is a ``log.<level>(...)`` call."""
    levels = {"debug", "info", "warning", "error", "exception", "critical", "log"}
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in levels and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "log"
    )  # fmt: skip


def package_sources() -> dict[str, str]:
    """The text of every module of the package, by path."""
    paths = sorted((ROOT / "pgqueue").rglob("*.py"))
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths}


def table_rows(page: str, section: str, first: str) -> list[list[str]]:
    """The cells of the rows of the table in ``section`` of docs/``page`` whose first cell
    starts with ``first``."""
    text = (ROOT / "docs" / page).read_text().split(f"\n## {section}\n", 1)[1]
    lines = text.split("\n## ", 1)[0].splitlines()
    return [[c.strip() for c in line.split("|")[1:-1]] for line in lines if line.startswith(first)]


def test_operations_log_table_lists_every_action_the_package_logs() -> None:
    """The log table of docs/operations.md names every action a record of pgqueue carries
    (read from the source: ``extra={"action": ...}`` and the actions built at run time), and
    only those; an action the test cannot resolve fails it."""
    logged, unresolved = Actions(package_sources()).collect()
    assert unresolved == []
    rows = table_rows("operations.md", "Logs", "| `")
    documented = {action for row in rows for action in re.findall(r"`(\w+)`", row[0])}
    assert sorted(logged - documented) == []
    assert sorted(documented - logged) == []


def names_in(text: str) -> set[str]:
    """The names in backquotes in ``text``; `a, b` gives two."""
    codes = re.findall(r"`(\w+(?:, \w+)*)`", text)
    return {name for code in codes for name in code.split(", ")}


def test_operations_log_table_names_the_fields_of_each_action() -> None:
    """Each row of the log table names every field its action's records carry besides
    ``action`` (the records the paragraph above the table lists may leave theirs to it)."""
    section = (ROOT / "docs" / "operations.md").read_text().split("\n## Logs\n", 1)[1]
    intro = section.split("\n| action |", 1)[0]
    named = {}
    for row in table_rows("operations.md", "Logs", "| `"):
        for action in re.findall(r"`(\w+)`", row[0]):
            extra = names_in(intro) if f"`{action}`" in intro else set()
            named[action] = names_in(row[2]) | extra
    fields = Actions(package_sources()).fields()
    unnamed = [f"{a}: {f}" for a in fields for f in sorted(fields[a] - named.get(a, set()))]
    assert unnamed == []


def test_operations_log_table_gives_the_levels_of_each_action() -> None:
    """Each row of the log table gives the levels its action is logged at, and no other."""
    documented = {}
    for row in table_rows("operations.md", "Logs", "| `"):
        for action in re.findall(r"`(\w+)`", row[0]):
            documented[action] = set(re.findall(r"DEBUG|INFO|WARNING|ERROR|CRITICAL", row[1]))
    levels = Actions(package_sources()).levels()
    assert {a: levels[a] for a in documented} == documented


def test_actions_the_log_table_test_cannot_resolve_are_reported() -> None:
    """An action built some other way (a concatenation, a variable, a parameter given one) is
    reported by the log table's test, not skipped, and so is a ``**`` spread of fields it
    cannot read; a parameter given literals is resolved."""
    source = """
def about(job, action):
    return {"action": action, "job_id": job}
def logs(outcome, name):
    log.info("a", extra=about(1, "job_seen"))
    log.info("b", extra={"action": "job_" + outcome})
    log.info("c", extra=dict(action=name))
    log.info("d", extra={"action": f"job_{outcome}"})
def more(kind):
    log.info("e", extra={"action": kind})
more(kind=str(2))
"""
    found, unresolved = Actions({"m.py": source}).collect()
    assert found == {"job_seen"}
    assert [line.split(":")[1] for line in unresolved] == ["6", "7", "8", "10"]
    spread = 'def f(x):\n    log.info("f", extra={"action": "x", **x})\n'
    with pytest.raises(AssertionError, match=r"fields of \*\*x"):
        Actions({"s.py": spread}).fields()


def test_every_log_call_of_the_package_passes_extra() -> None:
    """Each ``log.<level>(...)`` call in pgqueue passes ``extra=`` (which carries the action the
    log table documents): no record goes out without one."""
    bare = [
        f"{name}:{node.lineno}"
        for name, text in package_sources().items()
        for node in ast.walk(ast.parse(text))
        if is_log_call(node) and not any(k.arg == "extra" for k in node.keywords)
    ]
    assert bare == []


def test_operations_metrics_table_lists_every_metric_a_worker_serves() -> None:
    """The metrics table of docs/operations.md gives each metric pgqueue/_metrics.py makes,
    under the name it is served by (a counter's with ``_total``), with its type and labels;
    and only those."""
    kinds = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}
    made = set()
    for node in ast.walk(ast.parse((ROOT / "pgqueue" / "_metrics.py").read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr in kinds:
            name = ast.literal_eval(node.args[0])
            labels = ast.literal_eval(node.args[2]) if len(node.args) > 2 else []
            kind = kinds[node.func.attr]
            served = f"{name}_total" if kind == "counter" else name
            made.add((served, kind, ", ".join(labels)))
    documented = set()
    for metric, kind, labels in table_rows("operations.md", "Metrics", "| `pgqueue_"):
        listed = "" if labels.startswith("—") else re.findall(r"`([^`]*)`", labels)[0]
        documented.add((metric.strip("`"), kind, listed))
    assert sorted(made - documented) == []
    assert sorted(documented - made) == []


# What the snippets of operations.md and periodic-tasks.md leave to the reader's project: its
# app, a connection and a job id, and functions of its own whose body does not matter.
READERS_OWN = {"app", "conn", "job_id", "post_to_webhook", "metrics", "export_rows"}


def unbound_names(block: str) -> set[str]:
    """The names ``block`` reads but neither binds nor imports (builtins aside)."""
    tree = ast.parse(block)
    bound = set(dir(builtins))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    return used - bound


def test_snippets_of_operations_and_periodic_tasks_import_what_they_use() -> None:
    """Every ```python block of docs/operations.md and docs/how-to/periodic-tasks.md imports
    or defines each name it uses, but the reader's own app, connection and functions."""
    missing = []
    for page in (ROOT / "docs" / "operations.md", ROOT / "docs" / "how-to" / "periodic-tasks.md"):
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S)):
            missing += [f"{page.name} block {i}: {n}" for n in unbound_names(block) - READERS_OWN]
    assert sorted(missing) == []
