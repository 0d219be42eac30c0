"""The docs say what main does: every `callscore` command and flag they name is in the CLI's
parser, every repository path they name exists, every CALLSCORE_* variable is a Settings field,
no path of one particular machine, the README's commands table lists every subcommand, and every
quoted figure marked `<!-- figure: FILE#PATH -->` equals its source file's value.

The checkers are plain functions of a document's text, so the tests at the end show each one
failing on a doc with a renamed flag, a removed file, an unknown variable or a changed figure.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callscore.cli import build_parser
from core.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]

# Paths a doc may name that are not in the repository, each with its reason. A named path is
# accepted when it starts with one of these.
NOT_IN_REPOSITORY = {
    "out/": "written at run time (the demo, `callscore export`, `callscore train --out out/...`)",
    "../shared/data/": "the UCI data beside the checkout, never committed",
    "secrets/": "made by the user for Docker Compose, git-ignored",
    "keys/": "made by `callscore keys generate --out keys`",
    "new-keys": "made by `callscore keys generate --out new-keys` in the rotation runbook",
    "bench/results/": "written by the bench and its tools; the committed ones are checked as "
    "figure sources",
    "clients/node/node_modules": "npm install",
    "streamer-data/": "a scorer's Faust data folder (CALLSCORE_STREAMER_DATA_DIR)",
    "artifacts/": "CALLSCORE_ARTIFACT_DIR, written by the publisher",
    "term-deposit/": "a model-topic key (model name/version), not a path",
    "lost/twice": "a column of the bench's tables",
}
# A code span is a path when it has a folder (`docs/model-card.md`, `callqueue/`) or is a bare
# source file (`test_docs.py`); other bare names (`metrics.json`, `report.html`) are files a
# command writes into a folder it is given.
SOURCE_SUFFIXES = (".py", ".md", ".yml", ".yaml", ".toml")
# Absolute paths of one machine (a checkout, a home, a temporary folder of one run).
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|root|Users|tmp)/[\w.~/-]*")

_FENCE = re.compile(r"^```[^\n]*\n(?P<code>.*?)^```", re.S | re.M)
_SPAN = re.compile(r"(?<!`)`(?P<code>[^`\n]+(?:\n[^`\n]+)?)`(?!`)")
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
_COMMAND = re.compile(r"(?<![\w/.$-])callscore(?=[ \t]+[\w-])(?P<rest>[^\n#&;|`]*)")
_VARIABLE = re.compile(rf"{ENV_PREFIX}[A-Z0-9_]*")
_FIGURE = re.compile(
    r"<!-- figure: (?P<source>[^#\s]+)#(?P<path>\S+) -->\s*"
    r"(?P<shown>[-+]?\d(?:[\d,]*\d)?(?:\.\d+)?)"  # 1,165 / 0.611 / 863 (not a trailing comma)
)


# --- what a document names --------------------------------------------------------------------


def code_texts(text: str) -> Iterator[str]:
    """The fenced blocks, then the inline code spans outside them."""
    for match in _FENCE.finditer(text):
        yield match["code"]
    for match in _SPAN.finditer(_FENCE.sub("", text)):
        yield match["code"]


def commands_named(text: str) -> Iterator[list[str]]:
    """Each `callscore ...` written in code, as its words (option values and brackets kept)."""
    for code in code_texts(text):
        for match in _COMMAND.finditer(code.replace("\\\n", " ")):
            words = match["rest"].replace("\\|", "|").split()
            yield [w for word in words for w in re.split(r"[\[\]()|]", word) if w]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_errors(text: str, parser: argparse.ArgumentParser) -> list[str]:
    """Every `callscore` command and `--flag` written that the parser does not have."""
    errors = []
    for words in commands_named(text):
        current, path = parser, ["callscore"]
        for word in words:
            children = _subparsers(current)
            if word not in children:
                break
            current = children[word]
            path.append(word)
        if _subparsers(current) and len(words) >= len(path):
            unknown = words[len(path) - 1]
            if re.fullmatch(r"[a-z][a-z-]*", unknown):
                errors.append(f"`{' '.join(path)} {unknown}`: no such command")
                continue
        options = {o for action in current._actions for o in action.option_strings}
        for word in words:
            flag = re.match(r"--[a-z][\w-]*", word)
            if flag and flag[0] not in options:
                errors.append(f"`{' '.join(path)} {flag[0]}`: no such option")
    return errors


def paths_named(text: str) -> Iterator[str]:
    """Relative paths in code spans (with a folder, or a bare source file) and in links."""
    for code in code_texts(text):
        span = code.split("::")[0].rstrip(".,:;").removeprefix("./")
        if not re.fullmatch(r"[\w.+-][\w./+-]*", span) or "://" in span:
            continue  # words, commands, routes (/score), home (~/...), URLs, placeholders (<name>)
        if ("/" in span and not span.startswith("application/")) or span.endswith(SOURCE_SUFFIXES):
            yield span
    for match in _LINK.finditer(text):
        target = match["target"].split("#")[0]
        if target and not re.match(r"[a-z][a-z0-9+.-]*:", target):
            yield target


def path_errors(text: str, document: Path, root: Path = ROOT) -> list[str]:
    """Named paths that exist neither from the repository's root nor from the doc's folder (a
    bare `test_*.py`: in tests/)."""
    errors = []
    for path in paths_named(text):
        if path.startswith(tuple(NOT_IN_REPOSITORY)):
            continue
        folders = [root, document.parent] + ([root / "tests"] if path.startswith("test_") else [])
        if not any((folder / path).exists() for folder in folders):
            errors.append(f"`{path}`: no such file or folder")
    return errors


SETTINGS_VARIABLES = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}


def variable_errors(text: str, variables: set[str] = SETTINGS_VARIABLES) -> list[str]:
    """CALLSCORE_* names that are no Settings field (`CALLSCORE_TOPIC_*`: a prefix of some)."""
    errors = []
    for name in sorted(set(_VARIABLE.findall(text))):
        known = name in variables
        if name.endswith("_"):  # CALLSCORE_TOPIC_*, CALLSCORE_RETRY_AFTER_<DISPOSITION>_HOURS
            known = any(v.startswith(name) for v in variables)
        if not known:
            errors.append(f"`{name}` is not a field of core.settings.Settings")
    return errors


def machine_path_errors(text: str) -> list[str]:
    return [f"machine path {m[0]!r}" for m in MACHINE_PATH.finditer(text)]


def _value_at(data: Any, path: str) -> Any:
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        data = data[int(part[1:-1])] if part.startswith("[") else data[part]
    return data


def shown_like(value: float, shown: str) -> str:
    """The source's value written as the doc writes it: its decimals, its thousands commas."""
    decimals = len(shown.partition(".")[2])
    text = f"{value:,.{decimals}f}" if "," in shown else f"{value:.{decimals}f}"
    return text if not shown.startswith("+") or text.startswith("-") else "+" + text


