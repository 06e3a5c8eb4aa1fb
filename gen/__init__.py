"""gen: steering diffusion models built on diffusers.

The core is one denoising loop (`sample`) over one adapter (`Denoiser`); every capability is a hook
(`SamplingHook`) or a training option around it.

Layers (each imports only from layers below it; checked by `lint-imports`, see pyproject.toml):

    gen.cli
    gen.demo
    gen.zoo                                        bundled models; rebuilds them through gen.training
    gen.training                                   trainers (accelerate)
    gen.pipelines                                  diffusers pipelines, steer()
    gen.guidance | gen.conditioning | gen.embedders | gen.analysis
    gen.core                                       sampling, denoiser, backbones, prediction, hooks, tiling
    gen.data | gen.io | gen.plugins                data sources, atomic files, named-model resolution
    gen.errors                                     error types and how the command line reports them
"""

from gen.core.denoiser import Denoiser, DenoiserOutput
from gen.core.hooks import SamplingHook, Step
from gen.core.sampling import SampleOutput, SamplingState, StepContext, sample

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
