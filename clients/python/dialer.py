#!/usr/bin/env python3
"""A reference dialer, as a third party writes one: claim calls from `callscore api`, "call"
them (simulated), report each call's outcome on Kafka with its disposition.

    python clients/python/dialer.py [--agent NAME] [--batch N] [--calls N] [--seconds S] ...

Loop: `POST /queue/claim {"agent", "n", "tier"}` (bearer token CALLSCORE_API_TOKEN if set; a 503
is retried after its Retry-After), then for every claimed task, best first: a simulated call
whose disposition is drawn by the `--dispositions` shares (`--answer-rate` sets the share of
`reached`), a reached prospect subscribing with probability = the task's score, a callback
asked for `--callback-hours` later; the CallOutcome goes to the outcomes topic keyed by
prospect_id, and the call counts only once the broker has acknowledged it. It stops after
`--calls` calls, after `--seconds` seconds, or when `--idle-exit` claims in a row came back
empty. One line per call, then one JSON line: calls per disposition, claims, refused, ...

The draws are a function of the seed and the call's number only (the first 48 bits of
sha256("<seed>:<call>:<what>") over 2**48), so the same seed and shares give the same
dispositions in this client and in clients/node/dialer.js.

Configuration: the product's variables and defaults (CALLSCORE_BOOTSTRAP_SERVERS,
CALLSCORE_TOPIC_OUTCOMES, CALLSCORE_API_PORT for the default `--api http://localhost:PORT`,
CALLSCORE_API_TOKEN, CALLSCORE_SECURITY_PROTOCOL, CALLSCORE_SASL_MECHANISM,
CALLSCORE_SASL_USERNAME, CALLSCORE_SASL_PASSWORD, CALLSCORE_SSL_CA_FILE).

Needs only the standard library and confluent-kafka, none of the product's packages. Exit 0
when it stopped as asked, 1 on an error (one line on stderr: the API unreachable or refusing the
token, the broker unreachable, an outcome not acknowledged), 2 on a usage error, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

# The CallOutcome contract's dispositions (schemas/json/call_outcome.schema.json), in its order.
DISPOSITIONS = (
    "reached",
    "no_answer",
    "busy",
    "voicemail",
    "callback",
    "wrong_number",
    "do_not_call",
)
DEFAULT_SHARES = (
    "reached=35,no_answer=30,busy=10,voicemail=12,callback=5,wrong_number=5,do_not_call=3"
)
TIERS = ("high", "medium", "low")
CLAIM_MAX = 100  # the API's most tasks per claim (schemas/api.py)
DURATION_MIN, DURATION_MAX = 30, 600  # a reached call's simulated length, seconds
NOTES = "simulated call (clients/python/dialer.py)"


class DialerError(Exception):
    """Ends the run: printed as one line, exit 1."""


# --- the simulated calls: pure functions, the same as in clients/node/dialer.js -----------------
def uniform(seed: int, call: int, what: str) -> float:
    """A draw in [0, 1) for call number `call` (1, 2, ...): 48 bits of a hash, exact in a double."""
    digest = hashlib.sha256(f"{seed}:{call}:{what}".encode()).digest()
    return int.from_bytes(digest[:6], "big") / 2**48


def parse_shares(spec: str) -> dict[str, float]:
    """`reached=35,no_answer=30,...` -> each disposition's share (missing ones: 0), summing to 1."""
    weights = dict.fromkeys(DISPOSITIONS, 0.0)
    for part in spec.split(","):
        name, sep, value = part.strip().partition("=")
        if name not in weights or not sep:
            raise ValueError(
                f"{part.strip()!r}: expected DISPOSITION=WEIGHT, one of {DISPOSITIONS}"
            )
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{part.strip()!r}: the weight is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{part.strip()!r}: a weight is a finite number >= 0")
        weights[name] = weight
    total = sum(weights[d] for d in DISPOSITIONS)
    if total <= 0:
        raise ValueError("at least one weight must be > 0")
    return {d: weights[d] / total for d in DISPOSITIONS}


def with_answer_rate(shares: Mapping[str, float], rate: float) -> dict[str, float]:
    """`reached` gets `rate`; the other dispositions share the rest in their proportions."""
    if not 0 <= rate <= 1:
        raise ValueError("--answer-rate is a share between 0 and 1")
    others = sum(shares[d] for d in DISPOSITIONS if d != "reached")
    if others <= 0 and rate < 1:
        raise ValueError("--answer-rate below 1 needs a share > 0 for another disposition")
    return {
        d: rate if d == "reached" else (shares[d] * (1 - rate) / others if others > 0 else 0.0)
        for d in DISPOSITIONS
    }


