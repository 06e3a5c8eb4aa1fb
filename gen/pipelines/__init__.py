"""diffusers pipelines: the user's entry points.

A saved composite pipeline names its parts' class as ``["gen.pipelines", "<Class>"]``; diffusers' loader
finds a component's loading method by looking its base classes up in that module, so DiffusionPipeline is
imported here for it (`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`).
"""

from diffusers import DiffusionPipeline  # noqa: F401  (see above)

from gen.pipelines.base import GenPipeline, GenPipelineOutput
from gen.pipelines.class_conditional import ClassConditionalPipeline
from gen.pipelines.embedding import EmbeddingToImagePipeline
from gen.pipelines.hybrid import BaseFirstHook, HybridDistilledPipeline, HybridHook
from gen.pipelines.large_image import LargeImagePipeline, LargeImagePipelineOutput
from gen.pipelines.steer import SteeredPipeline, steer
from gen.pipelines.text_to_image import TextToImagePipeline
from gen.pipelines.text_to_large_image import TextToLargeImagePipeline

__all__ = [
    "ClassConditionalPipeline",
    "EmbeddingToImagePipeline",
    "LargeImagePipeline",
    "LargeImagePipelineOutput",
    "GenPipeline",
    "GenPipelineOutput",
    "HybridDistilledPipeline",
    "BaseFirstHook",
    "HybridHook",
    "SteeredPipeline",
    "TextToImagePipeline",
    "TextToLargeImagePipeline",
    "steer",
]
