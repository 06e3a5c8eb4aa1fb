"""`LargeImagePipeline`: large images from a grid of embeddings (Graikos et al., CVPR 2024).

The grid comes from a reference image (embedded at every tile position, so each tile is conditioned on
the reference's embedding where it lies) or is given directly (h, w, D), e.g. sampled from the text ->
embedding-grid model on non-overlapping patches. Any output size: the canvas is covered by overlapping
tiles; each tile is conditioned on the grid interpolated at its centre, tiles are denoised in batches, and
their outputs are averaged where they overlap at every step (see `gen.core.tiling.TiledDenoiser`), so no
seam survives. The average is weighted by a cosine window by default: a tile's border pixels, which the
backbone sees with zero padding, count least (uniform MultiDiffusion averaging, ``blend="uniform"``, left
visible seams on the zoo model: border/interior gradient 1.43 vs 1.08). Latent models decode with the VAE's
tiled decoder.

    >>> pipe = gen.zoo.load("ihc-patches")                     # any EmbeddingToImagePipeline folder
    >>> large = LargeImagePipeline.from_pipe(pipe)
    >>> out = large(reference=retina_1024, overlap=8, num_inference_steps=20)
    >>> out.images[0], out.grid.shape                          # the image and the grid used

NFE counts tile evaluations per image: tiles x steps (x2 under guidance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gen.errors import ArgumentError, require_choice, require_int
from gen.core.denoiser import Denoiser
from gen.pipelines.base import GenPipelineOutput
from gen.pipelines.embedding import EmbeddingToImagePipeline, images_to_tensor
from gen.core.tiling import BLENDS, INTERPOLATIONS, TiledDenoiser, tile_starts


@dataclass
class LargeImagePipelineOutput(GenPipelineOutput):
    """Adds the embedding grid used, (h, w, D), and the number of tiles per image."""

    grid: torch.Tensor | None = None
    tiles: int = 0


class LargeImagePipeline(EmbeddingToImagePipeline):
    """Same components as `EmbeddingToImagePipeline`; generates images of any size from embedding grids."""

    def embed_grid(self, reference, patch: int | None = None, stride: int | None = None) -> torch.Tensor:
        """The grid of embeddings of the reference image(s)' patch x patch crops, `stride` pixels apart (default:
        `patch`, non-overlapping): (h, w, D) for one image, (B, h, w, D) for several of one size. Where the size
        is not covered exactly, one more row or column of cells lies flush with the far edge (the whole image is
        covered)."""
        images = images_to_tensor(reference, "reference")
        patch = patch or self.tile_size
        stride = stride or patch
        batch, channels, height, width = images.shape
        if min(height, width) < patch:
            raise ArgumentError(f"reference: {height}x{width} is smaller than one patch ({patch}); give an image at least {patch} pixels on each side.")
        ys, xs = tile_starts(height, patch, stride), tile_starts(width, patch, stride)
        crops = torch.stack([images[:, :, y : y + patch, x : x + patch] for y in ys for x in xs], dim=1)  # (B, cells, C, p, p)
        grid = self.embedder.embed_images(crops.reshape(-1, channels, patch, patch)).reshape(batch, len(ys), len(xs), -1)
        return grid[0] if batch == 1 else grid

    def check_grid(self, grid) -> torch.Tensor:
        if not isinstance(grid, torch.Tensor) or grid.ndim not in (3, 4):
            raise ArgumentError(
                f"embedding_grid: expected an (h, w, D={self.embedding_width}) or (B, h, w, D) tensor, got {tuple(getattr(grid, 'shape', ())) or type(grid).__name__}."
            )
        if grid.shape[-1] != self.embedding_width:
            raise ArgumentError(
                f"embedding_grid: width {grid.shape[-1]} does not match the model's {self.embedding_width}; embed with the encoder the model was trained on."
            )
        if not torch.isfinite(grid).all():
            raise ArgumentError("embedding_grid: contains NaN or infinite values.")
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
        grid_stride: int | None = None,
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
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006  (diffusers' signature)
    ):
        """Generate num_images images of height x width per reference image or embedding grid (default size:
        the reference's, or the grid's extent). overlap (pixels, default a quarter tile) must be smaller than a tile.
        The grid's cells are patch_size x patch_size crops (default: one tile) whose corners lie grid_stride pixels
        apart: for a reference the default is the tiles' own stride (tile - overlap), so each tile is conditioned on
        the reference's embedding at its own position; for an embedding_grid it is patch_size (non-overlapping
        cells, as the text -> grid model makes them). tile_batch_size caps the tile rows per backbone call (None:
        picked from free memory); interpolation ("slerp" or "bilinear") mixes the grid's embeddings for tiles
        that fall between cells."""
        guidance_scale, num_inference_steps = self.sampling_defaults(guidance_scale, num_inference_steps)
        hooks = self.check_common(num_inference_steps, output_type, hooks, guidance_scale)
        if (reference is None) == (embedding_grid is None):
            raise ArgumentError("reference, embedding_grid: pass exactly one of them.")
        tile, factor = self.tile_size, self.vae_scale_factor
        patch = require_int(patch_size, "patch_size", minimum=1, optional=True) or tile
        overlap = tile // 4 if overlap is None else require_int(overlap, "overlap", minimum=0, maximum=tile - 1)
        if overlap % factor:
            raise ArgumentError(f"overlap: must be a multiple of the VAE factor {factor}, got {overlap}.")
        stride = require_int(grid_stride, "grid_stride", minimum=1, maximum=patch, optional=True) or (
            min(tile - overlap, patch) if reference is not None else patch
        )
        require_choice(blend, "blend", BLENDS)
        require_choice(interpolation, "interpolation", INTERPOLATIONS)
        require_int(num_images, "num_images", minimum=1)
        require_int(tile_batch_size, "tile_batch_size", minimum=1, optional=True)
        height = require_int(height, "height", minimum=1, optional=True)
        width = require_int(width, "width", minimum=1, optional=True)
        if reference is not None:
            reference = images_to_tensor(reference, "reference")
            if min(reference.shape[2:]) < tile:
                raise ArgumentError(
                    f"reference: {tuple(reference.shape[2:])} is smaller than one tile ({tile}); give an image at least {tile} pixels on each side."
                )
        grid = self.embed_grid(reference, patch, stride) if reference is not None else self.check_grid(embedding_grid)
        grids = grid if grid.ndim == 4 else grid[None]
        if reference is not None:  # the reference's own size, up to the VAE factor; cells where they were cut
            height = height or -(-reference.shape[2] // factor) * factor
            width = width or -(-reference.shape[3] // factor) * factor
            starts = [tile_starts(size, patch, stride) for size in reference.shape[2:]]
        else:
            starts = [[i * stride for i in range(cells)] for cells in grids.shape[1:3]]
        height = height or (grids.shape[1] - 1) * stride + patch
        width = width or (grids.shape[2] - 1) * stride + patch
        cell_centres = tuple(torch.tensor(s, dtype=torch.float32).add(patch / 2).div(factor) for s in starts)
        for name, size in (("height", height), ("width", width)):
            if size < tile:
                raise ArgumentError(f"{name}: {size} is smaller than one tile ({tile}).")
            if size % factor:
                raise ArgumentError(f"{name}: must be a multiple of the VAE factor {factor}, got {size}.")
        denoiser = TiledDenoiser(
            Denoiser(self.backbone, self.scheduler),
            tile // factor,
            overlap // factor,
            tile_batch_size,
            cell_centres=cell_centres,
            blend=blend,
            interpolation=interpolation,
        )
        device, dtype = self._execution_device, self.backbone.dtype
        grid_batch = grids.permute(0, 3, 1, 2).repeat_interleave(num_images, dim=0).to(device, dtype)
        # The canvas stays float32 whatever the model's dtype (tiles are cast on the way in): the scheduler draws
        # each step's noise in the canvas's dtype, and a CPU generator (the usual one) took 1.5 s per 4096x4096
        # draw in float16 on the H100 host, more than the model's whole step there.
        latents = self.prepare_latents(len(grid_batch), height, width, generator, latents, dtype=torch.float32)
        tiles = len(denoiser.positions(height // factor, width // factor))
        return self.generate(
            latents,
            {"embedding_grid": grid_batch},
            {"embedding_grid": torch.zeros_like(grid_batch)},
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            generator=generator,
            eta=eta,
            hooks=hooks,
            trace=trace,
            output_type=output_type,
            return_dict=return_dict,
            denoiser=denoiser,
            output_class=LargeImagePipelineOutput,
            grid=grid,
            tiles=tiles,
            timesteps=timesteps,
            sigmas=sigmas,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