def pick(shares: Mapping[str, float], u: float) -> str:
    """The disposition whose cumulative share first exceeds u."""
    cumulative = 0.0
    for disposition in DISPOSITIONS:
        cumulative += shares[disposition]
        if u < cumulative and shares[disposition] > 0:
            return disposition
    return [d for d in DISPOSITIONS if shares[d] > 0][-1]  # u within rounding of 1


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def outcome_for(
    task: Mapping[str, Any],
    call: int,
    seed: int,
    shares: Mapping[str, float],
    called_at: datetime,
    callback_hours: float,
) -> dict[str, Any]:
    """The CallOutcome of the simulated call number `call` of this run, for `task`."""
    disposition = pick(shares, uniform(seed, call, "disposition"))
    outcome: dict[str, Any] = {
        "task_id": task["task_id"],
        "event_id": task["event_id"],
        "prospect_id": task["prospect_id"],
        "called_at": iso(called_at),
        "disposition": disposition,
    }
    if disposition == "reached":
        outcome["subscribed"] = uniform(seed, call, "subscribed") < float(task["score"])
        span = DURATION_MAX - DURATION_MIN + 1
        outcome["duration_seconds"] = DURATION_MIN + math.floor(
            uniform(seed, call, "duration") * span
        )
    elif disposition == "callback":
        outcome["callback_at"] = iso(called_at + timedelta(hours=callback_hours))
    outcome["notes"] = NOTES
    return outcome


def call_line(call: int, task: Mapping[str, Any], outcome: Mapping[str, Any]) -> str:
    parts = [
        f"call {call}",
        f"task={task['task_id']}",
        f"prospect={task['prospect_id']}",
        f"tier={task.get('priority')}",
        f"score={float(task['score']):.4f}",
        f"attempt={task.get('attempt')}",
        f"disposition={outcome['disposition']}",
    ]
    if "subscribed" in outcome:
        parts.append(f"subscribed={'true' if outcome['subscribed'] else 'false'}")
        parts.append(f"duration_seconds={outcome['duration_seconds']}")
    if "callback_at" in outcome:
        parts.append(f"callback_at={outcome['callback_at']}")
    return " ".join(parts)


