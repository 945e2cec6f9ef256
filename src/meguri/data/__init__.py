"""meguri.data."""
