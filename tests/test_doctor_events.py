"""`doctor`'s events checks against moto; the events IaC files against the parser; bot/adapters/sqs.py."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from bot import cli
from bot.adapters.sqs import AwsCallError, SqsApi
from bot.cli.doctor.events import events_lines
from bot.core.errors import TransientError
from bot.core.scan_events import DETAIL_TYPES, Ignored, RegistryEvent, parse_message
from bot.core.settings import EventsSettings, Settings
from tests import configs
from tests.fakes.ecr import EcrDouble, inspector2_finding_event
from tests.harness import point_boto3_at
from tests.test_doctor import restricted_credentials

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "docs" / "events.cloudformation.yaml"
TERRAFORM = ROOT / "docs" / "events.tf"
# Like test_doctor.py: a double (its own moto child process) and a region of our own.
REGION = "eu-west-3"
ACCOUNT = "123456789012"
DIGEST = "sha256:" + "ab" * 32


class _CloudFormationLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus CloudFormation's short tags (!Ref, !GetAtt, !Sub, !If, …) as their long form."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _tag)


def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CloudFormationLoader)


def resolve(node: Any, arns: dict[str, str]) -> Any:
    """The template's !GetAtt X.Arn / !Ref X replaced by the ARNs of what the test created."""
    if isinstance(node, dict):
        if set(node) == {"Fn::GetAtt"}:
            return arns[node["Fn::GetAtt"][0]]
        if set(node) == {"Ref"}:
            return arns[node["Ref"]]
        return {k: resolve(v, arns) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, arns) for v in node]
    return node


# --- the AWS side, built from the template ------------------------------------------------------------------


@pytest.fixture(scope="module")
def double() -> Iterator[EcrDouble]:
    with EcrDouble(region=REGION) as started:
        yield started


@pytest.fixture
def aws(double: EcrDouble, monkeypatch: pytest.MonkeyPatch) -> EcrDouble:
    point_boto3_at(double.env(), monkeypatch)
    return double


def _clients(double: EcrDouble) -> tuple[Any, Any]:
    args = {"endpoint_url": double.endpoint_url, "region_name": REGION}
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client("sqs", **args, **keys), boto3.client("events", **args, **keys)


def _attributes(properties: dict[str, Any]) -> dict[str, str]:
    names = ("VisibilityTimeout", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds", "SqsManagedSseEnabled")
    found = {n: properties[n] for n in names if n in properties}
    return {n: str(v).lower() if isinstance(v, bool) else str(v) for n, v in found.items()}


def deploy(
    double: EcrDouble,
    *,
    policy: str = "template",  # "template", "none", "unconditioned", "other-rule"
    rule: bool = True,
    pattern: Any = None,
    state: str = "ENABLED",
    redrive: bool = True,
    queue_attributes: dict[str, str] | None = None,
) -> dict[str, str]:
    """The template's queue, dead-letter queue, rule, target and queue policy (fresh names), with one thing
    broken on request. Returns the queue's URL and ARN and the rule's name and ARN."""
    resources = template()["Resources"]
    sqs, events = _clients(double)
    suffix = uuid.uuid4().hex[:8]
    dlq_url = sqs.create_queue(
        QueueName=f"dlq-{suffix}", Attributes=_attributes(resources["DeadLetterQueue"]["Properties"])
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = resources["Queue"]["Properties"]
    attributes = _attributes(queue)
    if redrive:
        redrive_policy = resolve(queue["RedrivePolicy"], {"DeadLetterQueue": dlq_arn})
        attributes["RedrivePolicy"] = json.dumps(redrive_policy)
    attributes.update(queue_attributes or {})
    url = sqs.create_queue(QueueName=f"events-{suffix}", Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = f"rule-{suffix}"
    rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}"
    if rule:
        props = resources["Rule"]["Properties"]
        rule_arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern or props["EventPattern"]), State=state)[
            "RuleArn"
        ]
        target = props["Targets"][0]
        events.put_targets(Rule=name, Targets=[{"Id": target["Id"], "Arn": arn}])
    document = resolve(resources["QueuePolicy"]["Properties"]["PolicyDocument"], {"Queue": arn, "Rule": rule_arn})
    if policy == "unconditioned":
        del document["Statement"][0]["Condition"]
    elif policy == "other-rule":
        document["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"] = rule_arn + "-old"
    if policy != "none":
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(document)})
    return {"url": url, "arn": arn, "rule": name, "rule_arn": rule_arn, "dlq": dlq_url, "dlq_arn": dlq_arn}


