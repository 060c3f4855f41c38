"""The class name an embedder's fingerprint hashes: its public path, not its file.

Embedder fingerprints are part of every embedding and result cache key. Naming the class
by the path users write in ``_target_`` (``rnb.regroup.embedders.<Class>``) rather than
by ``type(obj).__module__`` keeps those keys, and so existing caches, valid when the
implementation moves to another file inside the package.
"""

from __future__ import annotations

__all__ = ["PUBLIC_MODULE", "public_kind"]

#: The package every embedder is exported from (and configured through).
PUBLIC_MODULE = "rnb.regroup.embedders"


def public_kind(obj: object) -> str:
    """``"rnb.regroup.embedders.<Class>"`` for an embedder instance ``obj``.

    Args:
        obj: An embedder defined in (and exported by) :mod:`rnb.regroup.embedders`.

    Returns:
        The dotted public name of ``obj``'s class.
    """
    return f"{PUBLIC_MODULE}.{type(obj).__qualname__}"
