"""rnb.data."""
