"""rnb.cli."""