def settings(url: str, **events: Any) -> Settings:
    return Settings(gitlab={"url": "https://gitlab.example.com"}, events=EventsSettings(queue_url=url, **events))


def doctor(url: str, **events: Any) -> list[str]:
    return [line.render([]) for line in events_lines(settings(url, **events))]


def at(level: str, found: list[str]) -> list[str]:
    return [line for line in found if line.startswith(level)]


# --- doctor -------------------------------------------------------------------------------------------------


def test_the_template_setup_passes_every_check(aws: EcrDouble) -> None:
    made = deploy(aws)
    found = doctor(made["url"])
    name = made["url"].rsplit("/", 1)[-1]
    assert at("FAIL", found) == [] and at("WARN", found) == [] and at("INFO", found) == [], found
    assert found == [
        f"PASS  events {name}: queue reachable ({made['arn']}): 0 waiting",
        f"PASS  events {name}: VisibilityTimeout 60 s (the process asks for [events] visibility_timeout_s = 60 s)",
        f"PASS  events {name}: poison messages move to {made['dlq_arn']} after 5 receives",
        f"PASS  events {name}: messages are encrypted at rest (SSE-SQS)",
        f"PASS  events {name}: the queue policy lets EventBridge send, for {made['rule_arn']} only",
        f"PASS  events {name}: rule {made['rule']} sends to the queue and is ENABLED",
        f"PASS  events {name}: rule {made['rule']} matches {', '.join(repr(t) for t in DETAIL_TYPES)} events",
    ]


def test_no_queue_policy_fails(aws: EcrDouble) -> None:
    found = doctor(deploy(aws, policy="none")["url"])
    (fail,) = at("FAIL", found)
    assert "the queue has no access policy: EventBridge cannot deliver" in fail
    assert "Allow events.amazonaws.com sqs:SendMessage" in "\n".join(found)


def test_a_policy_without_source_arn_warns(aws: EcrDouble) -> None:
    found = doctor(deploy(aws, policy="unconditioned")["url"])
    assert at("FAIL", found) == []
    (warn,) = at("WARN", found)
    assert "lets EventBridge send without an aws:SourceArn condition: any rule of any account" in warn


def test_a_policy_naming_another_rule_fails(aws: EcrDouble) -> None:
    made = deploy(aws, policy="other-rule")
    (fail,) = at("FAIL", doctor(made["url"]))
    assert f"lets only {made['rule_arn']}-old send, not the rule that targets the queue ({made['rule_arn']})" in fail


def test_no_rule_fails(aws: EcrDouble) -> None:
    made = deploy(aws, rule=False)
    found = doctor(made["url"])
    (fail,) = at("FAIL", found)
    assert f"no EventBridge rule on the default bus of {REGION} sends to this queue" in fail
    assert f"--targets Id=ecr-scan-gate,Arn={made['arn']}" in "\n".join(found)


def test_a_rule_without_push_events_warns_what_is_lost(aws: EcrDouble) -> None:
    scans_only = {"$or": template()["Resources"]["Rule"]["Properties"]["EventPattern"]["$or"][:2]}
    found = doctor(deploy(aws, pattern=scans_only)["url"])
    assert at("FAIL", found) == []
    push, finding = at("WARN", found)
    assert "does not match 'ECR Image Action' events: a gate whose job event was lost waits for the sweep" in push
    assert "does not match 'Inspector2 Finding' events: with [monitor] on, a finding Inspector adds" in finding
    assert any("matches 'ECR Image Scan', 'Inspector2 Scan' events" in p for p in at("PASS", found))


