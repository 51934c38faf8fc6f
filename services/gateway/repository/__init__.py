"""SQL over the gateway's own schema, one module per table family."""
