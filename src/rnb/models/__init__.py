"""rnb.models."""
