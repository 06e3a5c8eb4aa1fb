"""`CompositePipeline`: a pipeline made of other pipelines (`HybridDistilledPipeline`: base + distilled;
`TextToLargeImagePipeline`: grid model + image model), registered as its components so it behaves like any
diffusers pipeline: `.components`, `.to(device, dtype)`, `.device`/`.dtype`, progress bars, and a
`save_pretrained` -> `from_pretrained` round trip (each part in its own subfolder, loaded back by class).

    >>> hybrid = HybridDistilledPipeline(zoo.load("digits"), zoo.load("digits-distilled"))
    >>> hybrid.save_pretrained("hybrid");  HybridDistilledPipeline.from_pretrained("hybrid").to("cuda")
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple

from gen.errors import ArgumentError
from gen.pipelines.loading import STUB_MODULE, stub_source


class CompositePipeline(DiffusionPipeline):
    """Subclasses call `register_modules(name=pipeline, ...)` and `register_to_config(...)` for their settings."""

    def parts(self) -> dict[str, DiffusionPipeline]:
        return {name: part for name, part in self.components.items() if isinstance(part, DiffusionPipeline)}

    def to(self, *args, **kwargs):
        for part in self.parts().values():
            part.to(*args, **kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return next(iter(self.parts().values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.parts().values())).dtype

    def enable_model_cpu_offload(self, *args, **kwargs):
        for part in self.parts().values():
            part.enable_model_cpu_offload(*args, **kwargs)

    def maybe_free_model_hooks(self):
        """Hand every part's models back to the CPU: a part's model called from another part's loop (the
        base model inside the distilled run) is not offloaded by that part's own call."""
        for part in self.parts().values():
            part.maybe_free_model_hooks()

    def set_progress_bar_config(self, **kwargs):
        super().set_progress_bar_config(**kwargs)
        for part in self.parts().values():
            part.set_progress_bar_config(**kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Each part into its own subfolder (by its own save_pretrained), then model_index.json naming them."""
        from gen.io import write_json, write_text

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        parts = self.parts()
        for name, part in parts.items():
            part.save_pretrained(folder / name, *args, **kwargs)
        settings = {k: v for k, v in self.config.items() if not k.startswith("_") and k not in parts}
        classes = {name: _class_tuple(part) for name, part in parts.items()}
        write_text(folder / f"{STUB_MODULE}.py", stub_source(type(self).__name__))
        write_json(folder / "model_index.json", {"_class_name": [STUB_MODULE, type(self).__name__], **classes, **settings})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, dtype=None, device=None, torch_dtype=None, use_safetensors: bool = True, **kwargs):
        """Load what `save_pretrained` wrote: each part with gen's loader (safetensors only), then the settings."""
        from gen.pipelines.loading import check_folder, load_pipeline, read_index

        folder = Path(pretrained_model_name_or_path)
        index = read_index(folder, "pretrained_model_name_or_path")
        check_folder(folder, index, "pretrained_model_name_or_path")
        saved = index.get("_class_name")
        if saved != [STUB_MODULE, cls.__name__]:
            raise ArgumentError(f"pretrained_model_name_or_path: {folder} holds a {saved!r}, not a {cls.__name__}.")
        parts = {
            name: load_pipeline(folder / name, name=name, dtype=dtype, device=device, torch_dtype=torch_dtype)
            for name, value in index.items()
            if isinstance(value, list) and not name.startswith("_")
        }
        settings = {k: v for k, v in index.items() if not k.startswith("_") and k not in parts}
        return cls(**parts, **settings, **kwargs)


def _class_tuple(part: DiffusionPipeline) -> list[str]:
    """model_index.json's [library, class] for a part: gen's pipelines by their package (which diffusers'
    loader can read, see gen.pipelines), stock ones as diffusers records them."""
    if type(part).__module__.startswith("gen."):
        return ["gen.pipelines", type(part).__name__]
    return list(_fetch_class_library_tuple(part))
