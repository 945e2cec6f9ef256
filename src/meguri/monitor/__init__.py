"""meguri.monitor."""
