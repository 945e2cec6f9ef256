"""meguri.studio."""
