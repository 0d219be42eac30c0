"""`--set FIELD=VALUE`: a Settings field for a bench run, one parser for every bench command."""

from __future__ import annotations

import argparse

from core.settings import Settings


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """--set, repeatable; `overrides_from(args)` gives the {FIELD: VALUE} it collected."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=_item,
        metavar="FIELD=VALUE",
        help="a Settings field, e.g. --set batch_max_wait_seconds=0.01 (repeatable)",
    )


def overrides_from(args: argparse.Namespace) -> dict[str, str]:
    return dict(args.overrides)


def settings_overrides(items: list[str]) -> dict[str, str]:
    """FIELD=VALUE items, each FIELD checked against Settings (the value is Settings' to check)."""
    try:
        return dict(_item(item) for item in items)
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"--set: {exc}") from None


def _item(item: str) -> tuple[str, str]:
    field, sep, value = item.partition("=")
    if not sep or field not in Settings.model_fields:
        raise argparse.ArgumentTypeError(f"{item!r}: expected FIELD=VALUE with a Settings field")
    return field, value
