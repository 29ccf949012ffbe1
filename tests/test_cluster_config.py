"""Offline checks of the Ray cluster-launcher configs (cluster.yaml, and cluster-gcp.yaml if present).

Ray's own validation runs first, exactly as `ray up` does before it talks to any cloud:
``prepare_config`` (merges the provider's defaults.yaml, fills per-type min/max workers) and
``validate_config`` (ray-schema.json plus head-type and sum(min_workers) checks). Neither needs boto3 or
credentials; the AWS-specific bootstrap (IAM, subnets, security groups, AMI) is a later step of `ray up`
that this test never reaches. On top of that come the invariants Ray does not check.
"""

from __future__ import annotations

import copy
import re
import socket
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "cluster.yaml", ROOT / "cluster-gcp.yaml") if p.exists())
RAY_PIN = "2.60.0"

# Ray's accelerator_type names for the GPU families we might pick (ray.util.accelerators).
AWS_GPU_FAMILY = {"g5": "A10G", "g6": "L4", "g6e": "L40S", "p4d": "A100", "p5": "H100"}
# vCPUs of the instance types used, so a changed InstanceType without changed resources is caught.
AWS_VCPUS = {
    "m6i.2xlarge": 8,
    "m6i.4xlarge": 16,
    "m6i.8xlarge": 32,
    "g5.2xlarge": 8,
    "g6e.2xlarge": 8,
    "g6e.4xlarge": 16,
}
WORLD = {"0.0.0.0/0", "::/0"}
PRIVATE_PORTS = (8265, 8000)  # dashboard / job API, Serve HTTP


def validate_cluster_config(raw: dict) -> dict:
    """Ray's offline validation plus the per-type bound Ray leaves out; returns the prepared config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    for name, node_type in cfg["available_node_types"].items():
        if node_type["min_workers"] > node_type["max_workers"]:
            raise ValueError(
                f"node type {name!r}: min_workers {node_type['min_workers']} > max_workers {node_type['max_workers']}"
            )
    return cfg


def load(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


@pytest.fixture(params=CONFIGS, ids=[p.name for p in CONFIGS])
def config_path(request) -> Path:
    return request.param


@pytest.fixture
def prepared(config_path) -> dict:
    return validate_cluster_config(load(config_path))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("config validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def worker_types(cfg: dict) -> dict:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def setup_commands_for(cfg: dict, node_type: str) -> list[str]:
    """What the launcher runs on a node of this type (after prepare_config's merge)."""
    if node_type == cfg["head_node_type"]:
        return cfg["head_setup_commands"]
    return cfg["available_node_types"][node_type].get("worker_setup_commands", cfg["worker_setup_commands"])


def package_installs(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"pip install\b.*\s-e\s", c) and "crops-ray" in c]


def test_ray_validation_is_offline(config_path, no_network):
    before = set(sys.modules)
    cfg = validate_cluster_config(load(config_path))
    assert cfg["cluster_name"] == "crops-ray"
    assert "cluster_synced_files" in cfg  # defaults were merged
    newly = set(sys.modules) - before
    assert not any(m == "boto3" or m.startswith(("boto3.", "googleapiclient")) for m in newly)


