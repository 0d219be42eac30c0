"""Two renderings of the demo's state: a rich live view for a terminal, and plain lines (each
event once, a status line when something moved) for pipes and CI."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from callscore.demo.agent import LAST_CLAIMS
from callscore.demo.state import QUEUE_ROWS, DemoEvent, DemoState
from schemas import DISPOSITIONS, PRIORITIES

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


def calls_text(calls: Counter[str]) -> str:
    """Calls by disposition, in the schema's order (those that happened)."""
    if not calls:
        return "0"
    parts = ", ".join(f"{d.replace('_', ' ')} {calls[d]:,}" for d in DISPOSITIONS if calls[d])
    return f"{sum(calls.values()):,} ({parts})"


def recycles_text(state: DemoState) -> str:
    """What the queue did with the calls that reached no decision (the scorer's counts) and the
    retries it sent (on the prospects topic)."""
    return (
        f"{state.recycled:,} calls without a decision: {state.queue_withdrawn['recycled']:,} "
        f"tasks withdrawn, {state.retries:,} retries sent"
    )


def attempts_text(state: DemoState) -> str:
    """The retry tasks the queue queued, by attempt, and those open now."""
    by_attempt = state.retry_tasks_by_attempt()
    if not by_attempt:
        return "no retry queued yet"
    return f"{by_attempt_text(by_attempt)}; {state.open_retries:,} open"


def by_attempt_text(by_attempt: Mapping[int, int]) -> str:
    """Retry tasks queued by attempt: `queued 313: 2nd call 273, 3rd 34`."""
    attempts = [f"{ordinal(a)} {n:,}" for a, n in sorted(by_attempt.items())]
    if attempts:
        attempts[0] = attempts[0].replace(" ", " call ", 1)
    return f"queued {sum(by_attempt.values()):,}" + (f": {', '.join(attempts)}" if attempts else "")


def ordinal(n: int) -> str:
    """2nd, 3rd, 4th, ... 11th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def claims_text(state: DemoState) -> str:
    c = state.claims
    return (
        f"{c.agent}: {c.granted:,} granted, {c.refused:,} refused, {c.undecided:,} undecided "
        f"({c.requests:,} requests answered, {c.skipped:,} skipped while the API's mirror read "
        "the queue)"
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
    table.add_row("calls", calls_text(state.calls))
    table.add_row("bad outcomes", _dead_text(state.outcomes_dead))
    table.add_row("callbacks", f"{state.callbacks:,} asked for")
    table.add_row("recycles", recycles_text(state))
    table.add_row("attempts", attempts_text(state))
    serving = "-" if state.serving is None else f"v{state.serving}"
    table.add_row("model serving", Text(serving, style="bold green"))
    quality = _quality_text(state, separator="\n  ") or ["waiting for outcomes"]
    table.add_row("online quality", "\n".join(quality))
    return table


def _claims_view(state: DemoState) -> RenderableType:
    """The demo's dialer agent: its counts and its last granted claims, newest first (the
    panel keeps its height while none is granted)."""
    last = Table(box=None, padding=(0, 1), collapse_padding=True, pad_edge=False)
    for column in ("agent", "prospect", "tier", "score", "lease until (UTC)"):
        last.add_column(column, no_wrap=True, justify="right" if column == "score" else "left")
    for claim in state.claims.last:
        last.add_row(
            claim.agent,
            claim.prospect_id,
            claim.priority,
            f"{claim.score:.3f}",
            f"{claim.lease_until:%H:%M:%S}",
            style=TIER_STYLE.get(claim.priority, ""),
        )
    for _ in range(LAST_CLAIMS - len(state.claims.last)):
        last.add_row("", "", "", "", "")
    return Group(Text(claims_text(state)), last)


def render(state: DemoState, header: str, warning: str | None) -> RenderableType:
    """The live view: header, call queue | stream and quality, claims, events log."""
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
        parts.append(warning_text(warning))
    claims = Panel(_claims_view(state), title="claims: an agent of an in-house dialer")
    parts += [body, claims, Panel(log, title="events")]
    return Group(*parts)


def warning_text(warning: str) -> Text:
    """The run's warnings (the broker's and the data's fallbacks), one line each."""
    return Text("\n".join(f"⚠ {line}" for line in warning.splitlines()), style="bold yellow")


def plain_status(state: DemoState) -> str:
    """One line for a log or a pipe."""
    open_by_tier = state.queue.open_by_tier()
    queue = " ".join(f"{tier} {open_by_tier[tier]}" for tier in PRIORITIES)
    withdrawn = " ".join(f"{reason} {n}" for reason, n in state.queue.withdrawals().items())
    inputs = " ".join(f"{result} {state.queue_inputs[result]}" for result, _ in INPUT_LABELS)
    serving = "-" if state.serving is None else f"v{state.serving}"
    expected = f"/{state.expected}" if state.expected is not None else ""
    quality = "; ".join(_quality_text(state)) or "no outcomes yet"
    claims = state.claims
    return (
        f"[{state.elapsed:5.1f} s] {state.phase.label}: produced {state.produced}{expected} "
        f"(+{state.retries} retries), scored {state.scored}, dead-lettered "
        f"{_dead_text(state.dead)}, {state.rate():.0f} events/s, model {serving}, queue open "
        f"{queue}, withdrawn {withdrawn}, events {inputs}, calls {calls_text(state.calls)}, "
        f"callbacks {state.callbacks}, recycled {state.recycled}, retry tasks "
        f"{len(state.retry_tasks)} ({state.open_retries} open), claims granted "
        f"{claims.granted} refused {claims.refused} undecided {claims.undecided}, {quality}"
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
    for line in (warning or "").splitlines():
        console.print(f"WARNING: {line}", highlight=False, soft_wrap=True)
    last: dict[str, Any] = {"at": 0.0, "status": None}

    def refresh(final: bool = False) -> None:
        for item in state.drain_new_events():
            console.print(plain_event(item), highlight=False, soft_wrap=True)
        now = time.monotonic()
        # A line when something moved, at most every few seconds (and always the last one).
        status = (
            state.phase, state.produced, state.handled, state.outcomes, state.serving,
            state.claims.granted,
        )  # fmt: skip
        due = now - last["at"] >= PLAIN_STATUS_SECONDS or final
        if status != last["status"] and due:
            last.update(at=now, status=status)
            console.print(plain_status(state), highlight=False, soft_wrap=True)

    try:
        yield refresh
    finally:
        refresh(final=True)
