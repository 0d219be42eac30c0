"""The suite's scenarios (each a function of bench.context.Context to its typed result), the
programs some of them run as child processes, and how a backlog is measured."""