def test_gpu_worker_scales_from_zero(prepared):
    gpu = {k: v for k, v in worker_types(prepared).items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu, "no GPU worker type"
    for name, node_type in gpu.items():
        assert node_type["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name
    cpu_only = [k for k, v in worker_types(prepared).items() if not v["resources"].get("GPU")]
    assert cpu_only, "no CPU-only worker type"


def test_every_type_min_le_max(prepared):
    for name, node_type in prepared["available_node_types"].items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
        assert node_type["max_workers"] <= prepared["max_workers"], name


def test_head_takes_no_work(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert not head["resources"].get("GPU")
    assert head["max_workers"] == 0


def test_autoscaling_knobs(prepared, config_path):
    raw = load(config_path)
    assert raw.get("idle_timeout_minutes", 0) > 0  # set explicitly, not inherited
    assert raw.get("upscaling_speed", 0) > 0


def test_setup_installs_the_package(prepared):
    assert prepared["file_mounts"].get("~/crops-ray") == "."
    assert ".gitignore" in prepared.get("rsync_filter", [])  # keeps .venv/ and runs/ off the nodes
    for name in prepared["available_node_types"]:
        commands = setup_commands_for(prepared, name)
        installs = package_installs(commands)
        assert installs, f"{name}: no `pip install -e` of the mounted tree"
        has_gpu = prepared["available_node_types"][name]["resources"].get("GPU", 0) >= 1
        with_extra = [c for c in installs if "crops-ray[gpu]" in c]
        assert bool(with_extra) == has_gpu, f"{name}: gpu extra must be installed exactly on GPU nodes"
        assert any(f"ray[default]=={RAY_PIN}" in c for c in commands), f"{name}: Ray not pinned"
        assert not any("HF_HUB_OFFLINE" in c for c in commands), f"{name}: nodes may pull models"


def test_ray_pin_matches_installed_and_pyproject():
    import ray

    assert ray.__version__ == RAY_PIN
    assert f"=={RAY_PIN}" in (ROOT / "pyproject.toml").read_text()


def test_start_commands(prepared):
    head = " ".join(prepared["head_start_ray_commands"])
    worker = " ".join(prepared["worker_start_ray_commands"])
    assert "--head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--address=$RAY_HEAD_IP:6379" in worker
    for cmd in (head, worker):
        assert "--disable-usage-stats" in cmd


def _ip_permissions(obj):
    """Every IpPermissions rule anywhere in the config (provider security group, launch templates...)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "IpPermissions":
                yield from value
            else:
                yield from _ip_permissions(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _ip_permissions(item)


def _opens_to_world(rule: dict, port: int) -> bool:
    cidrs = {r.get("CidrIp") for r in rule.get("IpRanges", [])} | {
        r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])
    }
    if not cidrs & WORLD:
        return False
    if str(rule.get("IpProtocol")) == "-1":
        return True
    lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
    return lo == -1 or lo <= port <= hi


def test_private_ports_not_open_to_world(prepared):
    """The config opens no port itself: its nodes join the named group that scripts/aws_setup.py creates with SSH
    from one CIDR only, whose real rules (after Ray's own bootstrap) tests/test_aws_setup.py reads back from moto.
    A rule written here would be added to that group by `ray up`, so none may open the dashboard or Serve."""
    rules = list(_ip_permissions(prepared))
    for rule in rules:
        for port in PRIVATE_PORTS:
            assert not _opens_to_world(rule, port), f"security group opens {port} to the world: {rule}"
    if prepared["provider"]["type"] == "aws":
        assert prepared["provider"].get("security_group", {}).get("GroupName") == "crops-ray-sg"
        assert rules == [], f"cluster.yaml adds security-group rules of its own: {rules}"
        sys.path.insert(0, str(ROOT / "scripts"))
        import aws_setup  # the group the config names is the one the script makes

        assert aws_setup.GROUP == prepared["provider"]["security_group"]["GroupName"]


def test_the_port_check_catches_a_world_rule_added_to_the_config(config_path):
    """The check above on a copy of cluster.yaml with the rule a hurried user might add: it must fail."""
    raw = load(config_path)
    raw["provider"].setdefault("security_group", {})["IpPermissions"] = [
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    ]
    with pytest.raises(AssertionError, match="opens 8265 to the world"):
        test_private_ports_not_open_to_world(validate_cluster_config(raw))


def test_world_rule_detector_is_not_vacuous():
    assert _opens_to_world(
        {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, 8265
    )
    assert _opens_to_world({"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}, 8000)
    assert not _opens_to_world(
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, 8265
    )
    assert not _opens_to_world(
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, 8265
    )


def test_aws_node_types_match_instances(prepared):
    if prepared["provider"]["type"] != "aws":
        pytest.skip("AWS-specific")
    for name, node_type in prepared["available_node_types"].items():
        node_config = node_type["node_config"]
        assert re.fullmatch(r"ami-[0-9a-f]{8}([0-9a-f]{9})?", node_config["ImageId"]), name
        instance = node_config["InstanceType"]
        if name != prepared["head_node_type"] and instance in AWS_VCPUS:
            assert node_type["resources"]["CPU"] == AWS_VCPUS[instance], name
        if node_type["resources"].get("GPU"):
            accel = AWS_GPU_FAMILY[instance.split(".")[0]]
            assert node_type["resources"].get(f"accelerator_type:{accel}") == 1, name


def _break_unknown_key(cfg):
    cfg["no_such_key"] = 1


def _break_min_gt_max(cfg):
    gpu = next(k for k, v in worker_types(cfg).items() if v["resources"].get("GPU"))
    cfg["available_node_types"][gpu].update(min_workers=3, max_workers=1)


def _break_fractional_gpu(cfg):
    gpu = next(k for k, v in worker_types(cfg).items() if v["resources"].get("GPU"))
    cfg["available_node_types"][gpu]["resources"]["GPU"] = 0.5


def _break_head_type(cfg):
    cfg["head_node_type"] = "no_such_type"


def _break_missing_resources(cfg):
    del cfg["available_node_types"][cfg["head_node_type"]]["resources"]


def _break_sum_min_workers(cfg):
    for node_type in worker_types(cfg).values():
        node_type["min_workers"] = node_type["max_workers"] = cfg["max_workers"]


@pytest.mark.parametrize(
    "breaker, reason",
    [
        (_break_unknown_key, "no_such_key"),
        (_break_min_gt_max, "min_workers 3 > max_workers 1"),  # ours: Ray does not check this
        (_break_fractional_gpu, "not of type 'integer'"),
        (_break_head_type, "head_node_type"),
        (_break_missing_resources, "'resources' is a required property"),
        (_break_sum_min_workers, "sum of `min_workers`"),
    ],
    ids=["unknown_key", "min_gt_max", "fractional_gpu", "head_type", "missing_resources", "sum_min_workers"],
)
def test_broken_copies_are_rejected(config_path, breaker, reason):
    import jsonschema

    raw = load(config_path)
    validate_cluster_config(raw)  # the original passes
    broken = copy.deepcopy(raw)
    breaker(broken)
    with pytest.raises((ValueError, jsonschema.ValidationError), match=re.escape(reason)):
        validate_cluster_config(broken)
