"""A name -> object table filled by a decorator where each object is defined
(the pattern of detectron2's ``Registry``), so that the code that uses the
objects does not import, or even know, the modules that define them.

:data:`CHECK_SUITES` holds the check suites: functions returning the
:class:`~grader.checks.Check` list of one part of an assignment, registered
under ``"<assignment>/<part>"`` by :mod:`grader.sanity` (``visible``) and
:mod:`grader.checks_one_stage` / :mod:`grader.checks_two_stage` (``hidden``).
:mod:`grader.suites` imports those modules and assembles the registry of an
assignment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry:
    """Objects by name; :meth:`register` is the decorator that fills it.

    A name is registered once: a second registration of the same name is a bug
    (two modules claiming one suite), not an override."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._objects: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: record the decorated object under ``name`` and return it unchanged."""

        def decorate(obj: T) -> T:
            if name in self._objects:
                raise KeyError(f"{name!r} is already registered in {self.name} (by {self._objects[name].__module__})")
            self._objects[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> Callable[..., Any]:
        """The object registered under ``name``; a KeyError listing the registered names otherwise."""
        try:
            return self._objects[name]
        except KeyError:
            raise KeyError(f"nothing named {name!r} in {self.name}; registered: {sorted(self._objects)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._objects))


#: Check suites: ``"<assignment>/visible"`` and ``"<assignment>/hidden"`` -> ``() -> list[Check]``.
CHECK_SUITES = Registry("the check suites")
