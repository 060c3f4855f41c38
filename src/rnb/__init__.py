"""rnb — data-mixture optimisation (R&B: Regroup & Balance) on Lightning + Hydra."""

__version__ = "0.1.0"
