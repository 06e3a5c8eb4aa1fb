"""Moved to `gen.core.hooks`; this module keeps `gen.hooks` imports working."""

from gen.core.hooks import *  # noqa: F401,F403
