"""The README's configuration table, generated from `core.settings.Settings`.

One row per field: its CALLSCORE_* variable, its default and its description. Secrets show
"(secret)", never a value, and a path under the home folder is written with `~`, so the table
is the same on every machine. `callscore schemas settings-table --readme README.md` rewrites the
block between START and END; a test fails when the committed block is stale.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from core.errors import CallscoreError
from core.settings import ENV_PREFIX, Settings

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
REGENERATE = "callscore schemas settings-table --readme README.md"

UNSET = "—"
SECRET = "— (secret)"
DAY_SECONDS = 86_400


def _union_args(annotation: Any) -> tuple[Any, ...]:
    """The members of `X | Y` / Optional[X], or (annotation,) for a plain type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _is_secret(field: FieldInfo) -> bool:
    return SecretStr in _union_args(field.annotation)


def _choices(field: FieldInfo) -> tuple[str, ...]:
    """The allowed values of a Literal field (also inside Optional), else ()."""
    for member in _union_args(field.annotation):
        if typing.get_origin(member) is Literal:
            return tuple(str(value) for value in typing.get_args(member))
    return ()


def _duration(name: str, value: object) -> str:
    """' (14 days)' after a seconds setting of whole days, so nobody has to divide."""
    if name.endswith("_seconds") and isinstance(value, int | float) and value >= DAY_SECONDS:
        days = value / DAY_SECONDS
        if days.is_integer():
            return f" ({int(days)} days)"
    return ""


def format_default(name: str, field: FieldInfo) -> str:
    if _is_secret(field):
        return SECRET
    value = field.get_default(call_default_factory=True)
    if value is None:
        return UNSET
    if isinstance(value, Path):
        home = Path.home()
        text = f"~/{value.relative_to(home)}" if value.is_relative_to(home) else str(value)
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return f"`{text}`{_duration(name, value)}"


def meaning(field: FieldInfo) -> str:
    text = (field.description or "").replace("|", "\\|").replace("\n", " ")
    choices = _choices(field)
    if choices:
        text += " One of " + ", ".join(f"`{choice}`" for choice in choices) + "."
    return text.strip()


def settings_rows() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) per Settings field, in declaration order."""
    return [
        (f"`{ENV_PREFIX}{name.upper()}`", format_default(name, field), meaning(field))
        for name, field in Settings.model_fields.items()
    ]


def render_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| {variable} | {default} | {text} |" for variable, default, text in settings_rows()]
    return "\n".join(lines) + "\n"


def replace_block(document: str, table: str) -> str:
    """The document with the text between START and END replaced by the table."""
    head, start, rest = document.partition(START)
    _old, end, tail = rest.partition(END)
    if not start or not end:
        raise CallscoreError(
            f"no settings table markers in the document: add a line {START!r} and a line "
            f"{END!r} where the table goes"
        )
    return f"{head}{START}\n{table}{END}{tail}"


def current_block(document: str) -> str | None:
    """The table now between the markers, or None without them."""
    _head, start, rest = document.partition(START)
    block, end, _tail = rest.partition(END)
    return block.removeprefix("\n") if start and end else None


def write_table(readme: Path | None) -> str:
    """Rewrite the block in `readme` (or just return the table when None)."""
    table = render_table()
    if readme is not None:
        try:
            document = readme.read_text(encoding="utf-8")
        except OSError as exc:
            raise CallscoreError(f"cannot read {readme}: {exc.strerror}") from None
        readme.write_text(replace_block(document, table), encoding="utf-8")
    return table
