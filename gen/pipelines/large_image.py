"""`LargeImagePipeline`: large images from a grid of embeddings (Graikos et al., CVPR 2024).

The grid comes from a reference image (embedded patch by patch on a non-overlapping grid) or is given
directly (h, w, D), e.g. sampled from the text -> embedding-grid model. Any output size: the canvas is
covered by overlapping tiles; each tile is conditioned on the grid interpolated at its centre, tiles are
denoised in batches, and their outputs are averaged where they overlap at every step (see
`gen.core.tiling.TiledDenoiser`), so no seam survives. The average is weighted by a cosine window by
default: a tile's border pixels, which the backbone sees with zero padding, count least (uniform
MultiDiffusion averaging, ``blend="uniform"``, left visible seams on the zoo model: border/interior
gradient 1.43 vs 1.08). Latent models decode with the VAE's tiled decoder.

    >>> pipe = gen.zoo.load("ihc-patches")                     # any EmbeddingToImagePipeline folder
    >>> large = LargeImagePipeline.from_pipe(pipe)
    >>> out = large(reference=retina_1024, overlap=8, num_inference_steps=20)
    >>> out.images[0], out.grid.shape                          # the image and the grid used

NFE counts tile evaluations per image: tiles x steps (x2 under guidance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gen.core.denoiser import Denoiser
from gen.pipelines.base import GenPipelineOutput
from gen.pipelines.embedding import EmbeddingToImagePipeline, images_to_tensor
from gen.core.tiling import BLENDS, INTERPOLATIONS, TiledDenoiser


@dataclass
class LargeImagePipelineOutput(GenPipelineOutput):
    """Adds the embedding grid used, (h, w, D), and the number of tiles per image."""

    grid: torch.Tensor | None = None
    tiles: int = 0


class LargeImagePipeline(EmbeddingToImagePipeline):
    """Same components as `EmbeddingToImagePipeline`; generates images of any size from embedding grids."""

    def embed_grid(self, reference, patch: int | None = None) -> torch.Tensor:
        """The (h, w, D) grid of embeddings of non-overlapping patch x patch crops of a reference image."""
        image = images_to_tensor(reference, "reference")[:1]
        patch = patch or self.tile_size
        _, _, height, width = image.shape
        if min(height, width) < patch:
            raise ValueError(f"reference: {height}x{width} is smaller than one patch ({patch}); give an image at least {patch} pixels on each side.")
        rows, cols = height // patch, width // patch
        crops = image[0, :, : rows * patch, : cols * patch].unfold(1, patch, patch).unfold(2, patch, patch)
        crops = crops.permute(1, 2, 0, 3, 4).reshape(-1, image.shape[1], patch, patch)
        return self.embedder.embed_images(crops).reshape(rows, cols, -1)

    def check_grid(self, grid) -> torch.Tensor:
        if not isinstance(grid, torch.Tensor) or grid.ndim != 3:
            raise ValueError(f"embedding_grid: expected an (h, w, D={self.embedding_width}) tensor, got {tuple(getattr(grid, 'shape', ())) or type(grid).__name__}.")
        if grid.shape[2] != self.embedding_width:
            raise ValueError(f"embedding_grid: width {grid.shape[2]} does not match the model's {self.embedding_width}; embed with the encoder the model was trained on.")
        if not torch.isfinite(grid).all():
            raise ValueError("embedding_grid: contains NaN or infinite values.")
        return grid.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = getattr(self, "vae", None)
        if vae is not None and not getattr(vae, "use_tiling", False):
            vae.enable_tiling()
        return super().decode(latents)

    @torch.no_grad()
    def __call__(
        self,
        reference=None,
        embedding_grid: torch.Tensor | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        patch_size: int | None = None,
        overlap: int | None = None,
        tile_batch_size: int | None = None,
        blend: str = "cosine",
        interpolation: str = "slerp",
        num_images: int = 1,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        generator=None,
        eta: float | None = None,
        latents: torch.Tensor | None = None,
        hooks=(),
        trace: bool = False,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Generate num_images images of height x width (default: the grid's extent) from a reference image
        or an embedding grid. overlap (pixels, default a quarter tile) must be smaller than a tile.
        tile_batch_size caps the tile rows per backbone call (None: picked from free memory);
        interpolation ("slerp" or "bilinear") mixes the grid's embeddings between cells."""
        guidance_scale, num_inference_steps = self.sampling_defaults(guidance_scale, num_inference_steps)
        hooks = self.check_common(num_inference_steps, output_type, hooks, guidance_scale)
        if (reference is None) == (embedding_grid is None):
            raise ValueError("reference, embedding_grid: pass exactly one of them.")
        tile, factor = self.tile_size, self.vae_scale_factor
        patch = patch_size or tile
        overlap = tile // 4 if overlap is None else overlap
        if not isinstance(overlap, int) or not 0 <= overlap < tile:
            raise ValueError(f"overlap: must be an integer with 0 <= overlap < tile size ({tile}), got {overlap!r}.")
        if overlap % factor:
            raise ValueError(f"overlap: must be a multiple of the VAE factor {factor}, got {overlap}.")
        if blend not in BLENDS:
            raise ValueError(f"blend: one of {BLENDS}, got {blend!r}.")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation: one of {INTERPOLATIONS}, got {interpolation!r}.")
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images: must be an integer >= 1, got {num_images!r}.")
        if reference is not None:
            reference = images_to_tensor(reference, "reference")
            if min(reference.shape[2:]) < tile:
                raise ValueError(f"reference: {tuple(reference.shape[2:])} is smaller than one tile ({tile}); give an image at least {tile} pixels on each side.")
        grid = self.embed_grid(reference, patch) if reference is not None else self.check_grid(embedding_grid)
        height = height or grid.shape[0] * patch
        width = width or grid.shape[1] * patch
        for name, size in (("height", height), ("width", width)):
            if size < tile:
                raise ValueError(f"{name}: {size} is smaller than one tile ({tile}).")
            if size % factor:
                raise ValueError(f"{name}: must be a multiple of the VAE factor {factor}, got {size}.")
        denoiser = TiledDenoiser(Denoiser(self.backbone, self.scheduler), tile // factor, overlap // factor, tile_batch_size, patch=patch / factor,
                                 blend=blend, interpolation=interpolation)
        device, dtype = self._execution_device, self.backbone.dtype
        grid_batch = grid.permute(2, 0, 1)[None].expand(num_images, -1, -1, -1).to(device, dtype)
        if latents is None:
            latents = self.prepare_latents(num_images, height, width, generator)
        tiles = len(denoiser.positions(height // factor, width // factor))
        return self.generate(
            latents,
            {"embedding_grid": grid_batch},
            {"embedding_grid": torch.zeros_like(grid_batch)},
            guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, generator=generator, eta=eta,
            hooks=hooks, trace=trace, output_type=output_type, return_dict=return_dict,
            denoiser=denoiser, output_class=LargeImagePipelineOutput, grid=grid, tiles=tiles,
        )
