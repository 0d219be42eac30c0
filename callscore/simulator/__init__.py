"""The replay simulator: bank-full.csv's rows as prospect events and call outcomes, in time
order. `plan` is pure (the records and their event times), `publish` sends a plan to Kafka."""