# --- the API -----------------------------------------------------------------------------------
def retry_after_seconds(header: str | None, default: float = 1.0) -> float:
    """A Retry-After header (seconds or an HTTP date) as seconds to wait."""
    if not header:
        return default
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_text(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip()[:200] or "(no body)"


class Api:
    def __init__(self, url: str, token: str | None, timeout: float, max_retries: int) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.max_retries = max_retries
        self.retries = 0  # 503s retried, in all

    def claim(self, agent: str, n: int, tier: str | None, deadline: float | None) -> dict[str, Any]:
        """POST /queue/claim; a 503 is retried after its Retry-After, at most max_retries times
        in a row (and not past the deadline)."""
        body: dict[str, Any] = {"agent": agent, "n": n}
        if tier is not None:
            body["tier"] = tier
        in_a_row = 0
        while True:
            status, retry_after, raw = self._post("/queue/claim", body)
            if status == 200:
                answer: dict[str, Any] = json.loads(raw)
                return answer
            if status == 401:
                hint = "wrong" if self.token else "missing; set CALLSCORE_API_TOKEN"
                raise DialerError(
                    f"the API at {self.url} refused the bearer token (401): the token is {hint}"
                )
            if status != 503:
                raise DialerError(
                    f"POST {self.url}/queue/claim answered {status}: {_error_text(raw)}"
                )
            wait = retry_after_seconds(retry_after)
            in_a_row += 1
            late = deadline is not None and time.monotonic() + wait > deadline
            if in_a_row > self.max_retries or late:
                raise DialerError(
                    f"POST {self.url}/queue/claim still answers 503 after {in_a_row} tries: "
                    f"{_error_text(raw)}"
                )
            self.retries += 1
            time.sleep(wait)

    def _post(self, path: str, body: Any) -> tuple[int, str | None, bytes]:
        """(status, its Retry-After header, body)"""
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status, answer.headers.get("Retry-After"), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Retry-After"), exc.read()
        except urllib.error.URLError as exc:
            raise DialerError(f"the API at {self.url} is unreachable: {exc.reason}") from None
        except TimeoutError:
            raise DialerError(
                f"the API at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            raise DialerError(f"the API at {self.url} is unreachable: {exc}") from None


# --- Kafka -------------------------------------------------------------------------------------
def kafka_config(env: Mapping[str, str], bootstrap: str, ack_timeout: float) -> dict[str, Any]:
    """The producer's configuration from the product's CALLSCORE_* connection variables."""
    quiet = logging.getLogger("dialer.librdkafka")  # failures reach the user as one line
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "security.protocol": env.get("CALLSCORE_SECURITY_PROTOCOL", "PLAINTEXT"),
        "acks": "all",
        "enable.idempotence": True,
        "allow.auto.create.topics": False,
        "message.timeout.ms": int(ack_timeout * 1000),
        "client.id": "callscore-reference-dialer",
        "logger": quiet,
    }
    if mechanism := env.get("CALLSCORE_SASL_MECHANISM"):
        config["sasl.mechanism"] = mechanism
        config["sasl.username"] = env.get("CALLSCORE_SASL_USERNAME", "")
        config["sasl.password"] = env.get("CALLSCORE_SASL_PASSWORD", "")
    if ca_file := env.get("CALLSCORE_SSL_CA_FILE"):
        config["ssl.ca.location"] = ca_file
    return config


class Outcomes:
    """The producer of outcomes; `publish` returns once the broker has acknowledged one."""

    def __init__(self, config: dict[str, Any], topic: str, bootstrap: str) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self.timeout = config["message.timeout.ms"] / 1000
        self._last_error: KafkaError | None = None
        self._producer = Producer({**config, "error_cb": self._on_error})

    def _on_error(self, error: KafkaError) -> None:
        self._last_error = error

    def check(self, timeout: float) -> None:
        """The broker answers and the outcomes topic exists; before any claim is made."""
        try:
            metadata = self._producer.list_topics(self.topic, timeout=timeout)
        except KafkaException as exc:
            self._producer.poll(0)  # the client's own error (error_cb) names the cause
            first = exc.args[0] if exc.args else exc
            reason = (
                self._last_error.str()
                if self._last_error is not None
                else first.str()
                if isinstance(first, KafkaError)
                else str(first)
            )
            raise DialerError(
                f"the broker at {self.bootstrap} is unreachable within {timeout:g} s: {reason}"
            ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            reason = topic.error.str() if topic is not None and topic.error else "not listed"
            raise DialerError(
                f"the outcomes topic {self.topic!r} is not on the broker at {self.bootstrap} "
                f"({reason}; does it exist? `callscore topics`)"
            )

    def publish(self, outcome: Mapping[str, Any]) -> None:
        failures: list[str] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error.str())

        self._producer.produce(
            self.topic,
            key=str(outcome["prospect_id"]).encode(),
            value=json.dumps(outcome).encode(),
            on_delivery=delivered,
        )
        left = self._producer.flush(self.timeout + 5)
        if left or failures:
            reason = failures[0] if failures else f"no acknowledgement within {self.timeout:g} s"
            raise DialerError(
                f"the outcome of task {outcome['task_id']} was not acknowledged by the broker at "
                f"{self.bootstrap}: {reason}"
            )

    def close(self) -> None:
        self._producer.flush(1)


# --- the loop ----------------------------------------------------------------------------------
def positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number > 0")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number >= 0")
    return value


