"""Status-change events and the bus that carries them to subscribers."""
