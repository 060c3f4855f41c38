"""rnb.balance."""
