"""`gen demo`: the main job on the bundled zoo, offline, in a few CPU minutes.

Writes into the output folder: PNG grids and strips, and report.md with every number. Sections:
class-conditional digits; value guidance (target digit, JPEG compressibility); embedding-conditioned
generation (a retina reference regenerated at 384x384 from its embedding grid, beside it and measured; variations; text ->
large image); condition annealing (CADS); diversity distillation (base / distilled / hybrid, DT strips).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image

from gen.io import save_image, write_text


def grid_image(images: torch.Tensor, columns: int, scale: int = 1, gap: int = 2) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one picture, `columns` per row."""
    n, c, h, w = images.shape
    rows = (n + columns - 1) // columns
    canvas = torch.ones(c, rows * (h + gap) - gap, columns * (w + gap) - gap)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        canvas[:, r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = image.float().cpu()
    array = (canvas.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    picture = Image.fromarray(array[..., 0] if c == 1 else array)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture


class Report:
    def __init__(self, out: Path):
        self.out, self.lines, self.started = out, ["# gen demo", ""], time.perf_counter()

    def section(self, title: str, text: str = "") -> None:
        self.lines += ["", f"## {title}", ""] + ([text, ""] if text else [])

    def image(self, name: str, picture: Image.Image, caption: str) -> None:
        save_image(self.out / name, picture)
        self.lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]

    def table(self, header: list[str], rows: list[list]) -> None:
        fmt = lambda v: (str(int(v)) if float(v).is_integer() and abs(v) >= 1 else f"{v:.3f}") if isinstance(v, float) else str(v)
        self.lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
        self.lines.append("")

    def finish(self) -> Path:
        self.lines += ["", f"Total demo time: {time.perf_counter() - self.started:.1f} s on {torch.get_num_threads()} CPU threads."]
        return write_text(self.out / "report.md", "\n".join(self.lines) + "\n")


def _digits(report: Report, quick: bool):
    from diffusers import DDIMScheduler

    import gen.zoo as zoo
    from gen.analysis.metrics import FeatureSpace, frechet_distance, mean_pairwise_distance
    from gen.data import digits

    pipe, classifier = zoo.load("digits"), zoo.load("digits-classifier")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    space = FeatureSpace(classifier)
    per_class = 4 if quick else 8
    labels = torch.arange(10).repeat_interleave(per_class)
    out = pipe(class_labels=labels, num_inference_steps=25, generator=torch.Generator().manual_seed(0), output_type="pt")
    real = (digits(16, "test").images + 1) / 2
    accuracy = (space.predict(out.images) == labels).float().mean().item()
    fd = frechet_distance(space.features(out.images), space.features(real))
    noise = torch.rand(out.images.shape, generator=torch.Generator().manual_seed(0))
    noise_fd = frechet_distance(space.features(noise), space.features(real))
    report.section("Class-conditional digits", "The zoo `digits` model (16x16, trained here on scikit-learn's digits), DDIM 25 steps, no guidance.")
    report.image("digits.png", grid_image(out.images, per_class, scale=3), "one row per class 0-9")
    report.table(
        ["classified as their class", "Fréchet distance to held-out digits", "same, for uniform noise", "diversity (mean pairwise distance)", "NFE per sample"],
        [[accuracy, fd, noise_fd, mean_pairwise_distance(space.features(out.images)), out.nfe]],
    )
    report.lines.append("Distances are in the digits classifier's 64-d feature space (not Inception FID).")
    return pipe, classifier, space


def _value_guidance(report: Report, pipe, classifier, space, quick: bool):

    import gen.zoo as zoo
    from gen.guidance import SVDD, PosteriorMeanValue, classifier_log_prob, jpeg_compressibility
    from gen.data.tissue import random_patches

    n = 8 if quick else 16
    reward = classifier_log_prob(classifier, 3)
    kwargs = dict(batch_size=n, num_inference_steps=20, eta=1.0, output_type="pt")
    plain = pipe(generator=torch.Generator().manual_seed(1), **kwargs)
    guided = pipe(generator=torch.Generator().manual_seed(1), hooks=[SVDD(PosteriorMeanValue(reward), num_candidates=4)], **kwargs)
    report.section(
        "Value guidance without gradients (SVDD-PM)",
        "Class-unconditional digits steered toward a 3 by the classifier's log-probability, same seeds: top plain, bottom SVDD-PM (M = 4, arg-max).",
    )
    report.image("svdd_digits.png", grid_image(torch.cat([plain.images, guided.images]), n, scale=3), "top: plain; bottom: SVDD-PM toward 3")
    rate = lambda images: (space.predict(images) == 3).float().mean().item()
    rows = [["plain", reward(plain.images).mean().item(), rate(plain.images), plain.nfe, plain.reward_calls],
            ["SVDD-PM M=4", reward(guided.images).mean().item(), rate(guided.images), guided.nfe, guided.reward_calls]]
    report.table(["", "mean log p(3|x)", "classified as 3", "NFE per sample", "reward calls per sample"], rows)

    patches = zoo.load("ihc-patches")  # its own DDPMScheduler: stochastic, so SVDD has candidates
    g = torch.Generator().manual_seed(2)
    real = torch.cat([random_patches("ihc", n // 2, 32, g), random_patches("retina", n - n // 2, 32, g)])
    embeddings = patches.embed(real)
    jpeg = jpeg_compressibility()
    kwargs = dict(embeddings=embeddings, num_inference_steps=20, output_type="pt")
    plain = patches(generator=torch.Generator().manual_seed(3), **kwargs)
    guided = patches(generator=torch.Generator().manual_seed(3), hooks=[SVDD(PosteriorMeanValue(jpeg), num_candidates=4)], **kwargs)
    report.lines.append("JPEG compressibility (a non-differentiable reward: negative kB at quality 95) on IHC/retina patches conditioned on real patches' embeddings:")
    report.lines.append("")
    report.image("svdd_jpeg.png", grid_image(torch.cat([real, plain.images, guided.images]), n, scale=3), "top: real patches; middle: plain; bottom: SVDD-PM toward smaller JPEGs")
    report.table(["", "mean reward (-kB)", "NFE per sample"], [["plain", jpeg(plain.images).mean().item(), plain.nfe], ["SVDD-PM M=4", jpeg(guided.images).mean().item(), guided.nfe]])
    return patches


def _embeddings(report: Report, patches, quick: bool):
    import gen.zoo as zoo
    from gen.analysis import fidelity
    from gen.pipelines import LargeImagePipeline, TextToLargeImagePipeline
    from gen.data.tissue import random_patches, reference_image

    large = LargeImagePipeline.from_pipe(patches)  # the model's saved sampler, steps and guidance
    large.set_progress_bar_config(disable=False, desc="large image")
    size = 256 if quick else 384
    reference = reference_image("retina", size)[None]
    start = time.perf_counter()
    overlap = large.tile_size // 4
    out = large(reference=reference, overlap=overlap, generator=torch.Generator().manual_seed(4), output_type="pt")
    seconds = time.perf_counter() - start
    guidance, steps = large.sampling_defaults(None, None)
    report.section(
        "Embedding-conditioned generation (Graikos et al. 2024)",
        f"A retina reference ({size}x{size}) embedded by the zoo patch encoder at every tile position (32-pixel crops {large.tile_size - overlap} pixels apart), "
        f"and the image regenerated from those embeddings alone by the 32x32 `ihc-patches` model with its saved defaults ({type(large.scheduler).__name__}, {steps} steps, "
        f"guidance {guidance:g}): {out.tiles} overlapping tiles fused at every step (overlap {overlap} px, cosine-weighted).",
    )
    difference = (out.images - reference).abs()
    report.image("large_reference_vs_regenerated.png", grid_image(torch.cat([reference, out.images, difference]), 3, gap=8),
                 f"reference | regenerated from its {tuple(out.grid.shape)} embedding grid | absolute difference")
    report.table(["output", "grid", "tiles", "NFE (tile evaluations) per image", "seconds"], [[f"{size}x{size}", "x".join(map(str, out.grid.shape)), out.tiles, out.nfe, seconds]])
    report.lines.append("How much the regenerated image looks like its reference (gen.analysis.fidelity; benchmarks/large_image_fidelity.py measures them over seeds and sizes):")
    report.lines.append("")
    report.table(
        ["re-embedded patch cosine, non-overlapping 32-px patches (target >= 0.90)", "background brightness gap (<= 0.05)", "Frangi vesselness correlation in the fundus (>= 0.4)", "seam strength (<= 1.1)"],
        [[fidelity.patch_cosine(large.embedder, out.images, large.embed_grid(reference)).mean().item(), fidelity.background_gap(reference, out.images),
          fidelity.vesselness_correlation(reference, out.images), fidelity.seam_strength(out.images, large.tile_size, large.tile_size - overlap)]],
    )

    g = torch.Generator().manual_seed(5)
    real = torch.cat([random_patches("ihc", 3, 32, g), random_patches("retina", 3, 32, g)])
    variations = patches(images=real, num_images_per_embedding=4, num_inference_steps=20, guidance_scale=2.0, generator=torch.Generator().manual_seed(6), output_type="pt")
    rows = torch.cat([torch.cat([real[i : i + 1], variations.images[4 * i : 4 * i + 4]]) for i in range(len(real))])
    report.image("variations.png", grid_image(rows, 5, scale=3), "each row: a real patch, then four variations generated from its embedding (guidance 2)")

    text = TextToLargeImagePipeline(zoo.load("ihc-text-grid"), large)
    for name, prompt in (("text_to_large_retina.png", "retina fundus photograph"), ("text_to_large_ihc.png", "immunohistochemistry stained tissue")):
        sampled = text(prompt, grid_size=8, grid_steps=25, grid_guidance_scale=4.0, overlap=overlap, generator=torch.Generator().manual_seed(7), output_type="pt")
        report.image(name, grid_image(sampled.images, 1), f'text -> 8x8 embedding grid (guidance 4) -> 256x256 image: "{prompt}"')


def _cads(report: Report, pipe, space, quick: bool):
    from gen.analysis.metrics import mean_pairwise_distance
    from gen.conditioning import CADS

    n = 16 if quick else 32
    kwargs = dict(class_labels=[4] * n, guidance_scale=6.0, num_inference_steps=25, output_type="pt")
    plain = pipe(generator=torch.Generator().manual_seed(8), **kwargs)
    annealed = pipe(generator=torch.Generator().manual_seed(8), hooks=[CADS(noise_scale=0.5)], **kwargs)
    report.section("Condition annealing (CADS) at high guidance", "Class 4 at guidance 6, same seeds: top plain, bottom with CADS (tau1 0.6, tau2 0.9, s 0.5).")
    report.image("cads.png", grid_image(torch.cat([plain.images[:16], annealed.images[:16]]), 16, scale=3), "top: plain CFG 6; bottom: CADS")
    rate = lambda images: (space.predict(images) == 4).float().mean().item()
    report.table(["", "diversity", "classified as 4"], [["CFG 6", mean_pairwise_distance(space.features(plain.images)), rate(plain.images)],
                                                       ["CFG 6 + CADS", mean_pairwise_distance(space.features(annealed.images)), rate(annealed.images)]])


def _distillation(report: Report, pipe, space, quick: bool):
    import gen.zoo as zoo
    from gen.analysis import DTVisualizer
    from gen.analysis.metrics import mean_pairwise_distance
    from gen.pipelines import HybridDistilledPipeline

    distilled = zoo.load("digits-distilled")
    hybrid = HybridDistilledPipeline(pipe, distilled, base_steps=1, distilled_steps=4)
    n = 16 if quick else 32
    label = [7] * n
    runs = {}
    strips = {}
    for name, call in (
        ("base (DDIM 25 steps, CFG 2)", lambda hooks: pipe(class_labels=label, guidance_scale=2.0, num_inference_steps=25, hooks=hooks, generator=torch.Generator().manual_seed(9), output_type="pt")),
        ("distilled (4 steps)", lambda hooks: distilled(class_labels=label, num_inference_steps=4, hooks=hooks, generator=torch.Generator().manual_seed(9), output_type="pt")),
        ("hybrid (1 base step, then distilled)", lambda hooks: hybrid(class_labels=label, guidance_scale=2.0, base_steps=1, distilled_steps=4, hooks=hooks, generator=torch.Generator().manual_seed(9), output_type="pt")),
    ):
        viz = DTVisualizer(max_samples=4)
        start = time.perf_counter()
        out = call([viz])
        runs[name] = (out, time.perf_counter() - start)
        strips[name] = viz
    report.section(
        "Diversity distillation (Gandikota & Bau 2025)",
        "Class 7, same seeds. Rows: base, distilled (consistency-distilled, guidance 2 baked in), hybrid (the base model takes the first "
        "step of the same 4-step grid, the distilled model the rest). Diversity: mean pairwise distance in the classifier's feature space.",
    )
    report.image("distillation.png", grid_image(torch.cat([o.images[:16] for o, _ in runs.values()]), 16, scale=3), "top: base; middle: distilled; bottom: hybrid")
    report.table(["", "diversity", "NFE per sample", "seconds"], [[name, mean_pairwise_distance(space.features(o.images)), o.nfe, s] for name, (o, s) in runs.items()])
    for i, (name, viz) in enumerate(strips.items()):
        report.image(f"dt_strip_{i}.png", viz.strip(scale=8, gap=2), f"DT-visualization, {name}: x0 prediction at each step (columns)")


def run_demo(out: str | Path = "out/demo", quick: bool = False) -> Path:
    """Run every section; returns the path of report.md."""
    import transformers

    from gen.io import check_output_dir, mark_output_dir, release_output_dir

    transformers.logging.set_verbosity_error()
    out = Path(out)
    check_output_dir(out, "demo", overwrite=True, name="out")  # a rerun replaces its own pictures, never a folder of other files
    mark_output_dir(out, "demo", overwrite=True, name="out")
    try:
        return _run_sections(out, quick)
    finally:
        release_output_dir(out)


def _run_sections(out: Path, quick: bool) -> Path:
    report = Report(out)
    pipe, classifier, space = _digits(report, quick)
    patches = _value_guidance(report, pipe, classifier, space, quick)
    _embeddings(report, patches, quick)
    _cads(report, pipe, space, quick)
    _distillation(report, pipe, space, quick)
    path = report.finish()
    print(f"wrote {path}")
    return path
