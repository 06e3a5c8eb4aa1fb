"""Moved to `gen.core.sampling`; this module keeps `gen.sampling` imports working."""

from gen.core.sampling import *  # noqa: F401,F403
