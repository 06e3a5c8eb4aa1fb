"""Large images regenerated from their own embedding grids: do they look like the reference?

    python -m benchmarks.large_image_fidelity [--sizes 512 1024] [--seeds 0 1 2] [--images ihc retina] [--no-text] [--overlap PX]
        [--grid-stride PX] [--out DIR]

For each image (scikit-image's IHC and retina) and size, the reference (resized to size x size) is
regenerated from its own embeddings by `LargeImagePipeline` over the zoo `ihc-patches` model with the
pipeline's default settings (its saved scheduler, steps and guidance; the reference embedded by the zoo
patch encoder at every tile position), for each seed; `--grid-stride 32` embeds it on non-overlapping 32-px
cells instead, between which tiles mix their neighbours' embeddings. The measures (gen.analysis.fidelity),
each with a 95% interval over seeds:

- patch cosine: the output's non-overlapping 32-px patches re-embedded vs the reference's (target mean
  >= 0.90); the same for the embeddings shuffled among the cells (first seed only) shows what the
  conditioning buys;
- background gap: output minus reference brightness where the reference is black (target <= 0.05);
- vesselness correlation of the Frangi maps inside the fundus (retina; target >= 0.4);
- patch Fréchet distance in the patch encoder's representation vs the reference's own patches, with the
  real-vs-real floor: the reference's left half vs its right half;
- seam strength: gradient on tile borders over the interior (target <= 1.1).

And text -> embeddings -> large image (zoo `ihc-text-grid` + `ihc-patches`, 8x8 grids, 256x256): images
from "retina fundus photograph" and "immunohistochemistry stained tissue" are told apart when each 32-px
patch's nearest real patch (patch-encoder space, both images at every trained size) comes from the named
source (target >= 0.90 of patches).

Writes large_image_fidelity.json and, per image and size, a reference | output | difference PNG.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import add_output_argument, interval, pyplot, save
from gen.analysis import fidelity

TARGETS = {"patch_cosine": (">=", 0.90), "background_gap": ("<=", 0.05), "vesselness_correlation": (">=", 0.4), "seam_strength": ("<=", 1.1)}


def regenerate(pipe, reference: torch.Tensor, seed: int, overlap: int, grid_stride: int | None = None, shuffle: bool = False) -> tuple[torch.Tensor, float]:
    """The reference regenerated from its own embeddings, or (shuffle) from them shuffled among the cells."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    if shuffle:
        stride = grid_stride or pipe.tile_size - overlap  # the pipeline's default for a reference: one cell per tile
        grid = pipe.embed_grid(reference, stride=stride)
        flat = grid.reshape(-1, grid.shape[-1])
        shuffled = flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))].reshape(grid.shape)
        out = pipe(
            embedding_grid=shuffled,
            grid_stride=stride,
            overlap=overlap,
            height=reference.shape[2],
            width=reference.shape[3],
            generator=generator,
            output_type="pt",
        )
    else:
        out = pipe(reference=reference, grid_stride=grid_stride, overlap=overlap, generator=generator, output_type="pt")
    return out.images.float().cpu(), time.perf_counter() - start


def measures(pipe, reference: torch.Tensor, output: torch.Tensor, grid: torch.Tensor, overlap: int) -> dict:
    encoder = pipe.embedder
    row = {
        "patch_cosine": fidelity.patch_cosine(encoder, output, grid).mean().item(),
        "background_gap": fidelity.background_gap(reference, output),
        "patch_frechet": fidelity.patch_frechet(encoder.represent, reference, output),
        "seam_strength": fidelity.seam_strength(output, pipe.tile_size, pipe.tile_size - overlap),
    }
    if fidelity.fundus_mask(reference).float().mean() > 0.2:
        row["vesselness_correlation"] = fidelity.vesselness_correlation(reference, output)
    return row


def real_floor(pipe, reference: torch.Tensor) -> float:
    """Fréchet distance between the reference's left and right halves: what real-vs-real gives."""

    half = reference.shape[3] // 2
    return fidelity.patch_frechet(pipe.embedder.represent, reference[..., :half], reference[..., half : 2 * half])


def side_by_side(reference: torch.Tensor, output: torch.Tensor):
    from gen.demo import grid_image

    difference = (output - reference).abs().clamp(0, 1)
    return grid_image(torch.cat([reference, output, difference]), 3, gap=8)