def test_a_rule_for_complete_scans_only_names_the_failed_ones(aws: EcrDouble) -> None:
    pattern = {"source": ["aws.ecr"], "detail-type": ["ECR Image Scan"], "detail": {"scan-status": ["COMPLETE"]}}
    warns = at("WARN", doctor(deploy(aws, pattern=pattern)["url"]))
    assert any(
        "does not match 'ECR Image Scan' events with scan-status FAILED: basic scan results wait" in w for w in warns
    )
    assert any("does not match 'Inspector2 Scan' events: enhanced (Inspector) scan results" in w for w in warns)
    assert any("does not match 'ECR Image Action' events" in w for w in warns)


def test_a_broad_rule_warns_of_poison_and_notes_its_filters(aws: EcrDouble) -> None:
    pattern = {"source": ["aws.ecr", "aws.inspector2"], "account": [ACCOUNT]}
    found = doctor(deploy(aws, pattern=pattern)["url"])
    assert any("also matches events the process does not read (ECR Pull Through Cache Action" in w for w in found)
    assert any("also filters on account: make sure every gated image passes" in i for i in at("INFO", found))


def test_a_disabled_rule_fails(aws: EcrDouble) -> None:
    made = deploy(aws, state="DISABLED")
    found = doctor(made["url"])
    (fail,) = at("FAIL", found)
    assert f"rule {made['rule']} sends to the queue but is DISABLED: it sends nothing" in fail
    assert f"aws events enable-rule --name {made['rule']} --region {REGION}" in "\n".join(found)


def test_no_redrive_warns_unless_the_process_dead_letters(aws: EcrDouble) -> None:
    made = deploy(aws, redrive=False)
    (warn,) = at("WARN", doctor(made["url"]))
    assert "no RedrivePolicy and no [events] dead_letter_url: a poison message is received again" in warn
    assert "(4 days)" in warn
    found = doctor(made["url"], dead_letter_url=made["dlq"])
    assert at("WARN", found) == []
    assert any("the process moves poison messages to [events] dead_letter_url itself" in i for i in found)


def test_a_short_visibility_timeout_warns(aws: EcrDouble) -> None:
    (warn,) = at("WARN", doctor(deploy(aws, queue_attributes={"VisibilityTimeout": "10"})["url"]))
    assert "VisibilityTimeout 10 s (the process asks for [events] visibility_timeout_s = 60 s): under 30 s" in warn


def test_the_aws_managed_kms_key_fails(aws: EcrDouble) -> None:
    attributes = {"SqsManagedSseEnabled": "false", "KmsMasterKeyId": "alias/aws/sqs"}
    (fail,) = at("FAIL", doctor(deploy(aws, queue_attributes=attributes)["url"]))
    assert "encrypted with the AWS managed key alias/aws/sqs, unusable by EventBridge" in fail


def test_a_missing_queue_fails_and_stops(aws: EcrDouble) -> None:
    url = f"{aws.endpoint_url}/{ACCOUNT}/no-such-queue"
    assert doctor(url) == [
        f"FAIL  events no-such-queue: queue {url} does not exist (AWS.SimpleQueueService.NonExistentQueue): "
        "no event will be read\n      fix: create it with docs/events.cloudformation.yaml (or docs/events.tf), "
        "or fix [events] queue_url and region"
    ]


