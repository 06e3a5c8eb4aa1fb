"""Composite pipelines (made of pipelines) behave like diffusers pipelines: components, .to(), round trip."""

import json

import pytest
import torch

from gen import testing as tiny
from gen.errors import ArgumentError
from gen.pipelines import HybridDistilledPipeline
from gen.pipelines.loading import load_pipeline


@pytest.fixture
def hybrid():
    return HybridDistilledPipeline(tiny.class_pipeline(seed=0), tiny.class_pipeline(seed=1), base_steps=1, distilled_steps=3)


def run(pipe):
    return pipe(class_labels=[1, 2], generator=torch.Generator().manual_seed(0), output_type="pt").images


def test_parts_are_registered_components(hybrid):
    assert set(hybrid.components) == {"base", "distilled"}
    assert hybrid.device == torch.device("cpu") and hybrid.dtype == torch.float32


def test_to_moves_every_part(hybrid):
    hybrid.to(torch.float64)
    assert hybrid.dtype == torch.float64
    assert hybrid.base.unet.dtype == torch.float64 and hybrid.distilled.unet.dtype == torch.float64
    assert run(hybrid).dtype == torch.float64


def test_save_then_load_gives_the_same_images_and_settings(hybrid, tmp_path):
    before = run(hybrid)
    hybrid.save_pretrained(tmp_path / "hybrid")
    index = json.loads((tmp_path / "hybrid" / "model_index.json").read_text())
    assert index["base"] == ["gen.pipelines", "ClassConditionalPipeline"] and index["distilled_steps"] == 3
    for loaded in (HybridDistilledPipeline.from_pretrained(tmp_path / "hybrid"), load_pipeline(tmp_path / "hybrid")):
        assert isinstance(loaded, HybridDistilledPipeline) and loaded.config.distilled_steps == 3
        assert torch.equal(run(loaded), before)


def test_loading_another_class_is_refused(tmp_path):
    tiny.class_pipeline().save_pretrained(tmp_path / "plain")
    with pytest.raises(ArgumentError, match="pretrained_model_name_or_path: .* not a HybridDistilledPipeline"):
        HybridDistilledPipeline.from_pretrained(tmp_path / "plain")
