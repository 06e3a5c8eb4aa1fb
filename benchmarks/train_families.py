"""Fine-tuning SDXL, SD3 and Flux folders with `gen train` (issue 27), on CPU with gen.testing's tiny models:

- loss falls: each family, full and LoRA (rank 4), fine-tuned --steps steps on a 24-image caption folder
  (gen.testing.caption_folder: a coloured blob named by its caption, images of three sizes), 3 seeds. The
  figure is the held-out loss: the family's own loss on the whole folder with fixed noise and timesteps (8
  draws, no dropout, no CEP), before and after; the paired claim is "after < before".
- CEP's cost: seconds per optimisation step with --cep gaussian vs without (interleaved runs, same seeds);
  CEP adds one Gaussian draw per text embedding.

    python -m benchmarks.train_families [--steps 150] [--seeds 0 1 2] [--out DIR]

Writes train_families.json (+ .png).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import add_output_argument, paired_claim, pyplot, save, summary

FAMILIES = ("sdxl", "sd3", "flux")


def build(name: str):
    from gen import testing as tiny

    return {"sdxl": tiny.sdxl_pipeline, "sd3": lambda: tiny.sd3_pipeline(text_encoders=True), "flux": lambda: tiny.flux_pipeline(guidance_embeds=True)}[name]()


@torch.no_grad()
def held_out_loss(pipe, data: Path, config, draws: int = 8) -> float:
    """The family's training loss on every image of the folder, with the noise and timesteps of a fixed generator."""
    from gen.training.data import load_data
    from gen.training.families import FamilyCondition, family_of

    family = family_of(pipe, config)
    dataset = load_data(str(data), config.resolution, 3)
    batch = {"pixel_values": torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))]), "caption": dataset.captions}
    batch.update({k: torch.stack([dataset[i][k] for i in range(len(dataset))]) for k in ("original_size", "crop_top_left")})
    condition, schedule = FamilyCondition(family), family.training_schedule()
    backbone = getattr(pipe, family.backbone).eval()
    g = torch.Generator().manual_seed(1234)
    inputs = condition(batch, g, 0.0, None)
    latents = family.latents(pipe.vae, batch["pixel_values"], g)
    return sum(float(family.loss(backbone, latents, inputs, g, schedule)) for _ in range(draws)) / draws


def fine_tune(name: str, root: Path, data: Path, seed: int, steps: int, lora: bool, cep: str | None = None) -> tuple[float, float, float]:
    """(held-out loss before, after, seconds per step) of one run."""
    import diffusers

    from gen.generate import apply_lora
    from gen.training.train import TrainConfig, train

    init = root / f"{name}-init"
    if not init.exists():
        build(name).save_pretrained(init)
    options = dict(resolution=16, train_batch_size=8, max_train_steps=steps, lr_warmup_steps=10, checkpointing_steps=0, progress=False, seed=seed)
    options.update(learning_rate=1e-3 if lora else 3e-4, lora_rank=4 if lora else 0, cep=cep, condition_dropout=0.1)
    config = TrainConfig(data=str(data), output_dir=str(root / f"{name}-{seed}-{lora}-{cep}-{steps}"), init_from=str(init), **options)
    cls = getattr(diffusers, type(build(name)).__name__)
    before = held_out_loss(cls.from_pretrained(init), data, config)
    start = time.perf_counter()
    out = train(config)
    per_step = (time.perf_counter() - start) / steps
    tuned = cls.from_pretrained(init)
    if lora:
        apply_lora(tuned, str(out / "lora"))
    else:
        tuned = cls.from_pretrained(out)
    return before, held_out_loss(tuned, data, config), per_step


def main(argv=None):
    from gen import testing as tiny

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    add_output_argument(parser)
    args = parser.parse_args(argv)
    results = {"steps": args.steps, "seeds": args.seeds, "loss": {}, "cep_cost": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = tiny.caption_folder(root / "captions", count=24)
        for name in args.families:
            for lora in (False, True):
                rows = [fine_tune(name, root, data, seed, args.steps, lora) for seed in args.seeds]
                before, after = [r[0] for r in rows], [r[1] for r in rows]
                key = f"{name} {'LoRA' if lora else 'full'}"
                results["loss"][key] = {
                    "before": summary(before),
                    "after": summary(after),
                    "seconds_per_step": summary([r[2] for r in rows]),
                    "falls": paired_claim(before, after, "held-out loss after fine-tuning < before"),
                }
                print(f"{key}: held-out loss {summary(before)['mean']:.3f} -> {summary(after)['mean']:.3f}; {results['loss'][key]['falls']['verdict']}")
            plain, perturbed = [], []
            for seed in args.seeds:  # interleaved: each seed with and without CEP, back to back
                plain.append(fine_tune(name, root, data, seed, args.steps // 3, lora=False)[2])
                perturbed.append(fine_tune(name, root, data, seed, args.steps // 3, lora=False, cep="gaussian")[2])
            ratio = [b / a for a, b in zip(plain, perturbed)]
            results["cep_cost"][name] = {"without": summary(plain), "with": summary(perturbed), "ratio": summary(ratio)}
            print(f"{name}: CEP step cost ratio {summary(ratio)['mean']:.3f} (95% CI {summary(ratio)['ci95'][0]:.3f}-{summary(ratio)['ci95'][1]:.3f})")
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.5))
    names = list(results["loss"])
    for offset, when in ((-0.2, "before"), (0.2, "after")):
        means = [results["loss"][n][when]["mean"] for n in names]
        errors = [
            [m - results["loss"][n][when]["ci95"][0] for m, n in zip(means, names)],
            [results["loss"][n][when]["ci95"][1] - m for m, n in zip(means, names)],
        ]
        axis.bar([i + offset for i in range(len(names))], means, width=0.4, yerr=errors, label=f"held-out loss {when}")
    axis.set_xticks(range(len(names)), names, rotation=20)
    axis.legend()
    axis.set_title(f"gen train on tiny family folders, {args.steps} steps, {len(args.seeds)} seeds")
    figure.tight_layout()
    save("train_families", results, figure, args.out)


if __name__ == "__main__":
    main()
