"""Container documents: reading and writing desired state, admission checks at the door."""
