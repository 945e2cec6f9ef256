"""meguri.serve."""