def figure_errors(text: str, root: Path = ROOT) -> list[str]:
    """Each `<!-- figure: FILE#PATH -->NUMBER` whose NUMBER is not FILE's value at PATH."""
    errors = []
    for match in _FIGURE.finditer(text):
        source, path, shown = match["source"], match["path"], match["shown"]
        try:
            value = _value_at(json.loads((root / source).read_text()), path)
        except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
            errors.append(f"{source}#{path}: unreadable ({exc!r})")
            continue
        if shown_like(float(value), shown) != shown:
            errors.append(f"{shown} != {source}#{path} = {value}")
    return errors


def figures_marked(text: str) -> list[str]:
    return [m["shown"] for m in _FIGURE.finditer(text)]


def command_table_errors(readme: str, parser: argparse.ArgumentParser) -> list[str]:
    """Every leaf subcommand of the parser in the first column of the README's commands table."""
    section = readme.partition("\n## Commands\n")[2].partition("\n## ")[0]
    listed = set()
    for row in section.splitlines():
        if row.startswith("| `callscore"):
            first_cell = row.split(" | ")[0]
            for words in commands_named(first_cell):
                listed.add(" ".join(w for w in words if re.fullmatch(r"[a-z][a-z-]*", w)))

    def leaves(p: argparse.ArgumentParser, prefix: str) -> Iterator[str]:
        children = _subparsers(p)
        if not children:
            yield prefix
        for name, child in children.items():
            yield from leaves(child, f"{prefix} {name}".strip())

    return [
        f"`callscore {leaf}` is not in the README's commands table"
        for leaf in leaves(parser, "")
        if not any(entry == leaf or entry.startswith(f"{leaf} ") for entry in listed)
    ]


# --- the repository's docs ---------------------------------------------------------------------


def _read(document: Path) -> str:
    return document.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


_IDS = [str(d.relative_to(ROOT)) for d in DOCUMENTS]


@pytest.mark.parametrize("document", DOCUMENTS, ids=_IDS)
def test_every_command_and_flag_a_doc_names_exists(document, parser):
    assert not command_errors(_read(document), parser), document.relative_to(ROOT)


