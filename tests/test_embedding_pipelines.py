"""Embedding-conditioned pipelines on tiny random components: tiling mechanics and refusals."""

import pytest
import torch
from diffusers import DDIMScheduler

from gen import Denoiser
from gen import testing as tiny
from gen.embedders import CallableEmbedder, load_embedder
from gen.pipelines import EmbeddingToImagePipeline, LargeImagePipeline
from gen.core.tiling import TiledDenoiser, fractional_index, tile_starts
from gen.training.models import Architecture, build_backbone

WIDTH = 12


def mean_colour(images):
    return images.mean(dim=(2, 3)).repeat(1, 4)  # (B, 12)


@pytest.fixture
def large():
    torch.manual_seed(0)
    unet = build_backbone(
        "unet",
        "embedding",
        sample_size=16,
        channels=3,
        condition_width=WIDTH,
        arch=Architecture(block_out_channels=(8, 16), attention_levels=(1,), layers_per_block=1, attention_head_dim=4, cross_attention_dim=8),
    ).eval()
    pipe = LargeImagePipeline(scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False), unet=unet, embedder="unused")
    pipe.set_embedder(CallableEmbedder(mean_colour))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_tile_starts_cover_the_canvas_with_the_last_tile_flush():
    assert tile_starts(40, 16, 12) == [0, 12, 24]
    assert tile_starts(41, 16, 12) == [0, 12, 24, 25]
    assert tile_starts(16, 16, 12) == [0]
    for length in range(16, 80):
        starts = tile_starts(length, 16, 10)
        covered = set()
        for s in starts:
            covered |= set(range(s, s + 16))
        assert covered == set(range(length)) and starts[-1] == length - 16


def test_one_tile_canvas_equals_the_inner_denoiser(large):
    inner = Denoiser(large.unet, large.scheduler)
    tiled = TiledDenoiser(inner, tile=16, overlap=4)
    x = torch.randn(2, 3, 16, 16)
    emb = torch.randn(2, WIDTH)
    grid = emb[:, :, None, None]
    with torch.no_grad():
        a = tiled(x, torch.tensor(50), cond={"embedding_grid": grid}).output
        b = inner(x, torch.tensor(50), cond={"encoder_hidden_states": emb[:, None]}).output
    assert torch.allclose(a, b, atol=1e-6)


def test_from_pipe_carries_the_backbone_and_embedder_over(large):
    small = EmbeddingToImagePipeline(scheduler=large.scheduler, unet=large.unet, embedder="zoo:patch-encoder")
    moved = LargeImagePipeline.from_pipe(small)
    assert isinstance(moved, LargeImagePipeline) and moved.unet is small.unet and moved.transformer is None
    assert moved.config.embedder == "zoo:patch-encoder"


def test_from_pipe_keeps_a_half_precision_source_in_its_dtype():
    source = tiny.embedding_pipeline().to(torch.bfloat16)
    moved = LargeImagePipeline.from_pipe(source)
    assert moved.unet.dtype == torch.bfloat16 and source.unet.dtype == torch.bfloat16  # stock would upcast both (shared modules)
    assert LargeImagePipeline.from_pipe(source, dtype=torch.float32).unet.dtype == torch.float32  # an explicit dtype is honoured


def test_a_half_precision_large_image_keeps_its_canvas_in_float32():
    pipe = tiny.embedding_pipeline(LargeImagePipeline).to(torch.bfloat16)
    seen = {"canvas": set(), "tiles": set()}
    pipe.unet.register_forward_pre_hook(lambda module, args: seen["tiles"].add(args[0].dtype))

    def record(p, i, t, tensors):
        seen["canvas"].add(tensors["latents"].dtype)
        return tensors

    out = pipe(
        embedding_grid=torch.randn(2, 3, WIDTH),
        overlap=4,
        num_inference_steps=2,
        eta=1.0,
        output_type="pt",
        callback_on_step_end=record,
        generator=torch.Generator().manual_seed(0),
    )
    assert seen == {"canvas": {torch.float32}, "tiles": {torch.bfloat16}} and torch.isfinite(out.images).all()


def test_large_image_from_a_grid_returns_image_grid_and_tile_count(large):
    grid = torch.randn(3, 5, WIDTH)
    out = large(embedding_grid=grid, overlap=4, num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 3, 48, 80)
    assert torch.equal(out.grid, grid) and out.tiles == len(tile_starts(48, 16, 12)) * len(tile_starts(80, 16, 12))
    assert out.nfe == 2 * out.tiles
    again = large(embedding_grid=grid, overlap=4, num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.images, again.images)