def parse_args(argv: list[str], env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dialer.py",
        description="Claim calls from `callscore api`, simulate them, publish their outcomes.",
    )
    parser.add_argument(
        "--api",
        default=f"http://localhost:{env.get('CALLSCORE_API_PORT', '6068')}",
        help="base URL of `callscore api` (default: http://localhost:$CALLSCORE_API_PORT, 6068)",
    )
    parser.add_argument(
        "--bootstrap",
        default=env.get("CALLSCORE_BOOTSTRAP_SERVERS", "localhost:9092"),
        help="Kafka bootstrap servers (default: $CALLSCORE_BOOTSTRAP_SERVERS, localhost:9092)",
    )
    parser.add_argument(
        "--topic",
        default=env.get("CALLSCORE_TOPIC_OUTCOMES", "call-outcomes"),
        help="the outcomes topic (default: $CALLSCORE_TOPIC_OUTCOMES, call-outcomes)",
    )
    parser.add_argument("--agent", default="reference-dialer", help="who calls (claims' agent)")
    parser.add_argument("--tier", choices=TIERS, help="claim only this tier (default: any)")
    parser.add_argument(
        "--batch", type=positive_int, default=5, help=f"tasks per claim, 1-{CLAIM_MAX} (5)"
    )
    parser.add_argument("--calls", type=positive_int, help="stop after this many calls")
    parser.add_argument("--seconds", type=non_negative, help="stop after this many seconds")
    parser.add_argument(
        "--idle-exit",
        type=int,
        default=3,
        help="stop after this many empty claims in a row (3; 0: never)",
    )
    parser.add_argument(
        "--idle-wait", type=non_negative, default=2.0, help="seconds after an empty claim (2)"
    )
    parser.add_argument("--seed", type=int, help="seed of the simulated calls (default: random)")
    parser.add_argument(
        "--dispositions",
        default=DEFAULT_SHARES,
        help=f"shares of the dispositions, DISPOSITION=WEIGHT,... (default: {DEFAULT_SHARES})",
    )
    parser.add_argument(
        "--answer-rate",
        type=float,
        help="share of reached calls, 0-1; the other dispositions keep their proportions",
    )
    parser.add_argument(
        "--callback-hours",
        type=non_negative,
        default=1.0,
        help="a callback is asked for this many hours after the call (1)",
    )
    parser.add_argument(
        "--call-seconds", type=non_negative, default=0.0, help="how long a simulated call takes (0)"
    )
    parser.add_argument(
        "--http-timeout", type=positive, default=30.0, help="seconds per API request (30)"
    )
    parser.add_argument(
        "--max-retries", type=int, default=10, help="503s retried in a row before giving up (10)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=positive,
        default=10.0,
        help="seconds to reach the broker at the start (10)",
    )
    parser.add_argument(
        "--ack-timeout",
        type=positive,
        default=30.0,
        help="seconds for the broker to acknowledge an outcome (30)",
    )
    args = parser.parse_args(argv)
    if args.batch > CLAIM_MAX:
        parser.error(f"--batch is at most {CLAIM_MAX}")
    if args.idle_exit < 0 or args.max_retries < 0:
        parser.error("--idle-exit and --max-retries are numbers >= 0")
    try:
        args.shares = parse_shares(args.dispositions)
        if args.answer_rate is not None:
            args.shares = with_answer_rate(args.shares, args.answer_rate)
    except ValueError as exc:
        parser.error(f"--dispositions/--answer-rate: {exc}")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    return args


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    outcomes = Outcomes(
        kafka_config(env, args.bootstrap, args.ack_timeout), args.topic, args.bootstrap
    )
    outcomes.check(args.connect_timeout)
    api = Api(args.api, env.get("CALLSCORE_API_TOKEN") or None, args.http_timeout, args.max_retries)
    started = time.monotonic()
    deadline = None if args.seconds is None else started + args.seconds
    summary: dict[str, Any] = {
        "agent": args.agent,
        "seed": args.seed,
        "calls": 0,
        "dispositions": dict.fromkeys(DISPOSITIONS, 0),
        "subscribed": 0,
        "claims": 0,
        "claimed": 0,
        "refused": 0,
        "undecided": 0,
        "empty_claims": 0,
        "retried_503": 0,
        "uncalled": 0,
        "stopped": None,
    }

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    idle = 0
    code = 0
    try:
        while summary["stopped"] is None:
            wanted = args.batch
            if args.calls is not None:
                wanted = min(wanted, args.calls - summary["calls"])
                if wanted <= 0:
                    summary["stopped"] = "calls"
                    break
            if out_of_time():
                summary["stopped"] = "seconds"
                break
            answer = api.claim(args.agent, wanted, args.tier, deadline)
            summary["claims"] += 1
            summary["refused"] += answer.get("refused", 0)
            summary["undecided"] += answer.get("undecided", 0)
            tasks = answer.get("tasks", [])
            summary["claimed"] += len(tasks)
            if not tasks:
                summary["empty_claims"] += 1
                idle += 1
                if args.idle_exit and idle >= args.idle_exit:
                    summary["stopped"] = "idle"
                    break
                wait = args.idle_wait
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                time.sleep(wait)
                continue
            idle = 0
            for index, task in enumerate(tasks):
                if out_of_time():
                    summary["uncalled"] += len(tasks) - index  # their leases run out
                    break
                call = summary["calls"] + 1
                called_at = datetime.now(UTC)
                time.sleep(args.call_seconds)
                outcome = outcome_for(
                    task, call, args.seed, args.shares, called_at, args.callback_hours
                )
                outcomes.publish(outcome)
                summary["calls"] = call
                summary["dispositions"][outcome["disposition"]] += 1
                summary["subscribed"] += bool(outcome.get("subscribed"))
                print(call_line(call, task, outcome), flush=True)
    except KeyboardInterrupt:
        summary["stopped"] = "interrupted"
        code = 130
    except DialerError:
        summary["stopped"] = "error"
        raise
    finally:
        summary["retried_503"] = api.retries
        summary["elapsed_seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(summary, separators=(",", ":")), flush=True)
        outcomes.close()
    return code


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C stops the dialer also when it was started with SIGINT ignored (a non-interactive
    # shell's background job): Python keeps an inherited SIG_IGN.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    env = os.environ
    args = parse_args(sys.argv[1:] if argv is None else argv, env)
    try:
        return run(args, env)
    except DialerError as exc:
        print(f"dialer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
