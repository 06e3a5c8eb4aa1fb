"""gen: steering diffusion models built on diffusers.

The core is one denoising loop (`sample`) over one adapter (`Denoiser`); every capability is a hook
(`SamplingHook`) or a training option around it.
"""

from gen.backbones import Denoiser, DenoiserOutput
from gen.hooks import SamplingHook, Step
from gen.sampling import SampleOutput, SamplingState, StepContext, sample

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "DenoiserOutput",
    "SampleOutput",
    "SamplingHook",
    "SamplingState",
    "Step",
    "StepContext",
    "sample",
]
