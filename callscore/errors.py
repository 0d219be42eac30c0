"""The base of every error that is the user's to fix: the CLI prints it as one line, exit 1."""


class CallscoreError(RuntimeError):
    pass
