"""Moved to `gen.core.tiling`; this module keeps `gen.tiling` imports working."""

from gen.core.tiling import *  # noqa: F401,F403
