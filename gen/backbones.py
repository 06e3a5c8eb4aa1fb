"""Moved to `gen.core.backbones` (the adapters) and `gen.core.denoiser` (Denoiser); this module keeps
`gen.backbones` imports working."""

from gen.core.backbones import *  # noqa: F401,F403
from gen.core.denoiser import Denoiser, DenoiserOutput  # noqa: F401
