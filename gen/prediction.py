"""Moved to `gen.core.prediction`; this module keeps `gen.prediction` imports working."""

from gen.core.prediction import *  # noqa: F401,F403
