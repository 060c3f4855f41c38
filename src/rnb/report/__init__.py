"""rnb.report."""