def summarise(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {}
    low, high = interval(values)
    return {"mean": sum(values) / len(values), "ci95": [low, high], "values": values}


PROMPTS = {"retina": "retina fundus photograph", "ihc": "immunohistochemistry stained tissue"}


def text_attribution(pipe, seeds: list[int]) -> dict:
    """Share of patches attributed to the prompt's source, per seed (both prompts in one call)."""
    import gen.zoo as zoo
    from gen.data.tissue import multiscale_patches
    from gen.pipelines import TextToLargeImagePipeline

    text = TextToLargeImagePipeline(zoo.load("ihc-text-grid"), pipe)
    crops, names = multiscale_patches(2000, 32, torch.Generator().manual_seed(11))
    bank, is_retina = pipe.embed(crops), torch.tensor([name == "retina" for name in names])
    shares = []
    for seed in seeds:
        out = text([PROMPTS["retina"], PROMPTS["ihc"]], grid_size=8, generator=torch.Generator().manual_seed(seed), output_type="pt")
        retina = fidelity.nearest_source(pipe.embedder, out.images[:1], bank, is_retina).float().mean().item()
        ihc = 1 - fidelity.nearest_source(pipe.embedder, out.images[1:], bank, is_retina).float().mean().item()
        shares.append((retina + ihc) / 2)
        print(f"text seed {seed}: retina prompt {retina:.3f}, ihc prompt {ihc:.3f} of patches from the named source", flush=True)
    summary = summarise(shares)
    summary.update(target=">= 0.9", met=bool(summary["mean"] >= 0.9))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", nargs="+", default=["ihc", "retina"], choices=["ihc", "retina"])
    parser.add_argument("--text", action=argparse.BooleanOptionalAction, default=True, help="also measure text -> large image attribution")
    parser.add_argument("--overlap", type=int, default=None, help="pixels shared by neighbouring tiles (default: the pipeline's, a quarter tile)")
    parser.add_argument("--grid-stride", type=int, default=None, help="pixels between embedded cells (default: the pipeline's, one per tile)")
    add_output_argument(parser)
    args = parser.parse_args(argv)

    import gen.zoo as zoo
    from gen.data.tissue import reference_image
    from gen.io import save_image
    from gen.pipelines import LargeImagePipeline

    pipe = LargeImagePipeline.from_pipe(zoo.load("ihc-patches"))
    pipe.set_progress_bar_config(disable=True)
    overlap = pipe.tile_size // 4 if args.overlap is None else args.overlap
    defaults = {"scheduler": type(pipe.scheduler).__name__, **{k: pipe.config.get(k) for k in ("num_inference_steps", "guidance_scale")}}
    results = {"defaults": {**defaults, "overlap": overlap, "grid_stride": args.grid_stride or "one cell per tile"}, "runs": {}}
    for name in args.images:
        for size in args.sizes:
            reference = reference_image(name, size)[None]
            cells = pipe.embed_grid(reference)  # what the output's 32-px patches are compared with
            key = f"{name}-{size}"
            rows, shuffled_cosines, seconds = [], [], []
            for seed in args.seeds:
                output, took = regenerate(pipe, reference, seed, overlap, args.grid_stride)
                rows.append(measures(pipe, reference, output, cells, overlap))
                seconds.append(took)
                if seed == args.seeds[0]:  # the shuffled-grid contrast once per image and size: it costs a whole regeneration
                    shuffled_out, _ = regenerate(pipe, reference, seed, overlap, args.grid_stride, shuffle=True)
                    shuffled_cosines.append(fidelity.patch_cosine(pipe.embedder, shuffled_out, cells).mean().item())
                    save_image(args.out / f"large_image_fidelity_{key}.png", side_by_side(reference, output))
                print(f"{key} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items() if v is not None) + f" ({took:.0f} s)", flush=True)
            summary = {
                k: summarise([r.get(k) for r in rows]) for k in ("patch_cosine", "background_gap", "vesselness_correlation", "patch_frechet", "seam_strength")
            }
            summary = {k: v for k, v in summary.items() if v}
            summary["shuffled_grid_patch_cosine"] = shuffled_cosines[0]
            summary["real_vs_real_frechet"] = real_floor(pipe, reference)
            summary["seconds"] = summarise(seconds)
            for measure, (sense, target) in TARGETS.items():
                if measure in summary:
                    mean = summary[measure]["mean"]
                    summary[measure]["target"] = f"{sense} {target}"
                    summary[measure]["met"] = bool(mean >= target if sense == ">=" else mean <= target)
            results["runs"][key] = summary
    if args.text:
        results["text_attribution"] = text_attribution(pipe, args.seeds)
    plt = pyplot()
    keys = list(results["runs"])
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    for ax, measure in zip(axes, ("patch_cosine", "background_gap", "vesselness_correlation", "seam_strength")):
        shown = [k for k in keys if measure in results["runs"][k]]
        means = [results["runs"][k][measure]["mean"] for k in shown]
        errors = [
            [m - results["runs"][k][measure]["ci95"][0] for k, m in zip(shown, means)],
            [results["runs"][k][measure]["ci95"][1] - m for k, m in zip(shown, means)],
        ]
        ax.bar(range(len(shown)), means, yerr=errors, capsize=3)
        ax.axhline(TARGETS[measure][1], ls="--", color="gray", label=f"target {TARGETS[measure][0]} {TARGETS[measure][1]}")
        ax.set_xticks(range(len(shown)), shown, rotation=30, fontsize=8)
        ax.set_title(measure.replace("_", " "), fontsize=9)
        ax.legend(fontsize=7)
    save("large_image_fidelity", {"seeds": args.seeds, **results}, fig, out=args.out)
    return results


if __name__ == "__main__":
    main()
