"""meguri.deploy."""
