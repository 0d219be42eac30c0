"""The feedback loop's logic: join outcomes to predictions, online quality, drift, calibration.

Pure functions and bounded in-memory structures; the workers and commands that feed them live
above (monitor/, trainer/schedule, callscore/commands).
"""