def test_large_image_memory_is_bounded_by_the_tile_batch(large, count_calls):
    calls = count_calls(large.unet)
    out = large(embedding_grid=torch.randn(4, 4, WIDTH), overlap=4, tile_batch_size=5, num_inference_steps=1, output_type="pt")
    assert calls.calls == -(-out.tiles // 5)


def test_reference_is_embedded_on_a_patch_grid_covering_all_of_it(large):
    reference = torch.rand(1, 3, 40, 70)
    grid = large.embed_grid(reference)
    assert grid.shape == (3, 5, WIDTH)  # 40x70 is not a multiple of 16: the last row and column cover the edges
    assert torch.allclose(grid[1, 2], mean_colour(reference[:, :, 16:32, 32:48])[0])
    assert torch.allclose(grid[2, 4], mean_colour(reference[:, :, 24:40, 54:70])[0])


def test_a_reference_of_any_size_gives_an_image_of_its_size_and_a_batch_one_image_each(large):
    out = large(reference=torch.rand(2, 3, 40, 70), overlap=4, num_inference_steps=1, output_type="pt", generator=torch.Generator().manual_seed(0))
    rows, cols = len(tile_starts(40, 16, 12)), len(tile_starts(70, 16, 12))
    assert out.images.shape == (2, 3, 40, 70) and out.grid.shape == (2, rows, cols, WIDTH) and out.tiles == rows * cols


def test_a_reference_conditions_every_tile_on_its_own_crop_of_it(large):
    reference = torch.rand(1, 3, 40, 70)
    seen = []
    handle = large.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"][:, 0]), with_kwargs=True)
    try:
        large(reference=reference, overlap=4, num_inference_steps=1, guidance_scale=1.0, tile_batch_size=1000, output_type="pt")
    finally:
        handle.remove()
    corners = [(y, x) for y in tile_starts(40, 16, 12) for x in tile_starts(70, 16, 12)]
    expected = torch.cat([mean_colour(reference[:, :, y : y + 16, x : x + 16]) for y, x in corners])
    assert len(seen) == 1 and torch.allclose(seen[0], expected, atol=1e-5)


def test_a_grid_and_its_stride_give_back_what_the_reference_gave(large):
    reference = torch.rand(1, 3, 40, 64)  # covered exactly by 16-pixel tiles 12 apart
    kwargs = dict(overlap=4, num_inference_steps=2, output_type="pt")
    own = large(reference=reference, generator=torch.Generator().manual_seed(0), **kwargs)
    again = large(embedding_grid=own.grid, grid_stride=12, generator=torch.Generator().manual_seed(0), **kwargs)
    assert again.images.shape == own.images.shape and torch.allclose(again.images, own.images, atol=1e-6)
    coarse = large(reference=reference, grid_stride=16, generator=torch.Generator().manual_seed(0), **kwargs)
    assert coarse.grid.shape == (3, 4, WIDTH) and not torch.allclose(coarse.images, own.images, atol=1e-3)


def test_tiles_between_unevenly_spaced_cells_mix_them_by_distance():
    centres = torch.tensor([16.0, 40.0, 54.0])  # the last cell flush with the edge, closer to its neighbour
    positions = torch.tensor([0.0, 16.0, 28.0, 40.0, 47.0, 54.0, 60.0])
    assert torch.allclose(fractional_index(positions, centres), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0]))
    assert torch.equal(fractional_index(positions, torch.tensor([8.0])), torch.zeros(7))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(embedding_grid=torch.randn(3, 3, WIDTH + 1)), r"embedding_grid: width 13 does not match the model's 12"),
        (dict(embedding_grid=torch.full((3, 3, WIDTH), float("nan"))), r"embedding_grid: contains NaN"),
        (dict(reference=torch.rand(1, 3, 10, 40)), r"reference: .* is smaller than one tile \(16\)"),
        (dict(embedding_grid=torch.randn(3, 3, WIDTH), overlap=16), r"overlap: must be in \[0, 15\]"),
        (dict(embedding_grid=torch.randn(3, 3, WIDTH), height=8), r"height: 8 is smaller than one tile"),
        (dict(reference=torch.rand(1, 3, 40, 40), grid_stride=17), r"grid_stride: must be in \[1, 16\]"),
        (dict(), r"reference, embedding_grid: pass exactly one"),
        (dict(embedding_grid=torch.randn(3, WIDTH)), r"embedding_grid: expected an \(h, w, D=12\) or \(B, h, w, D\) tensor"),
    ],
)
def test_bad_large_image_input_is_refused_before_any_model_call(large, count_calls, kwargs, pattern):
    calls = count_calls(large.unet)
    with pytest.raises(ValueError, match=pattern):
        large(num_inference_steps=2, **kwargs)
    assert calls.calls == 0


def test_embedder_and_model_width_mismatch(large, count_calls):
    calls = count_calls(large.unet)
    with pytest.raises(ValueError, match=r"embedder: produces width 6 but the model was trained on width 12"):
        large.set_embedder(CallableEmbedder(lambda im: im.mean(dim=(2, 3)).repeat(1, 2)))
    pipe = EmbeddingToImagePipeline(scheduler=large.scheduler, unet=large.unet)
    with pytest.raises(ValueError, match=r"embeddings: width 5 does not match the model's 12"):
        pipe(embeddings=torch.randn(2, 5), num_inference_steps=2)
    with pytest.raises(ValueError, match=r"embeddings: contains NaN"):
        pipe(embeddings=torch.full((2, WIDTH), float("nan")), num_inference_steps=2)
    assert calls.calls == 0


def test_transformers_image_encoder_loads_offline_from_a_local_folder(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8)).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    for pooling in ("cls", "mean", "pooled"):
        embedder = load_embedder(str(tmp_path), pooling=pooling)
        out = embedder.embed_images(torch.rand(3, 3, 48, 48))
        assert out.shape == (3, 16) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"pooling: one of"):
        load_embedder(str(tmp_path), pooling="max")
