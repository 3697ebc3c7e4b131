"""A wrapper for secret strings whose repr/str never shows the value. Pure."""

from __future__ import annotations

import hashlib


class SecretStr:
    """Holds a token; ``str``/``repr``/``format`` print ``[secure]``.

    Unwrap with :meth:`reveal` only at the HTTP call and the Secret write.
    """

    __slots__ = ("_fingerprint", "_salted", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._fingerprint: str | None = None
        self._salted: tuple[str, str] | None = None  # the last salt asked for, and its digest

    def reveal(self) -> str:
        return self._value

    def digest(self, salt: str) -> str:
        """A short salted one-way digest that may be published (a link's status records
        which token was validated): it names the token without revealing it. The last one
        is kept: every look at a link asks for its tokens' (salted with the link's uid)."""
        known = self._salted
        if known is not None and known[0] == salt:
            return known[1]
        digest = hashlib.sha256(f"{salt}:{self._value}".encode()).hexdigest()[:16]
        self._salted = (salt, digest)
        return digest

    def fingerprint(self) -> str:
        """A short one-way digest, for in-memory comparisons only (never logged). Computed
        once: a refresh asks for the same token's several times."""
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self._value.encode()).hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        return "SecretStr('[secure]')"

    def __str__(self) -> str:
        return "[secure]"

    def __format__(self, spec: str) -> str:
        return "[secure]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[type, tuple[str]]:  # pragma: no cover - pickling guard
        raise TypeError("SecretStr cannot be pickled")
