"""The demo's summary: what the run did (written to summary.json) and its closing table.

Beside the reconciliation and the queue: the calls per disposition (the outcomes topic), the
recycles (calls without a decision, whose prospect the queue sent back as a retry), the
callbacks, the retry tasks by attempt, and what the demo's dialer agent claimed."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from callscore.demo.data import DemoData
from callscore.demo.progress import Progress
from callscore.demo.reconcile import Reconciliation
from callscore.demo.setup import Run
from callscore.demo.state import DemoState
from callscore.demo.view import by_attempt_text, calls_text, warning_text
from callscore.demo.window import ReplayWindow
from schemas import DISPOSITIONS

# The scorer's callscore_queue_inputs_total{result} the summary reports: what became of the
# scored events, then of the outcomes and do-not-call records, then of the claims.
SCORER_COUNTS = (
    "queued", "late", "cooling_down", "suppressed", "duplicate", "below_floor", "closed",
    "recycled", "stale", "do_not_call", "lifted", "claims_granted", "claims_refused",
)  # fmt: skip


def summary_of(
    run: Run,
    data: DemoData,
    window: ReplayWindow,
    state: DemoState,
    progress: Progress,
    reconciliation: Reconciliation,
    started: float,
) -> dict[str, Any]:
    """The run as summary.json holds it (and as the closing table shows it)."""
    elapsed = time.monotonic() - started
    report_page = run.out / "quality" / "report.html"
    card_page = run.out / "model-card" / "report.html"
    calls = reconciliation.calls
    claims = state.claims
    return {
        "elapsed_seconds": round(elapsed, 1),
        "phase_seconds": phase_seconds(progress, started, elapsed),
        "broker": run.broker_label,
        "data": data.source,
        "synthetic": data.synthetic,
        "replay": {"from": window.first, "to": window.last, "speedup": window.speedup},
        "reconciliation": reconciliation.as_dict(),
        "queue": {
            "open": reconciliation.queue_open,
            "withdrawals": reconciliation.queue_withdrawals,
            "scorer": {result: state.queue_inputs[result] for result in SCORER_COUNTS},
            "scorer_withdrawals": dict(state.queue_withdrawn),
        },
        "calls": {
            "total": sum(calls.values()),
            "by_disposition": {d: calls[d] for d in DISPOSITIONS if calls[d]},
            "callbacks": calls["callback"],
        },
        "recycles": {
            "recycled": state.recycled,  # the scorer's count
            "withdrawn_recycled": reconciliation.queue_withdrawals.get("recycled", 0),
            "retries": reconciliation.retries,
            "retry_tasks": reconciliation.as_dict()["retry_tasks"],
        },
        "claims": {
            "agent": claims.agent,
            "requests": claims.requests,
            "granted": claims.granted,
            "refused": claims.refused,
            "undecided": claims.undecided,
            "skipped": claims.skipped,
            "unanswered": claims.unanswered,
            "last": [
                {
                    "agent": c.agent,
                    "prospect_id": c.prospect_id,
                    "priority": c.priority,
                    "score": c.score,
                    "lease_until": c.lease_until.isoformat(timespec="seconds"),
                }
                for c in claims.last
            ],
            "queue": {
                "granted": state.queue_inputs["claims_granted"],
                "refused": state.queue_inputs["claims_refused"],
            },
        },
        "model_versions_scoring": {str(v): n for v, n in sorted(state.by_version.items())},
        "published": progress.published,
        "hot_reloads": progress.reloads,
        "online_quality": {
            str(v): {"outcomes": q.outcomes, "roc_auc": q.roc_auc, "conversion": q.conversion}
            for v, q in state.quality.items()
        },
        "model_card": str(card_page) if card_page.is_file() else None,
        "quality_report": str(report_page) if report_page.is_file() else None,
        "logs": str(run.logs),
    }


def phase_seconds(progress: Progress, started: float, elapsed: float) -> dict[str, float]:
    """Wall time of start-up and training, the replay (to its last event handled), the end."""
    assert progress.replay_started is not None and progress.drained is not None
    return {
        "start_and_training": round(progress.replay_started - started, 1),
        "replay": round(progress.drained - progress.replay_started, 1),
        "finishing": round(started + elapsed - progress.drained, 1),
    }


def render_summary(
    summary: dict[str, Any], result: Reconciliation, warning: str | None
) -> RenderableType:
    title = f"callscore demo: done in {summary['elapsed_seconds']:.1f} s"
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in _rows(summary, result):
        table.add_row(name, value)
    parts: list[RenderableType] = [table]
    if warning:
        parts.append(warning_text(warning))
    return Group(*parts)


def _rows(summary: dict[str, Any], result: Reconciliation) -> list[tuple[str, str | Text]]:
    phases = summary["phase_seconds"]
    replay = summary["replay"]
    versions = _counts({f"v{k}": v for k, v in summary["model_versions_scoring"].items()})
    return [
        (
            "time",
            f"{summary['elapsed_seconds']:.1f} s: start-up and training "
            f"{phases['start_and_training']} s, replay {phases['replay']} s, report and shutdown "
            f"{phases['finishing']} s",
        ),
        ("broker", summary["broker"]),
        ("data", summary["data"]),
        ("replay", f"{replay['from']} to {replay['to']} at x{replay['speedup']:,.0f}"),
        (
            "produced",
            f"{result.produced:,} prospect events: {result.replayed:,} replayed, "
            f"{result.produced - result.replayed:,} retries the call queue sent",
        ),
        (
            "scored",
            f"{result.scored:,}: {result.logged:,} on the prediction log (by model {versions}), "
            f"{result.suppressed:,} suppressed (do-not-call: no log line)",
        ),
        ("call tasks", f"{result.queued:,} ({_counts(dict(result.tiers))})"),
        ("dead-lettered", f"{result.dead_lettered:,} ({_counts(dict(result.dead_by_kind))})"),
        ("check", _check(result)),
        ("call queue", _queue_text(summary["queue"])),
        ("queue inputs", _inputs_text(summary["queue"]["scorer"], result)),
        ("calls", calls_text(result.calls)),
        ("callbacks", f"{result.calls['callback']:,} asked for (each a retry due at that time)"),
        ("recycles", _recycles_text(summary["recycles"])),
        ("claims", _claims_text(summary["claims"])),
        ("models published", "\n".join(summary["published"]) or "-"),
        ("hot reloads", "\n".join(summary["hot_reloads"]) or "none seen"),
        ("online quality", "\n".join(_quality_lines(summary)) or "-"),
        ("model card", summary["model_card"] or "missing (see logs)"),
        ("quality report", summary["quality_report"] or "missing (see logs)"),
        ("logs", summary["logs"]),
    ]


def _check(result: Reconciliation) -> Text:
    verdict = (
        Text("reconciles ✓", style="bold green")
        if result.reconciles
        else Text("DOES NOT RECONCILE ✗", style="bold red")
    )
    check = Text(
        f"produced {result.produced:,} = scored {result.scored:,} (logged {result.logged:,} + "
        f"suppressed {result.suppressed:,}) + dead-lettered {result.dead_lettered:,} + "
        f"duplicates {result.duplicates:,}: "
    )
    check.append(verdict)
    if result.unknown_scored or result.unknown_tasks or result.unknown_dead_letters:
        check.append(
            f" ({result.unknown_scored} scorings, {result.unknown_tasks} tasks and "
            f"{result.unknown_dead_letters} dead letters match no prospect record)"
        )
    return check


def _queue_text(queue: dict[str, Any]) -> str:
    open_tasks = ", ".join(f"{tier} {n:,}" for tier, n in queue["open"].items())
    withdrawn = ", ".join(f"{reason} {n:,}" for reason, n in queue["withdrawals"].items())
    return f"open: {open_tasks}\nwithdrawn: {withdrawn}"


def _inputs_text(scorer: dict[str, int], result: Reconciliation) -> str:
    """The scorer's counts (its /metrics), the suppressed ones beside the topics' number."""
    events = ", ".join(
        f"{name.replace('_', ' ')} {scorer[name]:,}"
        for name in ("queued", "late", "cooling_down", "suppressed", "duplicate", "below_floor")
    )
    others = ", ".join(
        f"{name.replace('_', '-')} {scorer[name]:,}"
        for name in ("closed", "recycled", "stale", "do_not_call", "lifted")
    )
    same = "=" if scorer["suppressed"] == result.suppressed else "≠"
    return (
        f"events: {events} (suppressed {same} {result.suppressed:,} on the topics)\n"
        f"outcomes and do-not-call records: {others}"
    )


def _recycles_text(recycles: dict[str, Any]) -> str:
    by_attempt = {int(attempt): n for attempt, n in recycles["retry_tasks"].items()}
    return (
        f"{recycles['recycled']:,} calls without a decision sent their prospect back (the "
        f"scorer's count): {recycles['withdrawn_recycled']:,} tasks withdrawn as recycled, "
        f"{recycles['retries']:,} retries on the prospects topic\n"
        f"retry tasks {by_attempt_text(by_attempt)}"
    )


def _claims_text(claims: dict[str, Any]) -> str:
    queue = claims["queue"]
    lines = [
        f"{claims['agent']}: {claims['granted']:,} granted, {claims['refused']:,} refused, "
        f"{claims['undecided']:,} undecided ({claims['requests']:,} requests answered, "
        f"{claims['skipped']:,} skipped while the API's mirror read the queue, "
        f"{claims['unanswered']:,} unanswered); the queue's decisions: granted "
        f"{queue['granted']:,}, refused {queue['refused']:,}"
    ]
    lines += [
        f"{c['agent']} holds {c['prospect_id']} ({c['priority']}, {c['score']:.3f}) until "
        f"{c['lease_until']} at most"
        for c in claims["last"]
    ]
    return "\n".join(lines)


def _quality_lines(summary: dict[str, Any]) -> list[str]:
    return [
        f"v{v}: {q['outcomes']:,} outcomes, online AUC "
        + ("-" if q["roc_auc"] is None else f"{q['roc_auc']:.3f}")
        for v, q in sorted(summary["online_quality"].items())
    ]


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))
