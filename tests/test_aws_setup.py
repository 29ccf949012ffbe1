"""scripts/aws_setup.py against moto (an in-process AWS), then Ray's own security-group bootstrap on cluster.yaml:
no rule opens anything to the world, and each node type's profile holds only what it needs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")
import aws_setup  # noqa: E402

REGION, CIDR, BUCKET = "us-west-2", "198.51.100.0/24", "crops-logs"


@pytest.fixture
def aws(monkeypatch):
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(k, v)
    with moto.mock_aws():
        yield boto3.client("ec2", region_name=REGION), boto3.client("iam", region_name=REGION)


def _rules(ec2, name="crops-ray-sg"):
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    return [r for g in groups for r in g["IpPermissions"]]


def _world(rules):
    return [r for r in rules if aws_setup._world(r)]


def _actions(policy):
    return {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def _ray_bootstraps_security_groups():
    """What `ray up` does to the network: Ray's own subnet and security-group steps on cluster.yaml."""
    from ray.autoscaler._private.aws import config as ray_aws
    from ray.autoscaler._private.util import prepare_config

    cfg = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    cfg = ray_aws._configure_subnet(cfg)
    return ray_aws._configure_security_group(cfg)


def test_rays_bootstrap_opens_ssh_to_the_world_without_the_script(aws):
    """The control: Ray itself creates crops-ray-sg with SSH from 0.0.0.0/0 when the group does not exist."""
    ec2, _ = aws
    _ray_bootstraps_security_groups()
    assert any(r.get("FromPort") == 22 for r in _world(_rules(ec2)))


def test_after_the_script_ray_adds_nothing_and_nothing_is_open_to_the_world(aws):
    ec2, iam = aws
    made = aws_setup.setup(REGION, CIDR, BUCKET, log=lambda *_: None)
    cfg = _ray_bootstraps_security_groups()
    rules = _rules(ec2)
    assert not _world(rules)
    ssh = [r for r in rules if r.get("FromPort") == 22]
    assert [ip["CidrIp"] for r in ssh for ip in r["IpRanges"]] == [CIDR]
    inside = [r for r in rules if r["IpProtocol"] == "-1"]
    assert [p["GroupId"] for r in inside for p in r["UserIdGroupPairs"]] == [made["security_group"]]
    for node_type in cfg["available_node_types"].values():  # every node is launched into the script's group
        assert node_type["node_config"]["SecurityGroupIds"] == [made["security_group"]]

    # The profiles cluster.yaml names exist and hold the script's policies.
    types = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    names = {t: n["node_config"]["IamInstanceProfile"]["Name"] for t, n in types.items()}
    assert names == {"head": "crops-ray-head", "cpu_worker": "crops-ray-worker", "gpu_worker": "crops-ray-worker"}
    for name in set(names.values()):
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        assert [r["RoleName"] for r in profile["Roles"]] == [name]
    worker = iam.get_role_policy(RoleName="crops-ray-worker", PolicyName="crops-ray-worker-policy")["PolicyDocument"]
    head = iam.get_role_policy(RoleName="crops-ray-head", PolicyName="crops-ray-head-policy")["PolicyDocument"]
    worker, head = (json.loads(p) if isinstance(p, str) else p for p in (worker, head))
    s3_rights = ("ListBucket", "GetBucketLocation", "GetObject", "PutObject", "DeleteObject", "AbortMultipartUpload")
    assert _actions(worker) <= {f"s3:{a}" for a in s3_rights}
    s3_resources = {
        s["Resource"] for doc in (worker, head) for s in doc["Statement"] if s["Action"][0].startswith("s3")
    }
    assert s3_resources == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    assert not any(a.endswith("*") for a in _actions(head)) and {a for a in _actions(head) if a.startswith("iam:")} == {
        "iam:PassRole"
    }
    passes = [s["Resource"] for s in head["Statement"] if s["Action"] == "iam:PassRole"]
    assert passes == [iam.get_role(RoleName="crops-ray-worker")["Role"]["Arn"]]
    terminate = [s for s in head["Statement"] if "ec2:TerminateInstances" in s["Action"]]
    tag = "ec2:ResourceTag/ray-cluster-name"
    assert terminate and all(s["Condition"]["StringEquals"][tag] == "crops-ray" for s in terminate)

    again = aws_setup.setup(REGION, CIDR, BUCKET, log=lambda *_: None)  # idempotent: same group, same rules
    assert again["security_group"] == made["security_group"] and _rules(ec2) == rules


def test_a_group_open_to_the_world_is_reported_not_edited(aws):
    ec2, _ = aws
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    gid = ec2.create_security_group(GroupName="crops-ray-sg", VpcId=vpc, Description="old")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=gid,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    with pytest.raises(aws_setup.SetupError, match="to the world"):
        aws_setup.setup(REGION, CIDR, BUCKET, log=lambda *_: None)
    assert len(_world(_rules(ec2))) == 1  # left as it was


def test_command_line_refuses_a_world_cidr_and_a_bucket_path(capsys):
    for argv in (["--ssh-cidr", "0.0.0.0/0", "--bucket", BUCKET], ["--ssh-cidr", CIDR, "--bucket", "s3://b/x"]):
        with pytest.raises(SystemExit) as exc:
            aws_setup.main(["--region", REGION, *argv])
        assert exc.value.code == 2
    assert "whole internet" in capsys.readouterr().err
