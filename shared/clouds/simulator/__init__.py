"""The simulated cloud: an HTTP cloud (``server.py``) with its state in PostgreSQL, reached through
a real libcloud ``NodeDriver`` (``driver.py``), so every service process sees the same nodes and
they survive restarts. Timings, capacity, failures, latency and throttling are set per
account (``model.py``)."""
