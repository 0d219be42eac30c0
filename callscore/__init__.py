"""Shared runtime: settings, Kafka plumbing, the local broker and the `callscore` CLI."""
