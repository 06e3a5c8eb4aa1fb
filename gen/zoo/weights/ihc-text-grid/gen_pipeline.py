"""Written by gen (pip install gen-diffusion): this folder holds a gen.pipelines.TextToImagePipeline. Load it with
gen.pipelines.TextToImagePipeline.from_pretrained(folder), or with
diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)."""

from gen.pipelines import TextToImagePipeline  # noqa: F401
