"""Written by gen (pip install gen-diffusion): this folder holds a gen.pipelines.ClassConditionalPipeline. Load it with
gen.pipelines.ClassConditionalPipeline.from_pretrained(folder), or with
diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)."""

from gen.pipelines import ClassConditionalPipeline  # noqa: F401
