"""Typed configuration: YAML values are coerced to their field's type, bad ones named, unknown keys refused."""

import os

import pytest

from crops_ray.config import load_config, parse_sets, settings
from crops_ray.train import TrainConfig, TrainJobConfig


def test_yaml_scalars_become_their_field_types(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(
        "train:\n  lr: 5e-5\n  max_steps: '30'\n  doc_tower: frozen\n  shared_towers: 'false'\n"
    )  # YAML 1.1 reads 5e-5 as a string
    cfg = load_config(TrainJobConfig, str(path))
    assert cfg.train.lr == 5e-5 and isinstance(cfg.train.lr, float) and cfg.train.max_steps == 30
    assert cfg.train.batch_size == TrainConfig().batch_size  # untouched settings keep their defaults


def test_a_value_of_the_wrong_type_names_the_setting(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  lr: fast\n")
    with pytest.raises(ValueError, match=r"TrainConfig\.lr: 'fast' is not a valid float"):
        load_config(TrainJobConfig, str(path))
    path.write_text("train:\n  lr_max: 1.0\n")
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(TrainJobConfig, str(path))


# ---------------------------------------------------------------------------------------------- configs/ and --set

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _config_classes():
    from crops_ray.engine.build import EngineConfig
    from crops_ray.evaluate import EvalConfig
    from crops_ray.experiment import ExperimentConfig
    from crops_ray.train import TrainJobConfig
    from crops_ray.validate import ValidationConfig
    from crops_ray.world.generator import WorldConfig

    return {
        "validate.yaml": ValidationConfig,
        "engine.yaml": EngineConfig,
        "engine-gpu.yaml": EngineConfig,
        "train.yaml": TrainJobConfig,
        "experiment.yaml": ExperimentConfig,
        "eval.yaml": EvalConfig,
        "world.yaml": WorldConfig,
    }


def test_every_example_config_loads_with_its_stage_class():
    from serve.app import ServeSettings

    classes = _config_classes()
    found = sorted(f for f in os.listdir(CONFIGS) if f.endswith(".yaml"))
    assert found == sorted([*classes, "serve.yaml"])  # a new example file needs its class here
    for name, cls in classes.items():
        cfg = load_config(cls, os.path.join(CONFIGS, name))
        assert isinstance(cfg, cls), name
    train = load_config(classes["train.yaml"], os.path.join(CONFIGS, "train.yaml")).train
    assert train.lr == 5e-5 and isinstance(train.lr, float)  # YAML 1.1 reads "5e-5" as a string
    ServeSettings(**settings(os.path.join(CONFIGS, "serve.yaml")))


def test_set_overrides_win_over_flags_and_yaml_and_reach_nested_settings(tmp_path):
    from crops_ray.engine.build import EngineConfig

    path = tmp_path / "e.yaml"
    path.write_text("alpha: 0.5\nreformulation: {window_s: 60}\nrecommendation: {per_user: 7}\n")
    cfg = load_config(
        EngineConfig,
        str(path),
        {"alpha": 0.7, "reformulation.window_s": None},  # a flag left unset (None) changes nothing
        ["reformulation.window_s=120", "sources=[p1]", "discriminator.fine_tune=false"],
    )
    assert (cfg.alpha, cfg.reformulation.window_s, cfg.recommendation.per_user) == (0.7, 120, 7)
    assert cfg.sources == ("p1",) and cfg.discriminator.fine_tune is False
    assert cfg.recommendation.before_s == EngineConfig().recommendation.before_s  # untouched settings keep defaults
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["alpha"])
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(EngineConfig, None, None, ["reformulation.windows=1"])
    with pytest.raises(ValueError, match="alpha"):
        load_config(EngineConfig, None, None, ["alpha=high"])


def test_every_pipeline_takes_config_and_set():
    """The same two flags everywhere: a user learns them once."""
    import subprocess
    import sys

    root = os.path.dirname(CONFIGS)
    pipelines = ("validate", "build_data", "train", "evaluate", "generate_world", "demo", "alpha_sweep", "online_ab")
    for name in (*pipelines, "serve"):
        out = subprocess.run(
            [sys.executable, os.path.join(root, "pipelines", f"{name}.py"), "--help"], capture_output=True, text=True
        ).stdout
        assert "--config" in out and "--set KEY=VALUE" in out, name


@pytest.mark.parametrize(
    "name, argv",
    [
        ("validate", ["--logs", "{in}", "--out", "{out}"]),
        ("build_data", ["--logs", "{in}", "--out", "{out}"]),
        ("train", ["--data", "{in}", "--out", "{out}"]),
        ("evaluate", ["--logs", "{in}", "--out", "{out}", "--model", "minilm"]),
        ("generate_world", ["--out", "{out}"]),
        ("demo", ["--logs", "{in}", "--out", "{out}"]),
        ("alpha_sweep", ["--data", "{in}", "--out", "{out}", "--downstream", "--logs", "{in}"]),
        ("online_ab", ["--world", "{in}", "--runs", "{in}", "--out", "{out}"]),
        ("serve", ["--index", "{in}"]),
    ],
)
def test_every_pipeline_reads_set_into_its_settings_before_any_work(tmp_path, capsys, name, argv):
    """``--set`` reaches the pipeline's validated settings: a misspelt key is refused by name, with exit code 2 and
    no traceback, before anything is read or written (a pipeline that dropped --set would run on, or fail on its
    empty input instead)."""
    import importlib

    (tmp_path / "in").mkdir()
    args = [a.format(**{"in": str(tmp_path / "in"), "out": str(tmp_path / "out")}) for a in argv]
    main = importlib.import_module(f"pipelines.{name}").main
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--set", "misspelt_setting=1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "misspelt_setting" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_alpha_sweep_refuses_settings_it_would_not_use(tmp_path, capsys):
    from pipelines.alpha_sweep import main

    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--set", "train.lr=1e-4"])
    assert exit_.value.code == 2 and "--downstream" in capsys.readouterr().err
