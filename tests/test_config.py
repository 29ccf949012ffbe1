"""Typed configuration: YAML values are coerced to their field's type, bad ones named, unknown keys refused."""

import pytest

from crops_ray.config import load_config
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
