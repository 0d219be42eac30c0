"""Online scoring: the Faust stream processor, hot model reload, HTTP API and metrics."""
