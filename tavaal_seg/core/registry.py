"""Named registries users can add to (strategies, task models), in the style of timm's
``@register_model``: the package registers its built-ins; a user's ``register`` call (or
decorator) adds an entry that config validation, ``--help`` and every lookup see at once.

A registry is read through the :class:`~collections.abc.Mapping` interface only; ``register``
and ``unregister`` are the one way to change it, and the built-ins cannot be replaced or removed.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar, overload

from .errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries by name, in registration order (the built-ins first).

    ``kind`` names what the registry holds, ``key`` the config key that selects an entry and
    ``adder`` the public function that registers one; all three appear in lookup errors
    (``unknown strategy 'x' (active.strategy); choose one of ..., or add your own with register_strategy``).
    """

    def __init__(self, kind: str, key: str, adder: str, builtins: Iterable[tuple[str, T]] = ()) -> None:
        self.kind, self.key, self.adder = kind, key, adder  # adder: the public function that registers one
        self._entries: dict[str, T] = {}
        self._builtins: frozenset[str] = frozenset()
        for name, entry in builtins:
            self.register(name, entry)
        self._builtins = frozenset(self._entries)

    # -- the Mapping interface (read-only)
    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def choices(self) -> str:
        return ", ".join(sorted(self._entries))

    def lookup(self, name: str) -> T:
        """The entry called ``name``; otherwise a :class:`~tavaal_seg.core.errors.ConfigError` (a
        ``ValueError``) naming the config key, the registered names and the closest one."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r} ({self.key}){hint}; choose one of {self.choices()}, "
                              f"or add your own with {self.adder}") from None

    # -- changing it
    @overload
    def register(self, name: str, entry: None = None, *, replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, entry: T | None = None, *, replace: bool = False) -> T | Callable[[T], T]:
        """Add ``entry`` as ``name``; without ``entry``, a decorator that registers what it decorates.
        A name already registered is refused unless ``replace=True`` (never for a built-in)."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"a {self.kind} name must be a non-empty string without surrounding spaces, got {name!r}")

        def add(obj: T) -> T:
            if name in self._entries and (not replace or name in self._builtins):
                what = "built-in" if name in self._builtins else "registered"
                advice = "choose another name" if what == "built-in" else "pass replace=True to replace it"
                raise ValueError(f"{self.kind} {name!r} is already {what}; {advice}")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> T:
        """Remove a user-registered entry (built-ins stay) and return it."""
        if name in self._builtins:
            raise ValueError(f"{self.kind} {name!r} is built in and cannot be unregistered")
        if name not in self._entries:
            raise ValueError(f"{self.kind} {name!r} is not registered")
        return self._entries.pop(name)
