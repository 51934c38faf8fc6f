"""Code every Boreas service shares: settings, logging, the event catalog, bus and database."""
