"""The data lake: date-partitioned Parquet (or CSV) copies of every topic (`callscore export`)."""
