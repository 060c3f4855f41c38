"""Read-only attributes that settle deferred work before they are read.

Both gradient capture (buffered row products) and the round statistics (per-step losses
folded at round end) postpone work off the per-step path; every public read of their totals
must see that work done first. `Settled` states that once instead of a property per total.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

__all__ = ["Settled"]

T = TypeVar("T")


class Settled(Generic[T]):
    """Descriptor: ``owner.<settle>()`` runs, then ``convert(owner.<field>)`` is returned.

    Args:
        field: Name of the private attribute holding the value.
        settle: Name of the owner's method that completes pending work.
        doc: The attribute's docstring.
        convert: Applied to the stored value on read (e.g. ``int`` for a device scalar).
    """

    def __init__(
        self, field: str, settle: str, doc: str, convert: Callable[[Any], T] | None = None
    ) -> None:
        self.field, self.settle, self.convert = field, settle, convert
        self.name = field.lstrip("_")  # until the class body names it (__set_name__)
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        # The error names the attribute the caller wrote (`skipped_nonfinite`), not the
        # private field behind it (`_skipped`).
        self.name = f"{owner.__name__}.{name}"

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Settled[T]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> T | Settled[T]:
        if obj is None:
            return self
        getattr(obj, self.settle)()
        value = getattr(obj, self.field)
        return value if self.convert is None else self.convert(value)

    def __set__(self, obj: object, value: object) -> None:
        # A data descriptor, so an assignment cannot silently shadow the settled value.
        raise AttributeError(
            f"{self.name} is read-only: it is computed (pending work settled first) from "
            f"{self.field}"
        )
