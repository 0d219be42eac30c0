"""`callscore demo`: the whole system on one machine, live, ending by itself with a reconciliation.

1. A broker: Apache Kafka started by the demo (core/local_broker: Java and Maven's cached jars;
   its logs and data under `<out>/logs/kafka/`), unless Kafka is configured
   (CALLSCORE_BOOTSTRAP_SERVERS or .env): then the demo's topics (the call queue's too) and
   consumer group get a per-run suffix. Without Java (or Maven, or the jars' fetch) it runs on
   Tansu instead (`--broker tansu` asks for it), with a replay shortened to what Tansu carries,
   and says so in one line (`setup`). The clients take the broker's own timings.
2. Data: the real UCI file if found or quickly downloadable, else synthetic rows, with a warning
   (`data`); the replayed months are the latest ones, half of the rows at most (`window`).
3. `callscore train --search reference` on the months before the replay window publishes v1,
   while `callscore stream` (the scorer and its call queue: /healthz, /readyz, /metrics),
   `callscore monitor` and `callscore api` (the dialer-facing HTTP: /score, /model, /queue,
   /queue/claim) start, each on a free port of the run's. The scorer's /metrics gauge
   `callscore_model_version` says which version it serves (`probes`).
4. `callscore simulate` replays the window with attempts: a row with `campaign` = c becomes up to
   CALLSCORE_MAX_ATTEMPTS calls, each before the last without a decision (no answer, busy,
   voicemail, a callback), so the queue recycles the task and itself sends the retry (the event
   again, one attempt later, on the prospects topic, scored like any other); with malformed
   events and outcomes, repeated prospects, late events, do-not-call entries and slow calls, so
   that every rule of the call queue fires, in about `replay_seconds` (each call waits until the
   queue has decided the event it calls; only that prospect's later records wait with it, the
   others go on for half a task's lifetime of event time: `progress.hold_skew`). A quarter of
   the way in, `callscore recalibrate` publishes v2 on the calls that reached their prospect so
   far and the scorer hot-reloads it (`progress` moves the run through its `phases`). Meanwhile
   the demo acts as one agent of an in-house dialer: every couple of seconds it claims 3 tasks
   from the API (POST /queue/claim, in a thread of its own: `agent`); the simulator still makes
   every call, and its outcomes end the claims. The view shows the call queue as a dialer mirrors it
   (the best open tasks, open tasks per tier, withdrawals by reason, the scorer's queue counts),
   the calls per disposition, callbacks, recycles and retry tasks by attempt, and the agent's
   claims (granted, refused, undecided, the last ones with their lease).
5. Once every replayed record, every outcome and every retry the queue sent is handled,
   `callscore report` writes the quality report; every process is stopped; the summary checks
   produced = scored + dead-lettered + duplicates on the topics themselves (a retry sent twice
   is dropped by the scorer as a duplicate) and reports the queue, the calls, recycles,
   callbacks and claims (`reconcile`, `summary`).

Every child writes to `<out>/logs/<name>.log` (Apache Kafka to `kafka/node-1/server.log`) and is
listed in `<out>/pids` (the broker as `broker`, stopped after the others); the terminal shows
only the view (`state` fed from the topics, the endpoints and the agent, `probes`, `agent`;
drawn by `view`) and the summary. Ctrl-C (or SIGTERM, SIGHUP) stops every child before it exits
(`run`, `signals`).
"""
