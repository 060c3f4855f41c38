"""Signal services: extra per-round signals (eval losses, reference losses, gradients)."""

from rnb.balance.services.base import SERVICES, SignalService, build_services

__all__ = ["SERVICES", "SignalService", "build_services"]