def test_credentials_without_the_queue_actions(aws: EcrDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    made = deploy(aws)
    with restricted_credentials(aws, monkeypatch, ["sqs:ReceiveMessage"]):
        found = doctor(made["url"])
    assert len(found) == 1 and found[0].startswith("FAIL"), found
    assert "the credentials cannot call sqs:GetQueueAttributes on" in found[0]
    assert "allow sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility" in found[0]


def test_credentials_that_cannot_list_rules_warn(aws: EcrDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    made = deploy(aws)
    with restricted_credentials(aws, monkeypatch, ["sqs:GetQueueAttributes"]):
        found = doctor(made["url"])
    assert at("FAIL", found) == []
    (warn,) = at("WARN", found)
    assert "rules not checked: events:ListRuleNamesByTarget" in warn
    assert "allow events:ListRuleNamesByTarget (Resource *) and events:DescribeRule" in warn


def test_events_off_is_one_info_line(aws: EcrDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor("") == [
        "INFO  events: off ([events] queue_url is empty): verdicts come by polling every 15 s; see docs/events.md"
    ]
    # Through the command: the events lines follow the others, on or off.
    made = deploy(aws)
    for events, expected in (({}, "INFO  events: off"), ({"events": {"queue_url": made["url"]}}, "rule-")):
        config = configs.write_config(
            tmp_path / "c.toml", defaults=False, gitlab={"url": "http://127.0.0.1:9"}, **events
        )
        cli.main(["doctor", "--config", str(config)], env={"AWS_DEFAULT_REGION": REGION, **aws.env()})
        out = capsys.readouterr().out
        assert expected in out and "FAIL  events" not in out and "WARN  events" not in out


# --- the IaC files and the parser must agree ----------------------------------------------------------------


def _kinds(pattern: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """detail-type -> (source, detail filter) of a pattern shaped like the template's ($or of one kind each)."""
    kinds = {}
    for branch in pattern["$or"]:
        ((detail_type,), (source,)) = branch["detail-type"], branch["source"]
        kinds[detail_type] = (source, branch.get("detail", {}))
    return kinds


def test_the_template_sends_exactly_what_the_parser_reads() -> None:
    resources = template()["Resources"]
    kinds = _kinds(resources["Rule"]["Properties"]["EventPattern"])
    assert {t: s for t, (s, _) in kinds.items()} == {t: source for t, (source, _, _) in DETAIL_TYPES.items()}
    assert kinds["ECR Image Action"][1] == {"action-type": ["PUSH"], "result": ["SUCCESS"]}
    assert kinds["ECR Image Scan"][1] == {} and kinds["Inspector2 Scan"][1] == {}
    assert kinds["Inspector2 Finding"][1] == {}
    assert resources["Rule"]["Properties"]["State"] == "ENABLED"
    assert resources["Rule"]["Properties"]["Targets"] == [
        {"Id": "ecr-scan-gate-queue", "Arn": {"Fn::GetAtt": ["Queue", "Arn"]}}
    ]
    (statement,) = resources["QueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["Rule", "Arn"]}}}
    queue = resources["Queue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True and queue["VisibilityTimeout"] == 60
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    assert queue["VisibilityTimeout"] == EventsSettings().visibility_timeout_s
    assert set(template()["Outputs"]) >= {"QueueUrl", "DeadLetterQueueUrl", "RuleArn"}


def test_the_terraform_matches_the_template() -> None:
    text = TERRAFORM.read_text(encoding="utf-8")
    heredoc = re.search(r"event_pattern = <<-PATTERN\n(.*?)\n\s*PATTERN\n", text, re.DOTALL)
    assert heredoc is not None
    assert json.loads(heredoc.group(1)) == template()["Resources"]["Rule"]["Properties"]["EventPattern"]
    policy = re.search(r'data "aws_iam_policy_document" "queue" \{(.*?)\n\}', text, re.DOTALL)
    assert policy is not None
    assert re.search(r'test\s*=\s*"ArnEquals"\s*variable\s*=\s*"aws:SourceArn"', policy.group(1))
    assert '"events.amazonaws.com"' in policy.group(1)
    flat = re.sub(r"[ ]+", " ", text)  # terraform fmt aligns the = signs
    for setting in ("visibility_timeout_seconds = 60", "sqs_managed_sse_enabled = true", "maxReceiveCount = 5"):
        assert setting in flat, setting


def test_the_template_rule_routes_the_four_kinds_in_moto(aws: EcrDouble) -> None:
    """moto's EventBridge evaluates the template's pattern: the kinds the parser reads arrive, nothing else."""
    made = deploy(aws)
    _, events = _clients(aws)
    wanted = [
        ("aws.ecr", "ECR Image Scan", {"scan-status": "COMPLETE", "image-tags": ["a1"], "finding-severity-counts": {}}),
        ("aws.inspector2", "Inspector2 Scan", {"scan-status": "INITIAL_SCAN_COMPLETE", "image-tags": ["a1"]}),
        ("aws.ecr", "ECR Image Action", {"action-type": "PUSH", "result": "SUCCESS", "image-tag": "a1"}),
        (
            "aws.inspector2",
            "Inspector2 Finding",
            inspector2_finding_event("app", DIGEST, region=REGION, account=ACCOUNT)["detail"],
        ),
    ]
    # Sent by the rule, and deleted by the process as nothing to do: Inspector's findings on an EC2 instance.
    ignored = [
        (
            "aws.inspector2",
            "Inspector2 Finding",
            inspector2_finding_event("app", DIGEST, resource_type="AWS_EC2_INSTANCE")["detail"],
        )
    ]
    unwanted = [
        ("aws.ecr", "ECR Image Action", {"action-type": "DELETE", "result": "SUCCESS"}),
        ("aws.ecr", "ECR Image Action", {"action-type": "PUSH", "result": "FAILURE"}),
        ("aws.inspector2", "Inspector2 Coverage", {}),
    ]
    for source, detail_type, detail in wanted + ignored + unwanted:
        name = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/app" if source == "aws.inspector2" else "app"
        extra = {} if detail_type == "Inspector2 Finding" else {"repository-name": name, "image-digest": DIGEST}
        body = {**extra, **detail}
        events.put_events(Entries=[{"Source": source, "DetailType": detail_type, "Detail": json.dumps(body)}])
    api = SqsApi(EventsSettings(queue_url=made["url"]))
    messages = api.receive(made["url"], 10, 1, 30)
    # moto's delivered envelope lacks "account", which EventBridge always sets: added here, nothing else changed.
    parsed = [parse_message(json.dumps({"account": ACCOUNT, **json.loads(m["Body"])})) for m in messages]
    assert [p.reason for p in parsed if isinstance(p, Ignored)] == [
        "a finding about AWS_EC2_INSTANCE, not an ECR image"
    ]
    assert len(parsed) == len(wanted) + len(ignored)
    assert sorted(p.kind.value + str(p.scanner) for p in parsed if isinstance(p, RegistryEvent)) == sorted(
        k.value + str(s) for _, k, s in DETAIL_TYPES.values()
    )
    assert api.delete(made["url"], [(m["MessageId"], m["ReceiptHandle"]) for m in messages]) == []
    assert api.receive(made["url"], 10, 0, 30) == []


# --- bot/adapters/sqs.py ------------------------------------------------------------------------------------


def test_the_adapter_receives_deletes_and_sends(aws: EcrDouble) -> None:
    made = deploy(aws)
    api = SqsApi(EventsSettings(queue_url=made["url"]))
    for i in range(12):
        api.send(made["url"], json.dumps({"n": i}))
    received: list[dict[str, Any]] = []
    while batch := api.receive(made["url"], 10, 0, 30):
        received += batch
    assert sorted(json.loads(m["Body"])["n"] for m in received) == list(range(12))
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in received)
    entries = [(m["MessageId"], m["ReceiptHandle"]) for m in received] + [("bogus", "not-a-receipt-handle")]
    assert api.delete(made["url"], entries) == ["bogus"]  # 13 entries: two batches, one refusal reported
    assert api.delete(made["url"], []) == []
    api.send(made["url"], "again")
    (message,) = api.receive(made["url"], 10, 0, 30)
    api.change_visibility(made["url"], message["ReceiptHandle"], 0)  # shown again at once
    (again,) = api.receive(made["url"], 10, 0, 30)
    assert again["MessageId"] == message["MessageId"] and again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_the_adapter_maps_errors(aws: EcrDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = f"{aws.endpoint_url}/{ACCOUNT}/no-such-queue"
    api = SqsApi(EventsSettings(queue_url=missing))
    with pytest.raises(AwsCallError) as refused:
        api.send(missing, "x")
    assert refused.value.missing and refused.value.action == "sqs:SendMessage" and not refused.value.denied
    with pytest.raises(AwsCallError) as no_rule:
        api.describe_rule("no-such-rule")
    assert no_rule.value.code == "ResourceNotFoundException" and no_rule.value.action == "events:DescribeRule"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(TransientError):
        SqsApi(EventsSettings(queue_url=missing), connect_timeout_s=1).receive(missing, 1, 0, 30)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(AwsCallError) as no_region:
        SqsApi(EventsSettings(queue_url=missing)).queue_attributes(missing)
    assert no_region.value.code == "NoRegion"
