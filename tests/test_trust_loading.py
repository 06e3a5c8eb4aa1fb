"""A model folder never runs its code: every route that loads a folder (gen sample, load_pipeline, each
pipeline class's from_pretrained, gen train --init-from, composite pipelines) refuses a folder whose
model_index.json or files would make diffusers import a module from it, with one line naming the file and
the entry, and a marker file that the hostile code would write never appears."""

import json
import shutil

import pytest
from diffusers import DiffusionPipeline

from gen import cli
from gen import testing as tiny
from gen.errors import ArgumentError, GenError
from gen.pipelines import ClassConditionalPipeline, GenPipeline, HybridDistilledPipeline
from gen.pipelines.loading import load_pipeline
from gen.training.train import main as train_main

EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\nfrom diffusers import UNet2DModel, DDIMScheduler  # noqa\nfrom gen.pipelines import ClassConditionalPipeline  # noqa\n"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    tiny.class_pipeline().save_pretrained(folder)
    return folder


def _edit_index(folder, **changes):
    index = json.loads((folder / "model_index.json").read_text())
    for key, value in changes.items():
        if value is None:
            index.pop(key, None)
        else:
            index[key] = value
    (folder / "model_index.json").write_text(json.dumps(index))


def component_module(folder, marker):
    (folder / "unet" / "evil_unet.py").write_text(EVIL.format(marker=str(marker)))
    _edit_index(folder, unet=["evil_unet", "UNet2DModel"])
    return "evil_unet"


def pipeline_module(folder, marker):
    (folder / "evil_pipe.py").write_text(EVIL.format(marker=str(marker)))
    _edit_index(folder, _class_name=["evil_pipe", "ClassConditionalPipeline"])
    return "evil_pipe"


def edited_stub(folder, marker):
    (folder / "gen_pipeline.py").write_text(EVIL.format(marker=str(marker)))
    return "gen_pipeline.py"


def library_shadow(folder, marker):
    (folder / "unet" / "diffusers.py").write_text(EVIL.format(marker=str(marker)))
    return "diffusers.py"


def foreign_library(folder, marker):
    _edit_index(folder, unet=["evil_lib", "UNet2DModel"])
    return "evil_lib"


def outside_key(folder, marker):
    _edit_index(folder, **{"../outside": ["diffusers", "UNet2DModel"]})
    return "../outside"


def gen_module_not_a_class(folder, marker):
    _edit_index(folder, unet=["gen.cli", "main"])
    return "gen.cli"


HOSTILE = [component_module, pipeline_module, edited_stub, library_shadow, foreign_library, outside_key, gen_module_not_a_class]


def _routes(folder, tmp_path):
    def train():
        status = train_main(
            ["--data", "digits", "--init-from", str(folder), "--output-dir", str(tmp_path / "run"), "--max-train-steps", "1", "--resolution", "8"]
        )
        if status:
            raise ArgumentError(f"exit {status}")

    def sample():
        status = cli.main(["sample", str(folder), "--class-labels", "1", "--steps", "2", "--out", str(tmp_path / "out")])
        if status:
            raise ArgumentError(f"exit {status}")

    return {
        "load_pipeline": lambda: load_pipeline(folder),
        "GenPipeline.from_pretrained": lambda: GenPipeline.from_pretrained(folder),
        "ClassConditionalPipeline.from_pretrained": lambda: ClassConditionalPipeline.from_pretrained(str(folder)),
        "gen sample": sample,
        "gen train --init-from": train,
    }


@pytest.mark.parametrize(
    "route", ["load_pipeline", "GenPipeline.from_pretrained", "ClassConditionalPipeline.from_pretrained", "gen sample", "gen train --init-from"]
)
@pytest.mark.parametrize("make", HOSTILE, ids=lambda f: f.__name__)
def test_a_hostile_folder_is_refused_on_every_route_and_its_code_never_runs(saved, make, route, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    marker = tmp_path / "marker"
    named = make(folder, marker)
    with pytest.raises(GenError) as caught:
        _routes(folder, tmp_path)[route]()
    assert not marker.exists(), "the folder's code ran"
    said = str(caught.value) + capsys.readouterr().err
    assert named in said, said
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists(), "a refused load wrote output"


@pytest.mark.parametrize("route", ["load_pipeline", "GenPipeline.from_pretrained", "ClassConditionalPipeline.from_pretrained", "gen sample"])
def test_a_genuine_gen_folder_loads_on_every_route(saved, route, tmp_path):
    _routes(saved, tmp_path)[route]()
    assert type(load_pipeline(saved)) is ClassConditionalPipeline
    assert type(GenPipeline.from_pretrained(saved)) is ClassConditionalPipeline


def test_trusting_remote_code_stays_the_users_explicit_choice(saved):
    assert type(DiffusionPipeline.from_pretrained(saved, trust_remote_code=True)).__name__ == "ClassConditionalPipeline"


def test_a_composite_folder_checks_itself_and_its_parts(tmp_path):
    from diffusers import LCMScheduler

    base = tiny.class_pipeline()
    distilled = ClassConditionalPipeline(scheduler=LCMScheduler(num_train_timesteps=100), unet=tiny.tiny_unet(num_class_embeds=11, seed=1))
    HybridDistilledPipeline(base, distilled).save_pretrained(tmp_path / "hybrid")
    assert type(HybridDistilledPipeline.from_pretrained(tmp_path / "hybrid")).__name__ == "HybridDistilledPipeline"
    marker = tmp_path / "marker"
    component_module(tmp_path / "hybrid" / "base", marker)
    with pytest.raises(ArgumentError, match="evil_unet"):
        HybridDistilledPipeline.from_pretrained(tmp_path / "hybrid")
    assert not marker.exists()


def test_a_missing_component_folder_is_named(saved, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    shutil.rmtree(folder / "unet")
    with pytest.raises(FileNotFoundError, match=r"'unet'.*unet is missing"):
        load_pipeline(folder)


@pytest.mark.parametrize("damage", ["truncated", "pickle"])
def test_weights_that_are_not_safetensors_behind_the_name_are_named(saved, tmp_path, damage):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\x80\x04\x95" + data[:64])
    with pytest.raises(ArgumentError, match="diffusion_pytorch_model.safetensors is not a readable safetensors file"):
        load_pipeline(folder)
