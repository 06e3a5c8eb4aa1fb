"""Property-based bad input over the command line and the trainers (hypothesis): random flags with junk
values, random --config files. Every run either succeeds, or exits with status 2 printing exactly one line
``error: NAME: ...`` (never a traceback, never status 1, the fault of gen), and a refused run writes
nothing at all."""

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen import cli
from gen.training.distill import DistillConfig
from gen.training.train import TrainConfig
from gen.training.value import ValueConfig

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
MORE = settings(SETTINGS, max_examples=80)  # the slow tier's trainer suites: each example is a short run at most
ONE_LINE = r"^error: ([a-z_][a-z0-9_]*(, [a-z_][a-z0-9_]*)*|command): "

junk_text = st.sampled_from(["0", "-1", "1", "2", "3", "2.5", "1e23", "nan", "inf", "-inf", "", " ", "abc", "../up", "/abs", "true", "none", "8,16", "-3,4"])
junk_json = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 5),
    st.integers(10**20, 10**21),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "false", "true", "1", "abc", "digits", "../x"]),
    st.just([]),
    st.just({}),
    st.just([1, 2]),
)


@contextlib.contextmanager
def fresh_folder():
    """A new empty working folder for one example (hypothesis reuses function-scoped fixtures)."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


def check_run(run, capsys, folder: Path) -> int:
    status = run()
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    assert status in (0, 2), f"status {status}: {err}"
    if status == 2:
        import re

        assert len(err.splitlines()) == 1 and re.match(ONE_LINE, err), err
        assert not any(folder.iterdir()), f"a refused run wrote {sorted(p.name for p in folder.iterdir())}: {err}"
    return status


SAMPLE_FLAGS = ["--class-labels", "--num", "--steps", "--guidance", "--seed", "--scale", "--name", "--out", "--prompt", "--reference", "--lora"]


@given(flags=st.dictionaries(st.sampled_from(SAMPLE_FLAGS), junk_text, max_size=3), model=st.sampled_from(["digits", "digits-distilled", "nope", ""]))
@SETTINGS
def test_gen_sample_with_random_flags(capsys, flags, model):
    flags.setdefault("--steps", "1")
    if flags.get("--num", "1").isdigit() and int(flags.get("--num", "1")) > 3:
        flags["--num"] = "3"
    argv = ["sample", model, *[x for pair in flags.items() for x in pair]]
    with fresh_folder() as folder:
        check_run(lambda: cli.main(argv), capsys, folder)


TINY = {
    "data": "digits",
    "resolution": 8,
    "block_out_channels": "8,16",
    "layers_per_block": 1,
    "attention_levels": "1",
    "attention_head_dim": 4,
    "train_batch_size": 8,
    "lr_warmup_steps": 0,
    "max_train_steps": 1,
    "checkpointing_steps": 0,
    "progress": False,
    "output_dir": "run",
}
EXPENSIVE = {"text_encoder", "embedder", "vae", "init_from", "condition", "validation_prompts", "use_8bit_adam"}  # each loads or builds more: tested elsewhere
TRAIN_FIELDS = sorted(f for f in TrainConfig.__dataclass_fields__ if f not in EXPENSIVE | {"config", "data", "output_dir", "progress"})


def _flags(values: dict) -> list[str]:
    argv = []
    for key, value in values.items():
        argv += [f"--{key.replace('_', '-')}", value]
    return argv


@pytest.mark.slow
@given(flags=st.dictionaries(st.sampled_from(TRAIN_FIELDS), junk_text, max_size=2))
@MORE
def test_the_trainer_with_random_flags(capsys, flags):
    from gen.training.train import main

    base = {k: str(v) for k, v in TINY.items() if k != "progress"}
    boolean = {f for f, spec in TrainConfig.__dataclass_fields__.items() if "bool" in str(spec.type)}
    argv = _flags({**base, **{k: v for k, v in flags.items() if k not in boolean}}) + ["--no-progress"]
    argv += [f"--{'' if v in ('1', 'true') else 'no-'}{k.replace('_', '-')}" for k, v in flags.items() if k in boolean]
    with fresh_folder() as folder:
        check_run(lambda: main(argv), capsys, folder)


@pytest.mark.slow
@given(values=st.dictionaries(st.sampled_from(TRAIN_FIELDS + ["data", "output_dir", "overwrite", "resume"]), junk_json, max_size=3))
@MORE
def test_the_trainer_with_random_config_files(capsys, values):
    from gen.training.train import main

    with fresh_folder() as folder:
        config = Path(tempfile.mkdtemp()) / "config.json"
        config.write_text(json.dumps({**TINY, **values}))
        check_run(lambda: main(["--config", str(config)]), capsys, folder)


VALUE_TINY = {"num_samples": 4, "steps": 2, "sample_batch_size": 4, "train_batch_size": 4, "max_train_steps": 1, "width": 4, "output_dir": "value"}
DISTILL_TINY = {"original_inference_steps": 4, "train_batch_size": 8, "max_train_steps": 1, "output_dir": "distilled"}


@pytest.mark.slow
@given(trainer=st.sampled_from(["value", "distill"]), data=st.data())
@MORE
def test_the_other_trainers_with_random_flags(capsys, trainer, data):
    from gen.training.distill import main as distill_main
    from gen.training.value import main as value_main

    config_class, base, main = (ValueConfig, VALUE_TINY, value_main) if trainer == "value" else (DistillConfig, DISTILL_TINY, distill_main)
    fields = sorted(
        f
        for f, spec in config_class.__dataclass_fields__.items()
        if "bool" not in str(spec.type) and f not in ("config", "output_dir", "pipeline", "teacher", "classifier")
    )
    flags = data.draw(st.dictionaries(st.sampled_from(fields), junk_text, max_size=2))
    argv = _flags({**{k: str(v) for k, v in base.items()}, **flags}) + ["--no-progress"]
    with fresh_folder() as folder:
        check_run(lambda: main(argv), capsys, folder)