@pytest.mark.parametrize("document", DOCUMENTS, ids=_IDS)
def test_every_path_a_doc_names_exists(document):
    assert not path_errors(_read(document), document), document.relative_to(ROOT)


@pytest.mark.parametrize("document", DOCUMENTS, ids=_IDS)
def test_every_variable_a_doc_names_is_a_setting(document):
    assert not variable_errors(_read(document)), document.relative_to(ROOT)


@pytest.mark.parametrize("document", DOCUMENTS, ids=_IDS)
def test_no_doc_names_a_path_of_one_machine(document):
    assert not machine_path_errors(_read(document)), document.relative_to(ROOT)


@pytest.mark.parametrize("document", DOCUMENTS, ids=_IDS)
def test_every_marked_figure_equals_its_source(document):
    assert not figure_errors(_read(document)), document.relative_to(ROOT)


def test_the_readme_commands_table_lists_every_subcommand(parser):
    assert not command_table_errors(_read(README), parser)


def test_the_headline_figures_are_marked_with_their_source():
    """The README's and the design answers' measured figures come from a file each."""
    for document in (README, ROOT / "docs" / "design-answers.md"):
        assert len(figures_marked(_read(document))) >= 5, document.relative_to(ROOT)


def test_the_checkers_see_what_the_docs_name(parser):
    """Guards against a checker that finds nothing: it must find what the README names."""
    readme = _read(README)
    commands = [" ".join(words[:2]) for words in commands_named(readme)]
    assert "stream" in " ".join(commands) and "demo --help" in commands
    assert {"docs/architecture.md", "core/settings.py"} <= set(paths_named(readme))
    assert "CALLSCORE_API_TOKEN" in _VARIABLE.findall(readme)


# --- the checkers fail on a doc that lies ------------------------------------------------------

DOC = """\
Run `callscore train --search reference --out out/v1` (see [the card](docs/model-card.md)),
then `callscore queue top --tier high`; the settings are in `core/settings.py`:

```bash
CALLSCORE_BATCH_MAX_SIZE=200 callscore stream -l info &
callscore export --date 2026-12-01 \\
  --format csv
```

The scorer with the call queue drained
<!-- figure: bench/results/quick-kafka.json#scenarios.scorer_production.events_per_s -->863
events/s.
"""


def test_a_true_doc_passes(parser):
    assert command_errors(DOC, parser) == []
    assert path_errors(DOC, README) == []
    assert variable_errors(DOC) == []
    assert machine_path_errors(DOC) == []
    assert figure_errors(DOC) == []


def test_a_renamed_flag_fails(parser):
    doc = DOC.replace("--tier high", "--priority high").replace("--format csv", "--as csv")
    assert command_errors(doc, parser) == [
        "`callscore export --as`: no such option",  # in the fenced block
        "`callscore queue top --priority`: no such option",
    ]


def test_an_unknown_command_fails(parser):
    assert command_errors("`callscore queue peek --limit 3`", parser) == [
        "`callscore queue peek`: no such command"
    ]


def test_a_removed_file_fails():
    doc = DOC.replace("core/settings.py", "core/config.py").replace(
        "docs/model-card.md", "docs/model.md"
    )
    assert path_errors(doc, README) == [
        "`core/config.py`: no such file or folder",
        "`docs/model.md`: no such file or folder",
    ]


def test_an_unknown_variable_fails():
    assert variable_errors(DOC.replace("BATCH_MAX_SIZE", "BATCH_SIZE")) == [
        "`CALLSCORE_BATCH_SIZE` is not a field of core.settings.Settings"
    ]


def test_a_machine_path_fails():
    doc = DOC.replace("out/v1", "/tmp/v1") + "\n`/work/main/.venv/bin/python -m bench`\n"
    assert machine_path_errors(doc) == [
        "machine path '/tmp/v1'",
        "machine path '/work/main/.venv/bin/python'",
    ]


def test_a_figure_that_disagrees_with_its_source_fails():
    assert figure_errors(DOC.replace("-->863", "-->4,058")) == [
        "4,058 != bench/results/quick-kafka.json#scenarios.scorer_production.events_per_s = 863"
    ]
    assert figure_errors(DOC.replace("quick-kafka.json", "quick-kafka-2.json"))[0].startswith(
        "bench/results/quick-kafka-2.json#scenarios.scorer_production.events_per_s: unreadable"
    )


def test_a_missing_command_in_the_table_fails(parser):
    readme = _read(README)
    row = next(r for r in readme.splitlines() if r.startswith("| `callscore queue top"))
    assert command_table_errors(readme.replace(row + "\n", ""), parser) == [
        "`callscore queue top` is not in the README's commands table"
    ]
