"""meguri.compute."""
