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
    with pytest.raises(ValueError, match=r"TrainConfig\.lr = 'fast': Input should be a valid number"):
        load_config(TrainJobConfig, str(path))
    path.write_text("train:\n  lr_max: 1.0\n")
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(TrainJobConfig, str(path))


# ------------------------------------------------------------------------------------- one mechanism: @config


def _reachable_config_classes(roots) -> set[type]:
    """The classes ``roots`` are built from: themselves and, recursively, every field whose type is a dataclass."""
    import dataclasses
    import typing

    seen, todo = set(), list(roots)
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo += [t for t in typing.get_type_hints(cls).values() if dataclasses.is_dataclass(t)]
    return seen


def test_every_setting_class_is_made_by_the_one_config_decorator():
    """Every stage's settings, their nested sections and Serve's settings: one decorator, so no class takes a value
    unchecked (a plain dataclass nested in a config would)."""
    from crops_ray.config import is_config
    from crops_ray.encoder import EncoderConfig
    from crops_ray.world.online import OnlineConfig
    from serve.settings import ServeSettings

    roots = [*_config_classes().values(), ServeSettings, OnlineConfig, EncoderConfig]
    classes = _reachable_config_classes(roots)
    assert len(classes) >= 20  # the walk reached the nested sections (discriminator, log_labels, negatives, ...)
    assert sorted(c.__name__ for c in classes if not is_config(c)) == []


def test_from_dict_refuses_a_class_that_would_not_check_its_values():
    import dataclasses

    from crops_ray.config import from_dict

    @dataclasses.dataclass
    class Plain:
        lr: float = 1.0

    with pytest.raises(TypeError, match="Plain is not a @config class"):
        from_dict(Plain, {"lr": "fast"})


def _serve_settings(tmp_path, yaml_text: str, sets: list[str] = ()):
    """ServeSettings as pipelines/serve.py reads them: --config YAML, then --set, through resolve_settings."""
    from crops_ray.config import settings
    from serve.settings import resolve_settings

    (tmp_path / "index").mkdir(exist_ok=True)
    (tmp_path / "index" / "index.json").write_text("{}")
    path = tmp_path / "serve.yaml"
    path.write_text(f"index: {tmp_path / 'index'}\n{yaml_text}")
    return resolve_settings(settings(str(path), {}, list(sets)))


def test_an_unknown_key_is_refused_by_name_at_every_level(tmp_path):
    from crops_ray.engine.build import EngineConfig
    from serve.settings import ServeSettings

    path = tmp_path / "engine.yaml"
    path.write_text("discriminator:\n  log_labels:\n    min_skip: 3\n")  # a nested section of a pipeline's YAML
    with pytest.raises(ValueError, match=r"LogLabelConfig: unknown setting\(s\) \['min_skip'\]; known: .*'min_skips'"):
        load_config(EngineConfig, str(path))
    with pytest.raises(ValueError, match=r"EngineConfig: unknown setting\(s\) \['alpah'\]"):
        load_config(EngineConfig, None, None, ["alpah=0.5"])  # --set, top level
    with pytest.raises(ValueError, match=r"DiscriminatorConfig: unknown setting\(s\) \['modle'\]"):
        load_config(EngineConfig, None, None, ["discriminator.modle=minilm"])  # --set, nested
    with pytest.raises(ValueError, match=r"ServeSettings: unknown setting\(s\) \['max_itmes'\]"):
        _serve_settings(tmp_path, "max_itmes: 3\n")  # Serve's YAML
    with pytest.raises(ValueError, match=r"ServeSettings: unknown setting\(s\) \['max_k2'\]"):
        _serve_settings(tmp_path, "", ["max_k2=5"])  # Serve's --set
    with pytest.raises(ValueError, match="max_itmes"):  # built in code: pydantic's own error, naming the key
        ServeSettings(index="i", max_itmes=3)
    with pytest.raises(ValueError, match="min_skip"):
        EngineConfig(discriminator={"log_labels": {"min_skip": 3}})


def test_strings_are_coerced_and_a_wrong_type_is_refused_by_name_in_pipelines_and_serve(tmp_path):
    from crops_ray.world.generator import WorldConfig
    from serve.settings import ServeSettings

    assert TrainConfig(lr="5e-5").lr == 5e-5 and isinstance(TrainConfig(lr="5e-5").lr, float)  # construction coerces
    cfg = load_config(TrainJobConfig, None, None, ["train.lr='5e-5'", "train.max_steps=12"])
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 5e-5 and cfg.train.max_steps == 12
    assert WorldConfig(exposed_range=[3, 9]).exposed_range == (3, 9)  # YAML's list becomes the field's tuple
    served = _serve_settings(tmp_path, "batch_wait_timeout_s: 5e-3\nmax_items: '8'\n")
    assert served.batch_wait_timeout_s == 0.005 and isinstance(served.batch_wait_timeout_s, float)
    assert served.max_items == 8
    with pytest.raises(ValueError, match=r"TrainConfig\.max_steps = 'many': Input should be a valid integer"):
        load_config(TrainJobConfig, None, None, ["train.max_steps=many"])
    with pytest.raises(ValueError, match=r"ServeSettings\.max_items = 'many': Input should be a valid integer"):
        _serve_settings(tmp_path, "max_items: many\n")
    with pytest.raises(ValueError, match=r"ServeSettings\.topology = 'ring'"):
        _serve_settings(tmp_path, "", ["topology=ring"])
    with pytest.raises(ValueError, match="lr"):  # built in code: refused too, naming the key
        TrainConfig(lr="fast")
    with pytest.raises(ValueError, match=r"max_items\n.*greater than or equal to 1"):
        ServeSettings(index="i", max_items=0)


def test_checks_run_on_replace_and_configs_survive_pickling():
    """``dataclasses.replace`` builds through the same checks; configs travel into Ray tasks by pickle."""
    import dataclasses
    import pickle

    import cloudpickle

    from crops_ray.engine.build import EngineConfig

    cfg = load_config(EngineConfig, None, None, ["alpha=0.7", "discriminator.log_labels.min_skips=4"])
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        assert loads(dumps(cfg)) == cfg
    assert dataclasses.replace(cfg, alpha="0.5").alpha == 0.5
    with pytest.raises(ValueError, match="alpha"):
        dataclasses.replace(cfg, alpha="high")
    assert dataclasses.asdict(cfg)["discriminator"]["log_labels"]["min_skips"] == 4


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
