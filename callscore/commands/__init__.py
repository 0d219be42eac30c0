"""Subcommands of `callscore`, one module per area; each has `register(subparsers)`."""
