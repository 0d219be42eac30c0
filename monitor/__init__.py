"""`callscore monitor`: online quality and drift of every served model version, from Kafka alone.

`online` is the pure core (`Monitor.handle`: records in, a checked `MonitorResult` out),
`metrics` its Prometheus view, `worker` the confluent-kafka loop that feeds one to the other.
"""
