"""PPAP (Go et al. 2023): experts distilled without labels from a clean classifier guide the unconditional digits model
toward a class, as an independent classifier (scikit-learn's SVC on the 8x8 digits) judges, over 3 seeds; the gain
vanishes when the gradient's sign is flipped or when routing ignores the timestep. The trainer writes a folder that
`ClassifierGuidance.from_pretrained` loads and names bad input before any work (its exact resume is tested with the
other trainers in test_training_loop)."""

import json

import pytest
import torch

import gen.zoo as zoo
from gen import testing as tiny
from gen.guidance import ClassifierGuidance
from gen.guidance.experts import NoiseExperts, equal_ranges
from gen.training.ppap import PPAPConfig, main, train_ppap
from gen.zoo.classifier import DigitClassifier


@pytest.fixture(scope="module")
def scorer():
    from benchmarks.ppap import IndependentScorer

    return IndependentScorer()


def _accuracy(pipe, scorer, guidance, seed, per_class=6):
    """Target accuracy of --per-class samples toward each class 0-9 (guidance(k): the hooks toward k)."""
    images = [
        pipe(
            class_labels=None,
            batch_size=per_class,
            num_inference_steps=25,
            eta=1.0,
            generator=torch.Generator().manual_seed(100 * seed + k),
            hooks=guidance(k),
            output_type="pt",
        ).images
        for k in range(10)
    ]
    return scorer.accuracy(torch.cat(images), torch.arange(10).repeat_interleave(per_class))


@pytest.mark.slow
def test_ppap_experts_raise_target_accuracy_and_fail_when_flipped_or_routed_without_t(scorer, monkeypatch):
    from diffusers import DDIMScheduler

    pipe, experts = zoo.load("digits"), zoo.load("digits-ppap")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for seed in (0, 1, 2):
        plain = _accuracy(pipe, scorer, lambda k: [], seed)
        guided = _accuracy(pipe, scorer, lambda k: [ClassifierGuidance(experts, k, scale=2.0)], seed)
        flipped = _accuracy(pipe, scorer, lambda k: [ClassifierGuidance(experts, k, scale=-2.0)], seed)
        with monkeypatch.context() as broken:  # every timestep routed to the expert of the cleanest range
            broken.setattr(NoiseExperts, "route", lambda self, t: torch.zeros(torch.as_tensor(t).shape, dtype=torch.long))
            ignoring_t = _accuracy(pipe, scorer, lambda k: [ClassifierGuidance(experts, k, scale=2.0)], seed)
        assert guided > plain + 0.5, (seed, plain, guided)
        assert flipped <= plain, (seed, plain, flipped)
        assert guided > ignoring_t + 0.2, (seed, guided, ignoring_t)


def test_experts_route_each_row_by_its_timestep():
    classifier = DigitClassifier(in_channels=1, resolution=8, width=4, feature_dim=8)
    experts = NoiseExperts(classifier, equal_ranges(4, 1000))
    assert experts.ranges == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert experts.route(torch.tensor([0, 249, 250, 999, 1200])).tolist() == [0, 0, 1, 3, 3]
    with torch.no_grad():
        for k, expert in enumerate(experts.experts):
            expert.head.bias.fill_(0).__setitem__(k, 100.0)  # expert k votes for class k
    x = torch.randn(4, 1, 8, 8)
    assert experts(x, torch.tensor([900, 10, 600, 300])).argmax(-1).tolist() == [3, 0, 2, 1]
    assert experts(x, torch.tensor(400)).argmax(-1).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="ranges: expected contiguous"):
        NoiseExperts(classifier, [(0, 10), (20, 30)])
    with pytest.raises(ValueError, match="num_experts"):
        equal_ranges(0, 1000)


def _tiny_run(tmp_path, name="run", **options):
    """A PPAP run on the tiny class pipeline (8x8, 3 channels) with a tiny classifier of its own."""
    pipe_dir = tmp_path / "pipe"
    if not pipe_dir.exists():
        tiny.class_pipeline().save_pretrained(pipe_dir)
    torch.manual_seed(0)  # the same teacher in every run
    classifier = DigitClassifier(in_channels=3, resolution=8, width=4, feature_dim=8)
    settings = dict(
        pipeline=str(pipe_dir),
        classifier="mine",
        output_dir=str(tmp_path / name),
        num_experts=2,
        lora_rank=2,
        num_samples=16,
        sample_steps=2,
        train_batch_size=8,
    )
    settings.update({"max_train_steps": 4, "progress": False, **options})
    return train_ppap(PPAPConfig(**settings), classifier=classifier), classifier


def test_the_trained_folder_loads_as_guidance(tmp_path):
    out, classifier = _tiny_run(tmp_path)
    meta = json.loads((out / "ppap.json").read_text())
    assert meta["ranges"] == [[0, 50], [50, 100]] and meta["teacher"] == "mine" and meta["labels"].startswith("none")
    with pytest.raises(ValueError, match="classifier: the experts in .* pass classifier="):
        ClassifierGuidance.from_pretrained(out, target=3)
    guidance = ClassifierGuidance.from_pretrained(out, target=3, classifier=classifier)
    loaded = guidance.experts[0][2]
    assert not torch.equal(loaded.experts[0].body[0].lora_B["default"].weight, torch.zeros_like(loaded.experts[0].body[0].lora_B["default"].weight))


def test_supervised_baselines_train_on_labelled_data(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "labelled" / label).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (40 * i, 200 if label == "a" else 20, 90)).save(tmp_path / "labelled" / label / f"{i}.png")
    out, _ = _tiny_run(tmp_path, labelled_data=str(tmp_path / "labelled"), num_experts=1)
    meta = json.loads((out / "ppap.json").read_text())
    assert meta["labels"].startswith("supervised: ") and meta["ranges"] == [[0, 100]]
    with pytest.raises(ValueError, match=r"labelled_data: its images are \(1, 8, 8\) .* but the pipeline samples \(3, 8, 8\)"):
        _tiny_run(tmp_path, "digits", labelled_data="digits")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_experts=0), "num_experts: must be >= 1"),
        (dict(temperature=0.0), "temperature"),
        (dict(lora_layers="no_such_layer"), "lora_targets: none of"),
        (dict(num_samples=4), "train_batch_size: 8 is more than the 4 images"),
    ],
)
def test_bad_input_is_named_before_anything_is_written(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        _tiny_run(tmp_path, **options)
    assert not (tmp_path / "run" / "ppap.json").exists()


def test_latent_pipelines_and_unnamed_classifiers_are_refused_in_one_line(tmp_path, capsys):
    from gen.testing import stable_diffusion_pipeline

    stable_diffusion_pipeline().save_pretrained(tmp_path / "sd")
    capsys.readouterr()  # transformers' shard-writing bar
    assert main(["--pipeline", str(tmp_path / "sd"), "--output-dir", str(tmp_path / "a"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "latent space" in err.strip().split("\n")[-1]  # after transformers' loading bar
    assert main(["--classifier", str(tmp_path), "--output-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "classifier: the command line takes named classifiers" in err
