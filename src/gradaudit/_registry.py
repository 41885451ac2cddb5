"""One registry behaviour for every named concept (data sets, models, attribution methods,
metrics, studies).

A :class:`Registry` is a name -> entry mapping that

- refuses a second entry under a taken name (``replace=True`` to override on purpose),
- answers an unknown name with one :class:`ParameterError` holding ``Did you mean …?`` and
  the valid names (:func:`~gradaudit._validation.unknown_name`),
- lists its entries, one ``name: summary`` line each, for ``--help`` and listing commands.

Reading it is reading a mapping (``name in R``, ``R[name]``, ``list(R)``); ``R[name] = x``
registers (and refuses duplicates too); ``del R[name]`` unregisters (tests).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, MutableMapping
from typing import TypeVar

from ._validation import ParameterError, unknown_name

__all__ = ["Registry"]

T = TypeVar("T")


def _no_summary(entry: object) -> str:
    if isinstance(entry, functools.partial):
        entry = entry.func
    doc = getattr(entry, "summary", None) or (getattr(entry, "__doc__", None) or "")
    return str(doc).strip().split("\n")[0]


class Registry(MutableMapping[str, T]):
    """Names -> entries of one kind (``kind`` words the errors: "dataset", "model", ...).

    Args:
        kind: What an entry is, as the error messages say it.
        summary: entry -> one line for :meth:`listing` (default: the entry's ``summary``
            attribute, else the first line of its docstring).
    """

    def __init__(self, kind: str, summary: Callable[[T], str] | None = None) -> None:
        self.kind = kind
        self._summary: Callable[[T], str] = summary or _no_summary
        self._entries: dict[str, T] = {}
        self._a = "An" if kind[:1].lower() in "aeiou" else "A"

    # the mapping
    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __setitem__(self, name: str, entry: T) -> None:
        self.add(name, entry)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    # registering
    def add(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Register ``entry`` under ``name`` and return it.

        Raises:
            ParameterError: ``name`` is not a non-empty string, or is taken and ``replace``
                is False.
        """
        if not isinstance(name, str) or not name.strip():
            raise ParameterError(f"{self._a} {self.kind} name must be a non-empty string. Got {name!r}.")
        if name in self._entries and not replace:
            raise ParameterError(f"{self._a} {self.kind} named {name!r} is already registered; "
                                 "pick another name, or pass replace=True to override it.")
        self._entries[name] = entry
        return entry

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@R.register("name")``."""

        def deco(entry: T) -> T:
            return self.add(name, entry, replace=replace)

        return deco

    # looking up
    def unknown(self, name: object, *, caller: str | None = None) -> str:
        """The one message for an unknown name: closest match and the valid names."""
        return unknown_name(self.kind, str(name), self._entries, caller=caller)

    def lookup(self, name: object, *, caller: str | None = None) -> T:
        """The entry called ``name``.

        Raises:
            ParameterError: Unknown name (``Did you mean …?`` and the valid names).
        """
        if not isinstance(name, str) or name not in self._entries:
            raise ParameterError(self.unknown(name, caller=caller))
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def listing(self) -> str:
        """One ``name: summary`` line per entry, in registration order (for ``--help``)."""
        lines = []
        for name, entry in self._entries.items():
            summary = self._summary(entry)
            lines.append(f"{name}: {summary}" if summary else name)
        return "\n".join(lines)
