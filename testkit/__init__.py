"""Scaffolding for tests and the bench, outside the product: the scorer as a subprocess
(`harness`), test data and small signed models (`factories`), the test session's broker
(`brokers`). The product never imports it (tests/test_architecture.py)."""
