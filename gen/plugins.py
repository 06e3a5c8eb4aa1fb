"""Named model sources: ``"zoo:NAME"``-style specs that lower layers accept and upper layers serve.

The embedders and the trainers take specs such as ``"zoo:patch-encoder"`` or ``--init-from zoo:digits``,
but the zoo sits above them (it is built by the trainers), so they must not import it. Instead a source
registers a loader under its scheme, here in-process (`register_model_source`) or through the
``gen.model_sources`` entry-point group of an installed package, where gen's own zoo is declared:

    [project.entry-points."gen.model_sources"]
    zoo = "gen.zoo:load"

    >>> load_named("zoo:digits")          # -> gen.zoo.load("digits"), imported on first use
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable

from gen.errors import ArgumentError

ENTRY_POINT_GROUP = "gen.model_sources"
_LOADERS: dict[str, Callable[[str], object]] = {}


def register_model_source(scheme: str, load: Callable[[str], object]) -> None:
    """Serve specs "scheme:NAME" with load(NAME)."""
    _LOADERS[scheme] = load


def is_named(spec) -> bool:
    """Whether spec is a "scheme:NAME" string of a known scheme (paths and hub ids are not)."""
    if not isinstance(spec, str) or ":" not in spec:
        return False
    return _loader(spec.split(":", 1)[0]) is not None


def _loader(scheme: str) -> Callable[[str], object] | None:
    if scheme not in _LOADERS:
        found = entry_points(group=ENTRY_POINT_GROUP, name=scheme)
        if found:
            _LOADERS[scheme] = next(iter(found)).load()
    return _LOADERS.get(scheme)


def load_named(spec: str, name: str = "model"):
    """The object a "scheme:NAME" spec names; a ValueError naming `name` when no source serves it."""
    scheme, _, item = spec.partition(":")
    load = _loader(scheme)
    if load is None:
        raise ArgumentError(
            f"{name}: no model source serves {scheme!r} in {spec!r}; install gen (pip install -e .) so its "
            f"'{ENTRY_POINT_GROUP}' entry points are registered, or import gen.zoo first."
        )
    return load(item)
