"""The README and docs stay true: the CI runs the README's test command, links resolve."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pgqueue
from pgqueue._worker._worker import WorkerStats

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# Pages other branches write; the lead drops names from here as their branches merge.
PLANNED: set[str] = set()


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
    """No link in README.md or docs/ points at a missing file (planned pages excepted)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
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
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
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
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
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
