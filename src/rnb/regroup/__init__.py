"""rnb.regroup."""
