"""Errors that are the user's to fix: the CLI prints them as one line and exits 1."""


class CallscoreError(RuntimeError):
    pass


class BrokerUnavailableError(CallscoreError):
    """The configured Kafka bootstrap servers did not answer."""


class MissingSecretError(CallscoreError):
    """A command needs a secret (e.g. the model signing key) that is not configured."""
