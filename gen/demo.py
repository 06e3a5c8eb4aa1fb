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

from gen.analysis.metrics import within_class_diversity
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


def labelled(picture: Image.Image, labels: list[str], columns: int, gap: int = 2, scale: int = 1) -> Image.Image:
    """A `grid_image` picture with a line of text under every cell (row-major, as the cells)."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    rows = (len(labels) + columns - 1) // columns
    cell_w = (picture.width - (columns - 1) * gap * scale) // columns
    cell_h = (picture.height - (rows - 1) * gap * scale) // rows
    band = 14
    out = Image.new(picture.mode, (picture.width, picture.height + rows * band), "white" if picture.mode == "RGB" else 255)
    draw = ImageDraw.Draw(out)
    for r in range(rows):
        top = r * (cell_h + gap * scale)
        out.paste(picture.crop((0, top, picture.width, top + cell_h)), (0, top + r * band))
        for k in range(columns):
            i = r * columns + k
            if i < len(labels):
                draw.text((k * (cell_w + gap * scale) + 1, top + r * band + cell_h + 1), labels[i], fill="black" if picture.mode == "RGB" else 0, font=font)
    return out


SEEDS = (0, 1, 2)  # every number in the report is a mean over these, with its 95% interval


def stat(values) -> str:
    """'mean (low to high)' over seeds: the 95% Student-t interval of the mean."""
    from gen.analysis.metrics import interval

    values = [float(v) for v in values]
    low, high = interval(values)
    return f"{sum(values) / len(values):.3f} ({low:.3f} to {high:.3f})"


def holds(differences, claim: str, better: str = "higher", at_least: bool = False) -> str:
    """One sentence: whether a paired effect over seeds lies, with its 95% interval, on the claimed side of zero
    (`at_least`: the claim is "no worse", which holds unless the whole interval lies on the wrong side)."""
    from gen.analysis.metrics import interval

    differences = [float(d) for d in differences]
    low, high = interval(differences)
    mean = sum(differences) / len(differences)
    effect_low, effect_high = (low, high) if better == "higher" else (-high, -low)
    if effect_low > 0 or (at_least and effect_high >= 0):
        verdict = "**holds here**"
    elif effect_high < 0:
        verdict = "**does not hold here: the effect goes the other way**"
    else:
        verdict = "**not shown here: the interval includes zero**"
    return f"Claim: {claim}. {verdict} (paired difference over seeds {list(SEEDS)}: {mean:+.3f}, 95% interval {low:+.3f} to {high:+.3f})."


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
    from gen.analysis.metrics import FeatureSpace, frechet_distance
    from gen.data import digits

    pipe, classifier = zoo.load("digits"), zoo.load("digits-classifier")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    space = FeatureSpace(classifier)
    per_class = 2 if quick else 4
    labels = torch.arange(10).repeat_interleave(per_class)
    real = (digits(16, "test").images + 1) / 2
    runs = [pipe(class_labels=labels, num_inference_steps=25, generator=torch.Generator().manual_seed(seed), output_type="pt") for seed in SEEDS]
    accuracy = [(space.predict(o.images) == labels).float().mean().item() for o in runs]
    fd = [frechet_distance(space.features(o.images), space.features(real)) for o in runs]
    noise_fd = frechet_distance(space.features(torch.rand(runs[0].images.shape, generator=torch.Generator().manual_seed(0))), space.features(real))
    report.section(
        "Class-conditional digits",
        f"The zoo `digits` model (16x16, trained here on scikit-learn's digits), DDIM 25 steps, no guidance; {per_class} per class, seeds {list(SEEDS)}.",
    )
    report.image("digits.png", grid_image(runs[0].images, per_class, scale=3), "one row per class 0-9 (seed 0)")
    report.table(
        ["classified as their class", "Fréchet distance to held-out digits", "same, for uniform noise", "NFE per sample"],
        [[stat(accuracy), stat(fd), noise_fd, runs[0].nfe]],
    )
    report.lines.append("Distances are in the digits classifier's 64-d feature space (not Inception FID); values are means over seeds with 95% intervals.")
    return pipe, classifier, space


def _value_guidance(report: Report, pipe, classifier, space, quick: bool):
    import gen.zoo as zoo
    from gen.data.tissue import random_patches
    from gen.guidance import SVDD, PosteriorMeanValue, classifier_log_prob, jpeg_compressibility

    n = 4 if quick else 8
    reward = classifier_log_prob(classifier, 3)
    kwargs = dict(batch_size=n, num_inference_steps=20, eta=1.0, output_type="pt")
    pairs = [
        (
            pipe(generator=torch.Generator().manual_seed(10 + seed), **kwargs),
            pipe(generator=torch.Generator().manual_seed(10 + seed), hooks=[SVDD(PosteriorMeanValue(reward), num_candidates=4)], **kwargs),
        )
        for seed in SEEDS
    ]
    rate = lambda images: (space.predict(images) == 3).float().mean().item()
    plain_reward = [reward(p.images).mean().item() for p, _ in pairs]
    guided_reward = [reward(g.images).mean().item() for _, g in pairs]
    report.section(
        "Value guidance without gradients (SVDD-PM, Li et al. 2024)",
        f"Class-unconditional digits steered toward a 3 by the classifier's log-probability, same noise: top plain, bottom SVDD-PM (M = 4, arg-max); {n} per seed, seeds {list(SEEDS)}.",
    )
    plain, guided = pairs[0]
    report.image(
        "svdd_digits.png",
        labelled(
            grid_image(torch.cat([plain.images, guided.images]), n, scale=3),
            [f"{v:.1f}" for v in reward(torch.cat([plain.images, guided.images])).tolist()],
            n,
            scale=3,
        ),
        "top: plain; bottom: SVDD-PM toward 3 (seed 0); under each digit its log p(3|x)",
    )
    report.table(
        ["", "mean log p(3|x)", "classified as 3", "NFE per sample", "reward calls per sample"],
        [
            ["plain", stat(plain_reward), stat([rate(p.images) for p, _ in pairs]), plain.nfe, plain.reward_calls],
            ["SVDD-PM M=4", stat(guided_reward), stat([rate(g.images) for _, g in pairs]), guided.nfe, guided.reward_calls],
        ],
    )
    report.lines.append(
        holds([g - p for g, p in zip(guided_reward, plain_reward)], "value-guided decoding raises the reward over plain sampling of the same model")
    )
    report.lines.append("")

    patches = zoo.load("ihc-patches")  # its own DDPMScheduler: stochastic, so SVDD has candidates
    jpeg = jpeg_compressibility()
    rows, plain_kb, guided_kb = [], [], []
    for seed in SEEDS:
        g = torch.Generator().manual_seed(20 + seed)
        real = torch.cat([random_patches("ihc", n // 2, 32, g), random_patches("retina", n - n // 2, 32, g)])
        call = dict(embeddings=patches.embed(real), num_inference_steps=20, output_type="pt")
        plain = patches(generator=torch.Generator().manual_seed(30 + seed), **call)
        guided = patches(generator=torch.Generator().manual_seed(30 + seed), hooks=[SVDD(PosteriorMeanValue(jpeg), num_candidates=4)], **call)
        plain_kb.append(-jpeg(plain.images).mean().item())
        guided_kb.append(-jpeg(guided.images).mean().item())
        rows.append((real, plain, guided))
    real, plain, guided = rows[0]
    sizes = [f"{-v:.2f} kB" for v in jpeg(torch.cat([real, plain.images, guided.images])).tolist()]
    report.lines.append(
        f"JPEG size (a non-differentiable reward: the negative kB of each patch at quality 95) on IHC/retina patches conditioned on real patches' embeddings; {n} per seed:"
    )
    report.lines.append("")
    report.image(
        "svdd_jpeg.png",
        labelled(grid_image(torch.cat([real, plain.images, guided.images]), n, scale=3), sizes, n, scale=3),
        "top: real patches; middle: plain; bottom: SVDD-PM toward smaller JPEGs (seed 0); under each patch its JPEG size",
    )
    report.table(
        ["", "mean JPEG size (kB)", "NFE per sample", "reward calls per sample"],
        [["plain", stat(plain_kb), plain.nfe, plain.reward_calls], ["SVDD-PM M=4", stat(guided_kb), guided.nfe, guided.reward_calls]],
    )
    report.lines.append(
        holds([gk - pk for gk, pk in zip(guided_kb, plain_kb)], "SVDD-PM makes the patches compress better (smaller JPEGs) than plain sampling", better="lower")
    )
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
    report.image(
        "large_reference_vs_regenerated.png",
        grid_image(torch.cat([reference, out.images, difference]), 3, gap=8),
        f"reference | regenerated from its {tuple(out.grid.shape)} embedding grid | absolute difference",
    )
    report.table(
        ["output", "grid", "tiles", "NFE (tile evaluations) per image", "seconds"],
        [[f"{size}x{size}", "x".join(map(str, out.grid.shape)), out.tiles, out.nfe, seconds]],
    )
    report.lines.append("How much this regenerated image looks like its reference (gen.analysis.fidelity; one seed, the picture above):")
    report.lines.append("")
    report.table(
        [
            "re-embedded patch cosine, non-overlapping 32-px patches (target >= 0.90)",
            "background brightness gap (<= 0.05)",
            "Frangi vesselness correlation in the fundus (>= 0.4)",
            "seam strength (<= 1.1)",
        ],
        [
            [
                fidelity.patch_cosine(large.embedder, out.images, large.embed_grid(reference)).mean().item(),
                fidelity.background_gap(reference, out.images),
                fidelity.vesselness_correlation(reference, out.images),
                fidelity.seam_strength(out.images, large.tile_size, large.tile_size - overlap),
            ]
        ],
    )
    report.lines.append(
        "What is kept and what is not: the layout, the colours, the black surround, the optic disc and the macula come back; the vessels do not "
        "(they come out as red speckle in the right places). That is the embedding's limit, not the sampler's: replacing every 32-px cell by the "
        "real crop nearest in the encoder's embedding keeps vesselness at 0.11-0.13 (benchmarks/retrieval_ceiling.py), about what the model reaches. "
        "Claim (Graikos et al.): a large image generated from a grid of self-supervised embeddings follows its reference. **Holds here for layout "
        "and colour, not for fine vessels.**"
    )
    report.lines.append("")
    report.lines += _measured_fidelity()

    g = torch.Generator().manual_seed(5)
    real = torch.cat([random_patches("ihc", 3, 32, g), random_patches("retina", 3, 32, g)])
    variations = patches(
        images=real, num_images_per_embedding=4, num_inference_steps=20, guidance_scale=2.0, generator=torch.Generator().manual_seed(6), output_type="pt"
    )
    rows = torch.cat([torch.cat([real[i : i + 1], variations.images[4 * i : 4 * i + 4]]) for i in range(len(real))])
    report.image("variations.png", grid_image(rows, 5, scale=3), "each row: a real patch, then four variations generated from its embedding (guidance 2)")

    text = TextToLargeImagePipeline(zoo.load("ihc-text-grid"), large)
    rendered = [
        text(
            "retina fundus photograph",
            grid_size=8,
            grid_steps=25,
            grid_guidance_scale=4.0,
            overlap=overlap,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images
        for seed in (7, 8)
    ]
    report.image(
        "text_to_large_retina.png",
        grid_image(torch.cat(rendered), 2, gap=8),
        'text -> 8x8 embedding grid (guidance 4) -> 256x256 image: "retina fundus photograph" (seeds 7, 8)',
    )
    sampled = text(
        "immunohistochemistry stained tissue",
        grid_size=8,
        grid_steps=25,
        grid_guidance_scale=4.0,
        overlap=overlap,
        generator=torch.Generator().manual_seed(7),
        output_type="pt",
    )
    report.image(
        "text_to_large_ihc.png",
        grid_image(sampled.images, 1),
        'text -> 8x8 embedding grid (guidance 4) -> 256x256 image: "immunohistochemistry stained tissue" (seed 7)',
    )
    rim = {
        prompt: _rim_similarity(text, large, prompt, 8 if quick else 16)
        for prompt in ("retina fundus photograph", "retinal image with blood vessels", "immunohistochemistry stained tissue")
    }
    whole, count = rim["retina fundus photograph"]
    drawn = int((whole > 0.8).sum())
    verdict = "holds here" if drawn == len(whole) else f"holds for {drawn} of {len(whole)} grids"
    report.lines.append(
        "The grid model (`ihc-text-grid`) learned whole-fundus views (half of its retina grids: the fundus shrunk to the grid, mirrored) under "
        "\"retina fundus photograph\" / \"fundus photo of the eye\", and crops under the other captions. How much of the black surround its grids "
        "draw: the corner cells' embedding cosine to a black patch, mean over sampled grids (a whole view scores about 1): "
        f"**{whole.mean():.2f}** for \"retina fundus photograph\" ({drawn} of {count} grids above 0.8), {rim['retinal image with blood vessels'][0].mean():.2f} "
        f"for the crop caption \"retinal image with blood vessels\", {rim['immunohistochemistry stained tissue'][0].mean():.2f} for IHC. Claim (Graikos et al.): "
        f"text -> embeddings -> large image draws the named source. **Holds here for the source** (patches attributed to the named source: "
        f"{_measured_attribution()}); **the whole fundus from its prompt {verdict}**: a round fundus on black with the bright optic disc, without "
        "vessels (the patch model's limit, as in the regenerated retina above)."
    )


def _rim_similarity(text, large, prompt: str, count: int) -> tuple[torch.Tensor, int]:
    """Per grid the text model draws for `prompt` (`count` of them), its corner cells' mean cosine to the embedding
    of a black patch (the fundus photograph's surround)."""
    grids = (
        text.grid_pipe(
            [prompt] * count, guidance_scale=4.0, num_inference_steps=25, height=8, width=8, generator=torch.Generator().manual_seed(60), output_type="latent"
        )
        .images.float()
        .cpu()
    )
    black = large.embedder.embed_images(torch.zeros(1, 3, large.tile_size, large.tile_size))[0]
    corners = grids[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    return torch.nn.functional.cosine_similarity(corners, black[None, :, None], dim=1).mean(dim=1), count


def _fidelity_results() -> dict | None:
    import json

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "large_image_fidelity.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _measured_attribution() -> str:
    results = _fidelity_results()
    if not results or "text_attribution" not in results:
        return "measured by `python -m benchmarks.large_image_fidelity` from a checkout"
    found = results["text_attribution"]
    return f"{found['mean']:.2f} over {len(found['values'])} seeds, per seed {', '.join(f'{v:.2f}' for v in found['values'])}, benchmarks/results/large_image_fidelity.json"


def _measured_fidelity() -> list[str]:
    """The large-image figures over seeds, from the fidelity benchmark's committed results (a checkout has them;
    an installed gen names the command instead): measured, not re-run, since each seed takes minutes."""
    results = _fidelity_results()
    if not results:
        return ["Over seeds and sizes: `python -m benchmarks.large_image_fidelity` (from a checkout) measures these with 95% intervals.", ""]
    runs = results["runs"]
    lines = [
        "Over 3 seeds at 512x512 (`python -m benchmarks.large_image_fidelity`, committed in benchmarks/results/large_image_fidelity.json):",
        "",
        "| image | patch cosine | background gap | vesselness | seam strength |",
        "|---|---|---|---|---|",
    ]
    for name in ("retina-512", "ihc-512"):
        run = runs.get(name, {})
        cell = lambda key: f"{run[key]['mean']:.3f} ({run[key]['ci95'][0]:.3f} to {run[key]['ci95'][1]:.3f})" if key in run else "-"
        lines.append(f"| {name} | {cell('patch_cosine')} | {cell('background_gap')} | {cell('vesselness_correlation')} | {cell('seam_strength')} |")
    return lines + [""]


def _cads(report: Report, pipe, space, quick: bool):
    from gen.conditioning import CADS

    per_class = 4 if quick else 8
    labels = torch.arange(10).repeat_interleave(per_class)
    call = lambda scale, hooks, seed: pipe(
        class_labels=labels,
        guidance_scale=scale,
        num_inference_steps=20,
        eta=0.0,
        hooks=hooks,
        generator=torch.Generator().manual_seed(40 + seed),
        output_type="pt",
    ).images
    runs = {
        name: [call(scale, hooks(), seed) for seed in SEEDS]
        for name, scale, hooks in (("no guidance", 1.0, list), ("CFG 12", 12.0, list), ("CFG 12 + CADS", 12.0, lambda: [CADS()]))
    }
    diversity = {name: [within_class_diversity(space, images, labels) for images in outs] for name, outs in runs.items()}
    accuracy = {name: [(space.predict(images) == labels).float().mean().item() for images in outs] for name, outs in runs.items()}
    report.section(
        "Condition annealing (CADS, Sadat et al. 2024) at high guidance",
        f"All ten classes, {per_class} each, DDIM 20 steps, seeds {list(SEEDS)}. On this model guidance 12 is where plain CFG breaks: its samples "
        "lose the diversity of unguided sampling, saturate, and most stop looking like their class; CADS (its defaults: tau1 0.6, tau2 0.9, s 0.25) "
        "anneals noise onto the class condition early in sampling. Rows of the figure (seed 0, classes 0-9, one sample each, then a second): unguided, CFG 12, CFG 12 + CADS.",
    )
    picks = torch.cat([torch.arange(10) * per_class, torch.arange(10) * per_class + 1])
    report.image(
        "cads.png", grid_image(torch.cat([runs[name][0][picks] for name in runs]), 20, scale=3), "top: no guidance; middle: CFG 12; bottom: CFG 12 + CADS"
    )
    report.table(["", "within-class diversity", "classified as their class"], [[name, stat(diversity[name]), stat(accuracy[name])] for name in runs])
    report.lines.append(holds([a - b for a, b in zip(diversity["CFG 12 + CADS"], diversity["CFG 12"])], "CADS restores diversity that high guidance removes"))
    report.lines.append("")
    report.lines.append(holds([a - b for a, b in zip(accuracy["CFG 12 + CADS"], accuracy["CFG 12"])], "and it keeps (here: restores) the samples' class"))
    report.lines.append("")
    report.lines.append(
        "Not everywhere: over guidance 1-12 (`python -m benchmarks.demo_regimes --parts cads`) CADS raised diversity at guidance 2, 8 and 12 "
        "but lowered it at guidance 4 on every seed."
    )


# The split and guidance the demo shows: the setting of `python -m benchmarks.demo_regimes --parts hybrid` where the hybrid is at least as
# diverse as both the distilled model and the base (k = 1 on the 4-step grid only ties the distilled model here).
HYBRID = dict(base_steps=2, distilled_steps=4, guidance_scale=2.0)


def _distillation(report: Report, pipe, space, quick: bool):
    import gen.zoo as zoo
    from gen.analysis import DTVisualizer
    from gen.pipelines import HybridDistilledPipeline

    distilled = zoo.load("digits-distilled")
    k, steps, scale = HYBRID["base_steps"], HYBRID["distilled_steps"], HYBRID["guidance_scale"]
    hybrid = HybridDistilledPipeline(pipe, distilled, base_steps=k, distilled_steps=steps)
    per_class = 4 if quick else 8
    labels = torch.arange(10).repeat_interleave(per_class)
    makers = {
        f"base (DDIM 25 steps, CFG {scale:g})": lambda hooks, g: pipe(
            class_labels=labels, guidance_scale=scale, num_inference_steps=25, hooks=hooks, generator=g, output_type="pt"
        ),
        f"distilled ({steps} steps)": lambda hooks, g: distilled(class_labels=labels, num_inference_steps=steps, hooks=hooks, generator=g, output_type="pt"),
        f"hybrid ({k} base step{'s' if k > 1 else ''}, then distilled)": lambda hooks, g: hybrid(
            class_labels=labels, guidance_scale=scale, hooks=hooks, generator=g, output_type="pt"
        ),
    }
    runs, strips, seconds = {}, {}, {}
    for name, make in makers.items():
        viz = DTVisualizer(max_samples=4)
        start = time.perf_counter()
        runs[name] = [make([viz] if seed == SEEDS[0] else [], torch.Generator().manual_seed(50 + seed)) for seed in SEEDS]
        seconds[name] = (time.perf_counter() - start) / len(SEEDS)
        strips[name] = viz
    diversity = {name: [within_class_diversity(space, o.images, labels) for o in outs] for name, outs in runs.items()}
    accuracy = {name: [(space.predict(o.images) == labels).float().mean().item() for o in outs] for name, outs in runs.items()}
    base, student, mixed = list(runs)
    report.section(
        "Diversity distillation (Gandikota & Bau 2025)",
        f"All ten classes, {per_class} each, seeds {list(SEEDS)}. Rows: base, distilled (consistency-distilled, guidance {scale:g} baked in), hybrid "
        f"(the base model takes the first {k} step{'s' if k > 1 else ''} of the same {steps}-step grid, the distilled model the rest). Diversity: "
        "within-class mean pairwise distance in the classifier's feature space.",
    )
    picks = torch.arange(10) * per_class
    report.image(
        "distillation.png",
        grid_image(torch.cat([outs[0].images[torch.cat([picks, picks + 1])] for outs in runs.values()]), 20, scale=3),
        "top: base; middle: distilled; bottom: hybrid (seed 0, two per class)",
    )
    report.table(
        ["", "within-class diversity", "classified as their class", "NFE per sample", "seconds per run"],
        [[name, stat(diversity[name]), stat(accuracy[name]), outs[0].nfe, seconds[name]] for name, outs in runs.items()],
    )
    report.lines.append(holds([a - b for a, b in zip(diversity[mixed], diversity[student])], "the hybrid is more diverse than the distilled model"))
    report.lines.append("")
    report.lines.append(holds([a - b for a, b in zip(diversity[mixed], diversity[base])], "and at least as diverse as the base", at_least=True))
    report.lines.append("")
    mean = lambda values: sum(values) / len(values)
    cost = (
        "less often than either model's, its coarse base steps drawing some digits the classifier does not read as the class asked for"
        if mean(accuracy[mixed]) < min(mean(accuracy[student]), mean(accuracy[base]))
        else "about as often as the other two"
    )
    report.lines.append(
        f"What it costs here: the hybrid's samples are classified as their class {cost} ({stat(accuracy[mixed])} against "
        f"{stat(accuracy[student])} distilled and {stat(accuracy[base])} base). With one base step it only ties the distilled model "
        "(`python -m benchmarks.demo_regimes --parts hybrid`)."
    )
    report.lines.append("")
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
