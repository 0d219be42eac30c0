"""The `callscore` command line and the demo: the top of the house (nothing imports them)."""
