"""meguri.server."""
