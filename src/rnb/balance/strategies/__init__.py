"""rnb.balance.strategies."""
