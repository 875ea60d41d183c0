"""Authentication: the master token, minted tokens and TTL parsing."""
