"""meguri.registry."""
