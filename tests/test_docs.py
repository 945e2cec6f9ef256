"""The documentation under ``docs/`` stays true to the code.

Four promises, each checked against the real thing rather than a copy of it: the generated
references equal a fresh rendering of the models and the command-line app; every relative link
(and its anchor) resolves; every ``meguri …`` command a page shows names a real command with
real options; every YAML example of the spec validates with the models that read it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter
from typer._click.core import Command
from typer.core import TyperGroup

from meguri.cli._reference_doc import cli_command, render_cli_reference
from meguri.spec import ProjectSpec, load_yaml, parse_spec
from meguri.spec._reference_doc import NOTES, iter_sections, render_spec_reference

DOCS = Path(__file__).parent.parent / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
SHELL = {"bash", "sh", "shell", "console"}


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _fenced(page: Path) -> Iterator[tuple[str, str]]:
    """``(info string, body)`` of each fenced block of ``page``."""
    for match in FENCE.finditer(_text(page)):
        yield match.group(1).strip(), match.group(2)


def _prose(page: Path) -> str:
    """The page without its fenced blocks (links and inline code live here)."""
    return FENCE.sub("", _text(page))


def test_the_docs_exist() -> None:
    names = {str(p.relative_to(DOCS)) for p in PAGES}
    for name in ("index.md", "operations.md", "coming-from.md", "reference/spec.md"):
        assert name in names
    assert {f"guide/{g}.md" for g in ("spec", "data", "train", "deploy", "monitor")} <= names


# -- generated references ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "render", "module"),
    [
        ("spec.md", render_spec_reference, "meguri.spec._reference_doc"),
        ("cli.md", render_cli_reference, "meguri.cli._reference_doc"),
    ],
)
def test_generated_reference_is_current(name: str, render: Any, module: str) -> None:
    committed = _text(DOCS / "reference" / name)
    assert committed == render(), (
        f"docs/reference/{name} is out of date with the code; regenerate it: "
        f"python -m {module} > docs/reference/{name}"
    )


def test_every_spec_key_is_described() -> None:
    """Each key of the reference has a text (a field docstring, or the generator's note)."""
    rows = [line for line in _text(DOCS / "reference" / "spec.md").splitlines() if "| `" in line]
    undescribed = [row for row in rows if row.rstrip().endswith("|  |")]
    assert not undescribed, undescribed


def test_reference_notes_name_real_fields() -> None:
    classes = {cls for s in iter_sections() for cls in s.model.__mro__ if cls is not BaseModel}
    fields = {
        (cls.__name__, name)
        for cls in classes
        if isinstance(cls, type) and issubclass(cls, BaseModel)
        for name in cls.model_fields
    }
    stale = sorted(set(NOTES) - fields)
    assert not stale, f"notes in meguri.spec._reference_doc.NOTES name no field: {stale}"


# -- links --------------------------------------------------------------------------------------

LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """Explicit ``<a id>`` anchors and GitHub's slugs of the headings."""
    text = _text(page)
    found = set(re.findall(r'<a id="([^"]+)"', text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(page), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def _links() -> Iterator[tuple[Path, str]]:
    for page in PAGES:
        for _, target in LINK.findall(_prose(page)):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, mailto: are not ours
                yield page, target


def test_relative_links_resolve() -> None:
    broken = []
    for page, target in _links():
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            broken.append(f"{page.relative_to(DOCS)}: {target} (no such file)")
        elif anchor and anchor not in _anchors(file):
            broken.append(f"{page.relative_to(DOCS)}: {target} (no such anchor)")
    assert not broken, "\n".join(broken)


def test_links_are_checked_at_all() -> None:
    """The link pattern finds the links (a pattern that matched nothing would pass anything)."""
    targets = [target for _, target in _links()]
    assert "guide/spec.md" in targets and len(targets) > 100


# -- commands -----------------------------------------------------------------------------------


def _shell_commands(page: Path) -> Iterator[str]:
    """The ``meguri`` command lines of the page's shell blocks and inline code."""
    for info, body in _fenced(page):
        if info.split(" ")[0] not in SHELL:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            for part in re.split(r"&&|\|\||;|\|", line):
                if _words(part)[:1] == ["meguri"]:
                    yield part.strip()
    for _, span in re.findall(r"(`+)(.+?)\1", _prose(page)):
        if span.strip().startswith("meguri "):
            yield span.strip()


def _words(part: str) -> list[str]:
    words = shlex.split(part, comments=True)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words = words[1:]  # VAR=value meguri ...
    return words


def _problem(line: str, root: TyperGroup) -> str | None:
    """Why ``line`` is not a real command with real options (None when it is)."""
    words = _words(line)[1:]
    command: Command = root
    path = ["meguri"]
    while isinstance(command, TyperGroup) and words and not words[0].startswith("-"):
        word = words[0]
        if word in ("…", "..."):  # `meguri data …`: the group's commands in general
            return None
        if word in command.commands:
            command, words = command.commands[word], words[1:]
            path.append(word)
        elif "up" in command.commands and command.commands["up"].hidden:
            command = command.commands["up"]  # `meguri deploy MODEL` runs `deploy up`
        else:
            return f"{' '.join(path)} has no command {word!r}"
    options = {"--help"}
    for param in command.params:
        options.update(param.opts, param.secondary_opts)
    for word in words:
        if word == "--":
            break
        name = word.split("=")[0]
        if word.startswith("-") and not re.fullmatch(r"-[\d.]+", word) and name not in options:
            return f"{' '.join(path)} has no option {name}"
    return None


def test_commands_shown_are_real() -> None:
    root = cli_command()
    shown = [(page, line) for page in PAGES for line in _shell_commands(page)]
    assert len(shown) > 200  # the parsing finds them
    wrong = [
        f"{page.relative_to(DOCS)}: `{line}`: {problem}"
        for page, line in shown
        if (problem := _problem(line, root))
    ]
    assert not wrong, "\n".join(wrong)


def test_the_command_check_catches_inventions() -> None:
    root = cli_command()
    assert _problem("meguri deploy cancer@1 --env staging", root) is None
    assert _problem("meguri run --until register", root) is None
    assert _problem("meguri models promote cancer@1 --to champion", root) is None
    assert "no command 'sumbit'" in str(_problem("meguri runs sumbit", root))
    assert "no option --colour" in str(_problem("meguri runs list --colour", root))


# -- YAML examples ------------------------------------------------------------------------------

TOP_KEYS = {info.alias or name for name, info in ProjectSpec.model_fields.items()}


def _spec_examples() -> Iterator[tuple[Path, int, Any, str]]:
    """``(page, index, data, text)`` of each YAML block written in the spec's keys."""
    for page in PAGES:
        for index, (info, body) in enumerate(_fenced(page)):
            if info == "yaml":
                data = load_yaml(body)  # as meguri reads a spec (YAML 1.2 booleans)
                if isinstance(data, dict) and set(data) & TOP_KEYS:
                    yield page, index, data, body


def _unread_keys(value: Any, where: str) -> list[str]:
    """Keys an open section kept without reading them (anywhere in a validated value)."""
    if isinstance(value, BaseModel):
        found = [f"{where}.{key}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _unread_keys(getattr(value, name), f"{where}.{name}")
        return found
    if isinstance(value, (list, tuple)):
        return [k for i, item in enumerate(value) for k in _unread_keys(item, f"{where}[{i}]")]
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in _unread_keys(item, f"{where}.{key}")]
    return []


def _example_problems(data: dict[str, Any], text: str) -> list[str]:
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        return [f"top-level keys the spec does not have: {unknown}"]
    if {"version", "project"} <= set(data):
        spec = parse_spec(text, source="example")
        return _unread_keys(spec, "spec")
    problems = []
    for key, value in data.items():
        annotation = ProjectSpec.model_fields[key].annotation
        problems += _unread_keys(TypeAdapter(annotation).validate_python(value), key)
    return problems


def test_yaml_examples_validate() -> None:
    examples = list(_spec_examples())
    assert len(examples) > 15
    assert any({"version", "project"} <= set(data) for _, _, data, _ in examples)
    wrong = [
        f"{page.relative_to(DOCS)} (yaml block {index}): {problem}"
        for page, index, data, text in examples
        for problem in _example_problems(data, text)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_yaml_check_catches_mistakes() -> None:
    typo = {"monitor": {"windw": "1h"}}
    assert _example_problems(typo, "") == ["monitor.windw"]
    with pytest.raises(ValueError, match="not_a_check"):
        _example_problems({"data": {"quality": {"checks": [{"check": "not_a_check"}]}}}, "")
