"""The zoo's digits model and classifier: real trained models, loaded offline through safetensors."""

import pytest
import torch

from gen import zoo
from gen.analysis.metrics import FeatureSpace, class_histogram, frechet_distance, mean_pairwise_distance
from gen.data import digits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier():
    return zoo.load("digits-classifier")


@pytest.fixture(scope="module")
def pipe():
    return zoo.load("digits")


def test_digits_samples_are_classified_as_their_class(pipe, classifier):
    labels = torch.arange(10).repeat_interleave(10)
    out = pipe(class_labels=labels, num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="pt")
    predicted = FeatureSpace(classifier).predict(out.images)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.8, accuracy
    assert out.nfe == 50


def test_samples_are_far_closer_to_real_digits_than_noise(pipe, classifier):
    space = FeatureSpace(classifier)
    real = (digits(16, "test").images + 1) / 2
    labels = torch.arange(10).repeat(20)
    samples = pipe(class_labels=labels, num_inference_steps=25, generator=torch.Generator().manual_seed(1), output_type="pt").images
    noise = torch.rand(200, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    real_features = space.features(real)
    fd_samples = frechet_distance(space.features(samples), real_features)
    fd_noise = frechet_distance(space.features(noise), real_features)
    assert fd_samples < 0.25 * fd_noise, (fd_samples, fd_noise)
    histogram = class_histogram(space.predict(samples), 10)
    assert min(histogram) > 0.05  # every class is produced
    assert mean_pairwise_distance(space.features(samples)) > 0


def test_classifier_is_accurate_on_held_out_digits(classifier):
    test = digits(16, "test")
    accuracy = (FeatureSpace(classifier).predict((test.images + 1) / 2) == test.labels).float().mean().item()
    assert accuracy > 0.95


def test_zoo_refuses_pickled_weights(tmp_path, monkeypatch):
    fake = tmp_path / "digits-classifier"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    (fake / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really")
    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path)
    with pytest.raises(ValueError, match=r"zoo: .*diffusion_pytorch_model.bin is a pickle file"):
        zoo.load("digits-classifier")


def test_unknown_and_unbuilt_names(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"name: no zoo model 'nope'"):
        zoo.load("nope")
    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"gen zoo build digits"):
        zoo.load("digits")


def test_pipeline_round_trips_through_save_pretrained(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "copy")
    from gen.pipelines.loading import load_pipeline

    copy = load_pipeline(tmp_path / "copy")
    kwargs = dict(class_labels=[1, 4], num_inference_steps=5, output_type="pt")
    a = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    b = copy(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert torch.equal(a, b)
    assert sorted(p.suffix for p in (tmp_path / "copy" / "unet").iterdir()) == [".json", ".safetensors"]
