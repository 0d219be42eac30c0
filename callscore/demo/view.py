"""Two renderings of the demo's state: a rich live view for a terminal, and plain lines (each
event once, a status line when something moved) for pipes and CI."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from callscore.demo.state import QUEUE_ROWS, DemoEvent, DemoState
from schemas import PRIORITIES

# Plain rendering: a status line at most this often (and only when something moved).
PLAIN_STATUS_SECONDS = 5.0
TIER_STYLE = {"high": "bold red", "medium": "yellow", "low": "dim"}
# What the scorer's call queue made of the scored events (callscore_queue_inputs_total), shown.
INPUT_LABELS = (
    ("queued", "queued"),
    ("late", "late"),
    ("cooling_down", "cooling down"),
    ("suppressed", "suppressed"),
)


def _dead_text(dead: Counter[str]) -> str:
    if not dead:
        return "0"
    parts = ", ".join(f"{kind} {n}" for kind, n in sorted(dead.items(), key=lambda kv: -kv[1]))
    return f"{sum(dead.values())} ({parts})"


def _quality_text(state: DemoState, separator: str = ", ") -> list[str]:
    """Per version: outcomes and online AUC, then conversion by tier (after `separator`)."""
    lines = []
    for version, q in sorted(state.quality.items()):
        auc = "-" if q.roc_auc is None else f"{q.roc_auc:.3f}"
        conversion = " ".join(
            f"{tier} {q.conversion[tier]:.0%}" for tier in PRIORITIES if tier in q.conversion
        )
        lines.append(
            f"v{version}: {q.outcomes:,} outcomes, AUC {auc}{separator}conversion {conversion}"
        )
    return lines


def _queue_view(state: DemoState) -> RenderableType:
    """The best open tasks (tier by colour too), open tasks per tier, withdrawals by reason and
    what the scorer's queue made of the scored events: about 36 columns wide, so that it sits
    beside the stream panel on an 80-column terminal."""
    top = Table(box=None, padding=(0, 1), collapse_padding=True, pad_edge=False)
    # Wide enough for the replay's ids, so the panel does not change width as they change.
    top.add_column("prospect", no_wrap=True, overflow="ellipsis", min_width=18, max_width=22)
    top.add_column("tier", no_wrap=True, min_width=6)
    top.add_column("score", justify="right", no_wrap=True, min_width=5)
    tasks = state.top()
    for task in tasks:
        style = TIER_STYLE[task.priority]
        top.add_row(task.prospect_id, task.priority, f"{task.score:.3f}", style=style)
    for _ in range(QUEUE_ROWS - len(tasks)):
        top.add_row("", "", "")  # the panel keeps its height while the queue fills
    counts = Table.grid(padding=(0, 1))
    counts.add_column(style="bold")
    counts.add_column()
    counts.add_column(justify="right")
    open_by_tier = state.queue.open_by_tier()
    _group(counts, "open", [(Text(t, style=TIER_STYLE[t]), open_by_tier[t]) for t in PRIORITIES])
    _group(counts, "withdrawn", [(Text(r), n) for r, n in state.queue.withdrawals().items()])
    inputs = [(Text(label), state.queue_inputs[result]) for result, label in INPUT_LABELS]
    _group(counts, "events", inputs)
    return Group(top, Text(""), counts)


def _group(table: Table, title: str, rows: list[tuple[Text, int]]) -> None:
    """Rows of counts, the title on the first."""
    for n, (name, count) in enumerate(rows):
        table.add_row(title if n == 0 else "", name, f"{count:,}")


def _stats_table(state: DemoState) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    expected = f" / {state.expected:,}" if state.expected is not None else ""
    table.add_row("produced", f"{state.produced:,}{expected}")
    versions = ", ".join(f"v{v} {n:,}" for v, n in sorted(state.by_version.items()))
    table.add_row("scored", f"{state.scored:,}" + (f" ({versions})" if versions else ""))
    table.add_row("suppressed", f"{state.suppressed:,} (do-not-call)")
    table.add_row("dead-lettered", _dead_text(state.dead))
    table.add_row("events/s", f"{state.rate():,.0f}")
    table.add_row("outcomes", f"{state.outcomes:,}")
    table.add_row("bad outcomes", _dead_text(state.outcomes_dead))
    serving = "-" if state.serving is None else f"v{state.serving}"
    table.add_row("model serving", Text(serving, style="bold green"))
    quality = _quality_text(state, separator="\n  ") or ["waiting for outcomes"]
    table.add_row("online quality", "\n".join(quality))
    return table


def render(state: DemoState, header: str, warning: str | None) -> RenderableType:
    """The live view: header, call queue | stream and quality, events log."""
    title = Text.assemble(
        ("callscore demo  ", "bold"),
        (f"{state.elapsed:5.1f} s  ", "bold cyan"),
        (state.phase.label, "cyan"),
        (f"\n{header}", "dim"),
    )
    # The queue as wide as its rows; the counters and quality take the rest.
    body = Table.grid(expand=True, padding=(0, 1))
    body.add_column()
    body.add_column(ratio=1)
    body.add_row(
        Panel(_queue_view(state), title="call queue, best first", expand=False),
        Panel(_stats_table(state), title="stream"),
    )
    log = Text()
    for n, item in enumerate(state.events):
        log.append(("\n" if n else "") + f"{item.elapsed:6.1f} s  {item.text}", style=item.style)
    parts: list[RenderableType] = [title]
    if warning:
        parts.append(Text(f"⚠ {warning}", style="bold yellow"))
    parts += [body, Panel(log, title="events")]
    return Group(*parts)


def plain_status(state: DemoState) -> str:
    """One line for a log or a pipe."""
    open_by_tier = state.queue.open_by_tier()
    queue = " ".join(f"{tier} {open_by_tier[tier]}" for tier in PRIORITIES)
    withdrawn = " ".join(f"{reason} {n}" for reason, n in state.queue.withdrawals().items())
    inputs = " ".join(f"{result} {state.queue_inputs[result]}" for result, _ in INPUT_LABELS)
    serving = "-" if state.serving is None else f"v{state.serving}"
    expected = f"/{state.expected}" if state.expected is not None else ""
    quality = "; ".join(_quality_text(state)) or "no outcomes yet"
    return (
        f"[{state.elapsed:5.1f} s] {state.phase.label}: produced {state.produced}{expected}, "
        f"scored {state.scored}, dead-lettered {_dead_text(state.dead)}, "
        f"{state.rate():.0f} events/s, model {serving}, queue open {queue}, withdrawn "
        f"{withdrawn}, events {inputs}, {quality}"
    )


def plain_event(item: DemoEvent) -> str:
    return f"[{item.elapsed:5.1f} s] {item.text}"


@contextmanager
def screen(
    console: Console, state: DemoState, header: str, warning: str | None
) -> Iterator[Callable[[], None]]:
    """A refresh() that redraws the live view (terminal) or prints plain lines (pipes, CI)."""
    show = _live if console.is_terminal else _plain
    with show(console, state, header, warning) as refresh:
        yield refresh


@contextmanager
def _live(
    console: Console, state: DemoState, header: str, warning: str | None
) -> Iterator[Callable[[], None]]:
    from rich.live import Live

    with Live(
        render(state, header, warning),
        console=console,
        refresh_per_second=4,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:
        yield lambda: live.update(render(state, header, warning))


@contextmanager
def _plain(
    console: Console, state: DemoState, header: str, warning: str | None
) -> Iterator[Callable[[], None]]:
    console.print(f"callscore demo · {header}", highlight=False, soft_wrap=True)
    if warning:
        console.print(f"WARNING: {warning}", highlight=False, soft_wrap=True)
    last: dict[str, Any] = {"at": 0.0, "status": None}

    def refresh(final: bool = False) -> None:
        for item in state.drain_new_events():
            console.print(plain_event(item), highlight=False, soft_wrap=True)
        now = time.monotonic()
        # A line when something moved, at most every few seconds (and always the last one).
        status = (state.phase, state.produced, state.handled, state.outcomes, state.serving)
        due = now - last["at"] >= PLAIN_STATUS_SECONDS or final
        if status != last["status"] and due:
            last.update(at=now, status=status)
            console.print(plain_status(state), highlight=False, soft_wrap=True)

    try:
        yield refresh
    finally:
        refresh(final=True)
