"""`callscore demo`: the whole system on one machine, live, ending by itself with a reconciliation.

1. A broker: the embedded Tansu unless Kafka is configured (CALLSCORE_BOOTSTRAP_SERVERS or .env);
   on a configured Kafka the demo's topics and consumer group get a per-run suffix (`setup`).
2. Data: the real UCI file if found or quickly downloadable, else synthetic rows, with a warning
   (`data`); the replayed months are the latest ones, half of the rows at most (`window`).
3. `callscore train --search reference` on the months before the replay window publishes v1,
   while `callscore stream` and `callscore monitor` start.
4. `callscore simulate` replays the window (with malformed events and outcomes, repeated
   prospects, late events, do-not-call entries and slow calls, so that every rule of the call
   queue fires) in about `replay_seconds`; a quarter of the way in, `callscore recalibrate`
   publishes v2 on the outcomes so far and the scorer hot-reloads it (`progress` moves the run
   through its `phases`). The view shows the call queue as a dialer mirrors it: the best open
   tasks, open tasks per tier, withdrawals by reason, the scorer's queue counts.
5. `callscore report` writes the quality report; every process is stopped; the summary checks
   produced = scored + dead-lettered on the topics themselves and reports the queue
   (`reconcile`, `summary`).

Every child writes to `<out>/logs/<name>.log` and is listed in `<out>/pids`; the terminal shows
only the view (`state` fed from the topics and the endpoints, `probes`; drawn by `view`) and the
summary. Ctrl-C (or SIGTERM, SIGHUP) stops every child before it exits (`run`, `signals`).
"""
