"""Moved to `gen.data.tissue` (the images and patches) and `gen.training.data` (the `ihc-grids` source);
this module keeps `gen.training.tissue` imports working."""

from gen.data.tissue import *  # noqa: F401,F403
from gen.training.data import ihc_grids  # noqa: F401
