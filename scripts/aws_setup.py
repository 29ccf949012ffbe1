"""Least-privilege AWS resources for cluster.yaml: run once per account and region, before the first `ray up`.

    pip install boto3
    python scripts/aws_setup.py --region us-west-2 --ssh-cidr 198.51.100.0/24 --bucket my-crops-bucket

Creates, or checks when they already exist (idempotent):

- the security group ``crops-ray-sg`` (``provider.security_group.GroupName``) in the default VPC (or ``--vpc-id``):
  SSH 22 from ``--ssh-cidr`` only, all traffic between the group's own members, nothing else. Ray adds its
  default rules (SSH from 0.0.0.0/0) only to a group that has none (``ray/autoscaler/_private/aws/config.py``),
  so a group made here stays as it is. A world CIDR is refused. An existing group that opens anything to the
  world is reported and left alone (exit 1): fix it by hand, this script never deletes rules.
- the instance profile ``crops-ray-worker`` (the worker node types' ``IamInstanceProfile``): S3 list, read,
  write and delete on ``--bucket`` only (the pipelines' ``s3://`` inputs and outputs; an output is replaced by
  deleting the old one). No EC2, no IAM.
- the instance profile ``crops-ray-head`` (the head's): the same S3 rights, the EC2 calls Ray's autoscaler makes
  (``ray/autoscaler/_private/aws/node_provider.py``: run, describe, tag, stop, start, terminate; stop, start and
  terminate only on instances tagged ``ray-cluster-name=<--cluster-name>``), and ``iam:PassRole`` for the
  worker role only, so that it can start workers with their profile. Ray's own default, ``ray-autoscaler-v1``,
  is AmazonEC2FullAccess + AmazonS3FullAccess on every node.

Nothing here can be run against AWS from the machine that wrote it; ``tests/test_aws_setup.py`` runs it against
moto (an in-process AWS) and then Ray's own security-group bootstrap on cluster.yaml.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

GROUP = "crops-ray-sg"
HEAD, WORKER = "crops-ray-head", "crops-ray-worker"
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


class SetupError(RuntimeError):
    """A resource exists in a state this script will not change (e.g. a group open to the world)."""


def check_cidr(cidr: str) -> str:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a CIDR: {cidr!r} ({exc})") from None
    if net.prefixlen == 0:
        raise argparse.ArgumentTypeError(f"{cidr} opens SSH to the whole internet; give your office or VPN range")
    return str(net)


def s3_statements(bucket: str) -> list[dict]:
    return [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": f"arn:aws:s3:::{bucket}"},
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            "Resource": f"arn:aws:s3:::{bucket}/*",
        },
    ]


def worker_policy(bucket: str) -> dict:
    return {"Version": "2012-10-17", "Statement": s3_statements(bucket)}


def head_policy(bucket: str, worker_role_arn: str, cluster_name: str) -> dict:
    own = {"StringEquals": {"ec2:ResourceTag/ray-cluster-name": cluster_name}}
    return {
        "Version": "2012-10-17",
        "Statement": s3_statements(bucket)
        + [
            {
                "Effect": "Allow",
                "Action": [
                    "ec2:RunInstances",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeImages",
                ],
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": "*",
                "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            },
            {
                "Effect": "Allow",
                "Action": ["ec2:CreateTags", "ec2:StopInstances", "ec2:StartInstances", "ec2:TerminateInstances"],
                "Resource": "*",
                "Condition": own,
            },
            {"Effect": "Allow", "Action": "iam:PassRole", "Resource": worker_role_arn},
        ],
    }


def _world(rule: dict) -> bool:
    return any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", [])) or any(
        r.get("CidrIpv6") == "::/0" for r in rule.get("Ipv6Ranges", [])
    )


def ensure_security_group(ec2, vpc_id: str, cidr: str, name: str = GROUP, log=print) -> str:
    """The group's id; created with SSH from ``cidr`` and intra-group traffic, or checked when it exists."""
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    )["SecurityGroups"]
    if found:
        group = found[0]
        open_rules = [r for r in group["IpPermissions"] if _world(r)]
        if open_rules:
            raise SetupError(
                f"security group {name} ({group['GroupId']}) already opens {json.dumps(open_rules)} to the world; "
                "revoke those rules by hand (this script never deletes rules), then run it again"
            )
        if not group["IpPermissions"]:
            raise SetupError(
                f"security group {name} ({group['GroupId']}) exists with no rules: `ray up` would add SSH from "
                "0.0.0.0/0 to it. Delete it or add your rules, then run this again"
            )
        log(f"security group {name} ({group['GroupId']}) exists, nothing open to the world: left as it is")
        return group["GroupId"]
    gid = ec2.create_security_group(
        GroupName=name, VpcId=vpc_id, Description=f"crops-ray: SSH from {cidr}, all traffic inside the group"
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=gid,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": cidr}]},
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": gid}]},
        ],
    )
    log(f"security group {name} ({gid}) created: SSH from {cidr}, all traffic inside the group")
    return gid


def ensure_profile(iam, name: str, policy: dict, log=print) -> str:
    """An EC2 role + instance profile ``name`` holding ``policy`` inline (replaced on every run); the role's ARN."""
    try:
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except iam.exceptions.NoSuchEntityException:
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    if name not in {r["RoleName"] for r in profile.get("Roles", [])}:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    log(f"instance profile {name}: role {arn}, policy {name}-policy")
    return arn


def setup(
    region: str, ssh_cidr: str, bucket: str, vpc_id: str | None = None, cluster_name: str = "crops-ray", log=print
):
    import boto3

    ec2, iam = boto3.client("ec2", region_name=region), boto3.client("iam", region_name=region)
    if vpc_id is None:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise SetupError(f"no default VPC in {region}: pass --vpc-id (and SubnetIds in cluster.yaml)")
        vpc_id = vpcs[0]["VpcId"]
    gid = ensure_security_group(ec2, vpc_id, ssh_cidr, log=log)
    worker_arn = ensure_profile(iam, WORKER, worker_policy(bucket), log=log)
    ensure_profile(iam, HEAD, head_policy(bucket, worker_arn, cluster_name), log=log)
    return {"security_group": gid, "vpc": vpc_id, "head_profile": HEAD, "worker_profile": WORKER}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--region", required=True)
    p.add_argument("--ssh-cidr", required=True, type=check_cidr, help="who may SSH to the nodes, e.g. 198.51.100.0/24")
    p.add_argument("--bucket", required=True, help="the S3 bucket the pipelines read and write (name, no s3://)")
    p.add_argument("--vpc-id", help="default: the region's default VPC")
    p.add_argument("--cluster-name", default="crops-ray", help="cluster.yaml's cluster_name")
    args = p.parse_args(argv)
    if args.bucket.startswith("s3://") or "/" in args.bucket:
        p.error(f"--bucket takes a bucket name, not a path: {args.bucket!r}")
    try:
        made = setup(args.region, args.ssh_cidr, args.bucket, args.vpc_id, args.cluster_name)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(made, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
