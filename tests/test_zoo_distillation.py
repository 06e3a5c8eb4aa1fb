"""Diversity distillation and control transfer on the zoo models (digits, digits-distilled, the bold LoRA)."""

import pytest
import torch
from diffusers import DDIMScheduler

from gen import zoo
from gen.analysis.metrics import FeatureSpace
from gen.pipelines import HybridDistilledPipeline
from gen.training.lora import load_lora

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base():
    pipe = zoo.load("digits")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


@pytest.fixture(scope="module")
def distilled():
    return zoo.load("digits-distilled")


def test_hybrid_costs_k_base_steps_plus_the_distilled_steps(base, distilled):
    hybrid = HybridDistilledPipeline(base, distilled, base_steps=1, distilled_steps=4)
    out = hybrid(class_labels=[3] * 4, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.nfe == 2 * 1 + 3  # one guided base step from t=999, then the distilled grid's other three steps, unguided
    fine = hybrid(
        class_labels=[3] * 4, guidance_scale=2.0, handover="noise-level", num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    assert fine.nfe <= 2 * 1 + 4
    assert out.images.shape == fine.images.shape == (4, 1, 16, 16)


def test_distilled_model_makes_recognisable_digits_in_four_steps(distilled):
    classifier = zoo.load("digits-classifier")
    labels = torch.arange(10).repeat(4)
    out = distilled(class_labels=labels, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert (FeatureSpace(classifier).predict(out.images) == labels).float().mean() > 0.7


def test_bold_lora_shifts_base_and_distilled_the_same_way(base, distilled):
    from gen.pipelines.loading import load_pipeline

    folder = zoo.entry("digits-bold-lora").folder
    labels = torch.arange(10).repeat(3)
    kwargs = dict(class_labels=labels, output_type="pt")
    ink = lambda images: images.mean().item()
    base_plain = ink(base(num_inference_steps=20, generator=torch.Generator().manual_seed(0), **kwargs).images)
    distilled_plain = ink(distilled(num_inference_steps=4, generator=torch.Generator().manual_seed(0), **kwargs).images)
    bold_base = load_pipeline(zoo.entry("digits").folder)
    bold_base.scheduler = DDIMScheduler.from_config(bold_base.scheduler.config)
    load_lora(bold_base.unet, folder)
    bold_distilled = load_pipeline(zoo.entry("digits-distilled").folder)
    load_lora(bold_distilled.unet, folder)
    base_bold = ink(bold_base(num_inference_steps=20, generator=torch.Generator().manual_seed(0), **kwargs).images)
    distilled_bold = ink(bold_distilled(num_inference_steps=4, generator=torch.Generator().manual_seed(0), **kwargs).images)
    assert base_bold > base_plain * 1.15
    assert distilled_bold > distilled_plain * 1.15
