"""`boreas`: the command-line client of a Boreas gateway. It speaks only the HTTP API."""
