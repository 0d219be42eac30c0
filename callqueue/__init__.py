"""The live call queue's logic: one open task per prospect, and the rules that change it.

Pure (no Kafka, no Faust): `inputs` says what reaches a prospect's queue partition and how it is
keyed there, `state` is a prospect's entry, `rules` turns a batch of inputs into new entries,
outgoing records and counts (docs/architecture.md, "The call queue"). The scorer's queue worker
(streamer/queue_worker.py) stores, recovers and publishes around it.
"""
