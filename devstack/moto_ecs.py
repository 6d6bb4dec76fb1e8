"""moto in server mode as the ECS + EC2 endpoint, and the idempotent bootstrap of what a charger
task needs there (VPC with DNS hostnames, subnet, security group, cluster, task definition)."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from devstack.procs import niced, stop_process, uninterrupted, venv_binary, wait_for_port

NAME_TAG = "ocpplab-dev"


class MotoServer:
    def __init__(self, port: int, log_file: Path | None = None) -> None:
        self.port = port
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, nice: int = 0) -> None:
        out: Any = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        with uninterrupted():
            self.proc = subprocess.Popen(
                niced([str(venv_binary("moto_server")), "-H", "127.0.0.1", "-p", str(self.port)], nice),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port("127.0.0.1", self.port, self.proc, "moto server")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


@dataclass
class EcsBootstrap:
    subnet_ids: list[str]
    security_group_ids: list[str]
    task_definition_arn: str
    cluster_arn: str


def _tag_filter() -> list[dict[str, Any]]:
    return [{"Name": "tag:Name", "Values": [NAME_TAG]}]


def _tags(resource: str) -> list[dict[str, Any]]:
    return [{"ResourceType": resource, "Tags": [{"Key": "Name", "Value": NAME_TAG}]}]


def bootstrap_ecs(
    endpoint_url: str,
    region: str,
    cluster: str,
    task_family: str,
    container_name: str,
    image: str,
    seed: int | None = None,
) -> EcsBootstrap:
    """Find-or-create every resource by its Name tag, so a second call changes nothing.

    With `seed`, moto's random ids are seeded first, so a fresh (or reset) moto gets the same
    subnet and security group ids every time; it is re-seeded at random afterwards, so that task
    ARNs never repeat those of an earlier run (the database keeps them)."""
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint_url, **creds)
    ecs = boto3.client("ecs", region_name=region, endpoint_url=endpoint_url, **creds)
    if seed is not None:
        ec2.describe_vpcs()  # moto creates the default VPC on first use: before the seed, always
        _moto_api(endpoint_url, f"seed?a={seed}")
    try:
        return _bootstrap(ec2, ecs, endpoint_url, cluster, task_family, container_name, image)
    finally:
        if seed is not None:
            _moto_api(endpoint_url, f"seed?a={secrets.randbits(32)}")


def reset_moto(endpoint_url: str) -> None:
    """Forget everything moto holds (every backend), as a fresh moto server would."""
    _moto_api(endpoint_url, "reset")


def _moto_api(endpoint_url: str, path: str, body: bytes = b"") -> None:
    request = urllib.request.Request(f"{endpoint_url}/moto-api/{path}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def _bootstrap(
    ec2: Any, ecs: Any, endpoint_url: str, cluster: str, task_family: str, container_name: str, image: str
) -> EcsBootstrap:

    vpcs = ec2.describe_vpcs(Filters=_tag_filter())["Vpcs"]
    if vpcs:
        vpc_id = vpcs[0]["VpcId"]
    else:
        vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=_tags("vpc"))["Vpc"]["VpcId"]
    # moto's FARGATE RunTask needs DNS hostnames on the VPC
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})

    subnets = ec2.describe_subnets(Filters=_tag_filter())["Subnets"]
    if subnets:
        subnet_id = subnets[0]["SubnetId"]
    else:
        subnet_id = ec2.create_subnet(
            VpcId=vpc_id, CidrBlock="10.0.0.0/17", TagSpecifications=_tags("subnet")
        )["Subnet"]["SubnetId"]

    groups = ec2.describe_security_groups(Filters=_tag_filter())["SecurityGroups"]
    if groups:
        group_id = groups[0]["GroupId"]
    else:
        group_id = ec2.create_security_group(
            GroupName=f"{NAME_TAG}-chargers",
            Description="simulated chargers",
            VpcId=vpc_id,
            TagSpecifications=_tags("security-group"),
        )["GroupId"]

    found = ecs.describe_clusters(clusters=[cluster])["clusters"]
    active = [c for c in found if c.get("status") == "ACTIVE"]
    if active:
        cluster_arn = active[0]["clusterArn"]
    else:
        cluster_arn = ecs.create_cluster(clusterName=cluster)["cluster"]["clusterArn"]

    try:
        task_def_arn = ecs.describe_task_definition(taskDefinition=task_family)["taskDefinition"][
            "taskDefinitionArn"
        ]
    except ecs.exceptions.ClientException:
        task_def_arn = ecs.register_task_definition(
            family=task_family,
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": container_name,
                    "image": image,
                    "essential": True,
                    "cpu": 256,
                    "memory": 512,  # moto answers 500 without them
                    "environment": [{"name": "CHARGER_IDENTITY", "value": "set-per-task"}],
                }
            ],
        )["taskDefinition"]["taskDefinitionArn"]

    keep_tasks_running(endpoint_url)
    return EcsBootstrap([subnet_id], [group_id], task_def_arn, cluster_arn)


def keep_tasks_running(endpoint_url: str) -> None:
    """moto walks a task through RUNNING → DEACTIVATING → … → STOPPED one step per describe
    ("immediate" progression). A simulated charger should stay up until StopTask, as on ECS."""
    body = json.dumps(
        {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000_000}}
    )
    _moto_api(endpoint_url, "state-manager/set-transition", body.encode())
