"""Written by gen (pip install gen-diffusion): this folder holds a gen.pipelines.EmbeddingToImagePipeline. Load it with
gen.pipelines.EmbeddingToImagePipeline.from_pretrained(folder), or with
diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)."""

from gen.pipelines import EmbeddingToImagePipeline  # noqa: F401
