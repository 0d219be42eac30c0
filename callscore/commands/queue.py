"""`callscore queue top`: the best open call tasks, read from the call-queue topic to its end."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from schemas import PRIORITIES
from schemas.api import QUEUE_LIMIT_DEFAULT, QUEUE_LIMIT_MAX

if TYPE_CHECKING:
    from callqueue.view import QueueTop

# A queue of 1,000,000 open tasks takes about 15 s to read and parse; an absent broker fails in
# seconds anyway (the reader's metadata request).
READ_TIMEOUT_SECONDS = 120.0
# Wide enough for a task id, a timestamp and the task id it supersedes on one line each.
PIPED_WIDTH = 200


def _limit(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= value <= QUEUE_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"an integer from 1 to {QUEUE_LIMIT_MAX}, not {text!r}")
    return value


def _cmd_top(args: argparse.Namespace) -> int:
    from callqueue.view import QueueView
    from core.settings import load_settings
    from core.topic_reader import TopicReader

    settings = load_settings()
    view = QueueView()
    with TopicReader(settings, [settings.topic_queue], "callscore-queue-top") as reader:
        for record in reader.read_to_end(READ_TIMEOUT_SECONDS):
            view.apply(record.key, record.value, record.headers)
    print_top(view.top(args.limit, args.tier), settings.topic_queue, args.tier)
    return 0


def print_top(top: QueueTop, topic: str, tier: str | None) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    which = f"{tier} tier" if tier else "all tiers"
    table = Table(title=f"Best {len(top.tasks)} open tasks on {topic} ({which}, by score)")
    for column in ("task_id", "prospect", "tier", "score", "expires_at", "supersedes"):
        table.add_column(column, no_wrap=True, justify="right" if column == "score" else "left")
    for task in top.tasks:
        expires = task.expires_at.isoformat() if task.expires_at else "-"
        table.add_row(
            task.task_id,
            task.prospect_id,
            task.priority,
            f"{task.score:.4f}",
            expires,
            task.supersedes or "-",
        )
    console.print(table)
    counts = ", ".join(f"{t} {top.open_by_tier[t]}" for t in PRIORITIES)
    console.print(f"open tasks: {top.open_total} ({counts})")
    withdrawn = ", ".join(f"{reason} {n}" for reason, n in top.withdrawals.items())
    console.print(f"withdrawn: {withdrawn}")
    if top.unreadable:
        console.print(f"records that are not call tasks for their key (ignored): {top.unreadable}")


def register(subparsers: argparse._SubParsersAction) -> None:
    queue = subparsers.add_parser("queue", help="the live call queue (the call-queue topic)")
    actions = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    top = actions.add_parser(
        "top",
        help="print the best open call tasks by score, the open tasks per tier and the "
        "withdrawals by reason",
        description="Reads the compacted call-queue topic (CALLSCORE_TOPIC_QUEUE) from its "
        "beginning to its end, every partition, and keeps the newest record per prospect: its "
        "open task, or none after a tombstone. What a dialer mirroring the topic sees now.",
    )
    top.add_argument("--tier", choices=PRIORITIES, help="only this tier (default: every tier)")
    top.add_argument(
        "--limit",
        type=_limit,
        default=QUEUE_LIMIT_DEFAULT,
        help=f"at most this many tasks, 1 to {QUEUE_LIMIT_MAX} (default {QUEUE_LIMIT_DEFAULT})",
    )
    top.set_defaults(handler=_cmd_top)
