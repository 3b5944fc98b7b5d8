"""The doctor's events checks: the SQS queue, its redrive and access policy, and the EventBridge rule feeding it."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator, Mapping
from typing import Any

from bot.adapters.sqs import DESCRIBE_RULE, GET_ATTRIBUTES, LIST_RULES_BY_TARGET, AwsCallError, SqsApi
from bot.cli.doctor.lines import Level, Line
from bot.core.errors import GateError
from bot.core.scan_events import DETAIL_TYPES
from bot.core.settings import Settings

TEMPLATE = "docs/events.cloudformation.yaml (or docs/events.tf)"
MIN_VISIBILITY_S = 30
PROCESS_ACTIONS = "sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility and sqs:GetQueueAttributes"
_ENABLED = ("ENABLED", "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS")
# Each kind of event the rule must send, in the fields a pattern decides on: a basic scan says COMPLETE or
# FAILED, an Inspector scan INITIAL_SCAN_COMPLETE; the process acts on a push that is PUSH/SUCCESS, and on
# an Inspector finding that is opened, kept or closed.
_DETAIL: dict[str, list[dict[str, str]]] = {
    "ECR Image Scan": [{"scan-status": "COMPLETE"}, {"scan-status": "FAILED"}],
    "Inspector2 Scan": [{"scan-status": "INITIAL_SCAN_COMPLETE"}],
    "ECR Image Action": [{"action-type": "PUSH", "result": "SUCCESS"}],
    "Inspector2 Finding": [{"status": "ACTIVE"}, {"status": "CLOSED"}],
}
# Events of the same sources the process does not read: each one would be a poison message.
_FOREIGN = [("aws.ecr", "ECR Pull Through Cache Action"), ("aws.inspector2", "Inspector2 Coverage")]
_CHECKED = frozenset(
    {
        "source",
        "detail-type",
        "detail.scan-status",
        "detail.action-type",
        "detail.result",
        "detail.status",
    }
)
# What a missing kind of event costs: never a verdict, only time.
_LOST = {
    "ECR Image Scan": "basic scan results wait for the backstop poll (every {backstop:g} s)",
    "Inspector2 Scan": "enhanced (Inspector) scan results, if used, wait for the backstop poll (every {backstop:g} s)",
    "ECR Image Action": "a gate whose job event was lost waits for the sweep (every {sweep:g} s) instead of "
    "starting at the push, and a push that matches no gate is not counted as config drift",
    "Inspector2 Finding": "with [monitor] on, a finding Inspector adds to a deployed image (enhanced scanning) "
    "waits for the daily rescan",
}


def events_lines(settings: Settings, api: SqsApi | None = None) -> Iterator[Line]:
    """The events queue and the rule feeding it, when [events] queue_url is set; one INFO line when events are off."""
    if not settings.events.enabled:
        every = f"{settings.scan.poll_interval_s:g} s"
        off = f"off ([events] queue_url is empty): verdicts come by polling every {every}; see docs/events.md"
        yield Line(Level.INFO, "events", off)
        return
    yield from _EventsDoctor(settings, api or SqsApi.for_settings(settings)).lines()


class _EventsDoctor:
    def __init__(self, settings: Settings, api: SqsApi) -> None:
        self.settings, self.api, self.url = settings, api, settings.events.queue_url
        self.subject = f"events {self.url.rstrip('/').rsplit('/', 1)[-1]}"
        self.region, self.arn = settings.events.queue_region, ""

    def line(self, level: Level, message: str, fix: str = "") -> Line:
        return Line(level, self.subject, message, fix)

    def lines(self) -> Iterator[Line]:
        try:
            attrs = self.api.queue_attributes(self.url)
        except GateError as exc:
            yield self.unreachable(exc)
            return
        self.arn = arn = attrs.get("QueueArn", "")
        self.region = arn.split(":")[3] if arn.count(":") >= 5 else self.region
        yield self.line(Level.PASS, f"queue reachable ({arn}): {attrs.get('ApproximateNumberOfMessages', '?')} waiting")
        yield self.visibility(int(attrs.get("VisibilityTimeout") or 30))
        yield self.redrive(attrs)
        yield self.encryption(attrs.get("KmsMasterKeyId", ""), attrs.get("SqsManagedSseEnabled") == "true")
        rules: dict[str, dict[str, Any]] = {}
        try:
            for name in self.api.rule_names_by_target(arn):
                try:
                    rules[name] = self.api.describe_rule(name)
                except GateError as exc:
                    rules[name] = {"error": f"{DESCRIBE_RULE}: {exc}"}
        except GateError as exc:
            rules = {"": {"error": str(exc)}}
        statements = _statements(attrs.get("Policy", ""), arn)
        yield self.policy(statements, bool(attrs.get("Policy")), [str(r.get("Arn", "")) for r in rules.values()])
        yield from self.rules(rules, statements)

    def unreachable(self, exc: GateError) -> Line:
        if not isinstance(exc, AwsCallError):
            return self.line(Level.WARN, f"could not reach the queue {self.url}: {exc}", "re-run the doctor")
        if exc.missing:
            fix = f"create it with {TEMPLATE}, or fix [events] queue_url and region"
            return self.line(Level.FAIL, f"queue {self.url} does not exist ({exc.code}): no event will be read", fix)
        if exc.denied:
            found = f"the credentials cannot call {GET_ATTRIBUTES} on {self.url} (AccessDenied)"
            fix = f"allow {PROCESS_ACTIONS} on the queue's ARN (EventsProcessPolicy in {TEMPLATE}); never sqs:*"
            return self.line(Level.FAIL, found, fix)
        fix = "check [events] queue_url and region, and the credentials (AWS_PROFILE, a role)"
        return self.line(Level.FAIL, f"cannot read the queue {self.url}: {exc}", fix)

    def visibility(self, queue_s: int) -> Line:
        own_s = self.settings.events.visibility_timeout_s
        found = f"VisibilityTimeout {queue_s} s (the process asks for [events] visibility_timeout_s = {own_s} s)"
        if min(queue_s, own_s) >= MIN_VISIBILITY_S:
            return self.line(Level.PASS, found)
        why = f"under {MIN_VISIBILITY_S} s a message comes back while its batch is still being handled (handled twice)"
        fix = "set the queue's VisibilityTimeout and [events] visibility_timeout_s to 60"
        return self.line(Level.WARN, f"{found}: {why}", fix)

    def redrive(self, attrs: Mapping[str, str]) -> Line:
        redrive = _json(attrs.get("RedrivePolicy")) or {}
        target = str(redrive.get("deadLetterTargetArn") or "") if isinstance(redrive, dict) else ""
        dead_letter_url = self.settings.events.dead_letter_url
        if target:
            also = " (and at once by the process to [events] dead_letter_url)" if dead_letter_url else ""
            receives = redrive.get("maxReceiveCount", "?")
            return self.line(Level.PASS, f"poison messages move to {target} after {receives} receives{also}")
        days = int(attrs.get("MessageRetentionPeriod") or 345600) / 86400
        retention = f"until the queue's retention ends ({days:g} days)"
        fix = f"give the queue a RedrivePolicy to a dead-letter queue, maxReceiveCount 5, as {TEMPLATE} does"
        if dead_letter_url:
            found = "no RedrivePolicy: the process moves poison messages to [events] dead_letter_url itself, but "
            return self.line(Level.INFO, f"{found}a message it fails on otherwise comes back {retention}", fix)
        found = "no RedrivePolicy and no [events] dead_letter_url: a poison message is received again every "
        return self.line(Level.WARN, f"{found}visibility timeout {retention}", fix)

    def encryption(self, key: str, sse_sqs: bool) -> Line:
        fix = f"aws sqs set-queue-attributes --queue-url {self.url} --attributes "
        fix += "KmsMasterKeyId='',SqsManagedSseEnabled=true"
        if key.endswith("alias/aws/sqs"):
            found = "encrypted with the AWS managed key alias/aws/sqs, unusable by EventBridge: every delivery fails"
            return self.line(Level.FAIL, found, fix)
        if key:  # a customer managed key works when its key policy lets EventBridge and the process use it
            found = f"encrypted with KMS key {key}: let events.amazonaws.com kms:GenerateDataKey and kms:Decrypt"
            return self.line(Level.INFO, f"{found}, and the process kms:Decrypt")
        if sse_sqs:
            return self.line(Level.PASS, "messages are encrypted at rest (SSE-SQS)")
        return self.line(Level.INFO, "messages are not encrypted at rest (they name repositories and digests)", fix)

    def policy(self, statements: list[dict[str, Any]], has_policy: bool, rule_arns: list[str]) -> Line:
        fix = f"add the QueuePolicy of {TEMPLATE}: Allow events.amazonaws.com sqs:SendMessage on {self.arn}, "
        fix += "Condition ArnEquals aws:SourceArn = the rule's ARN"
        grants = [st for st in statements if {"*", "events.amazonaws.com"} & {*_principals(st, "Service", "AWS")}]
        if not grants:
            what = "policy allows events.amazonaws.com no sqs:SendMessage" if has_policy else "has no access policy"
            found = f"the queue {what}: EventBridge cannot deliver (seen only in the rule's FailedInvocations metric)"
            return self.line(Level.FAIL, found, fix)
        if any(not _source_arns(st) for st in grants):
            found = "the queue policy lets EventBridge send without an aws:SourceArn condition: any rule of any "
            return self.line(Level.WARN, f"{found}account can put messages the process reads as registry events", fix)
        sources = sorted({a for st in grants for a in _source_arns(st)})
        allowed, rule_arns = ", ".join(sources), [r for r in rule_arns if r]
        if rule_arns and not any(fnmatch.fnmatchcase(r, a) for r in rule_arns for a in sources):
            found = f"the queue policy lets only {allowed} send, not the rule that targets the queue"
            return self.line(Level.FAIL, f"{found} ({', '.join(rule_arns)}): its deliveries are refused", fix)
        return self.line(Level.PASS, f"the queue policy lets EventBridge send, for {allowed} only")

    def rules(self, rules: dict[str, dict[str, Any]], statements: list[dict[str, Any]]) -> Iterator[Line]:
        region = self.region or "<region>"
        if "" in rules:  # the listing itself failed
            fix = f"allow {LIST_RULES_BY_TARGET} (Resource *) and {DESCRIBE_RULE} to the identity running the doctor"
            yield self.line(Level.WARN, f"rules not checked: {rules['']['error']}", fix)
            return
        if not rules:
            account = self.arn.split(":")[4] if self.arn.count(":") >= 5 else "?"
            others = [p for st in statements for p in _principals(st, "AWS") if p != "*" and account not in p]
            if others:
                found = f"no rule of this account sends to the queue; the queue policy lets {', '.join(others)} send: "
                found += "if that is a rule's role in another account, check that rule there"
                yield self.line(Level.WARN, found, "or forward to this account's default bus (docs/events.md)")
                return
            found = f"no EventBridge rule on the default bus of {region} sends to this queue: no event arrives, "
            fix = f"deploy {TEMPLATE}, or: aws events put-targets --rule <rule> --region {region} "
            fix += f"--targets Id=ecr-scan-gate,Arn={self.arn}"
            yield self.line(Level.FAIL, f"{found}so every verdict waits for the backstop poll", fix)
            return
        patterns: list[tuple[str, Any]] = []
        for name, rule in sorted(rules.items()):
            state = str(rule.get("State", ""))
            if "error" in rule:
                yield self.line(Level.WARN, f"rule {name} sends to the queue but could not be read: {rule['error']}")
            elif state not in _ENABLED:
                fix = f"aws events enable-rule --name {name} --region {region}"
                yield self.line(Level.FAIL, f"rule {name} sends to the queue but is {state}: it sends nothing", fix)
            else:
                yield self.line(Level.PASS, f"rule {name} sends to the queue and is {state}")
                patterns.append((name, _json(rule.get("EventPattern"))))
        yield from self.coverage(patterns)

    def coverage(self, patterns: list[tuple[str, Any]]) -> Iterator[Line]:
        """Per kind of event the process reads: does some enabled rule's pattern match every form of it?"""
        if not patterns:  # no enabled rule: said above
            return
        names, timing = ", ".join(n for n, _ in patterns), self.settings.events.backstop_interval_s
        narrowed: set[str] = set()
        covered: list[str] = []
        for detail_type, (source, _, _) in DETAIL_TYPES.items():
            missed, unsure = [], False
            for detail in _DETAIL[detail_type]:
                event = {"source": source, "detail-type": detail_type, "detail": detail}
                results = [_match(p, event, narrowed) for _, p in patterns]
                unsure = unsure or (True not in results and None in results)
                if True not in results:
                    missed.append(" ".join(f"{k} {v}" for k, v in detail.items()))
            if unsure:
                yield self.line(Level.INFO, f"cannot tell whether rule {names} matches {detail_type!r} events")
            elif missed:
                only = "" if len(missed) == len(_DETAIL[detail_type]) else f" with {' / '.join(missed)}"
                lost = _LOST[detail_type].format(backstop=timing, sweep=self.settings.sweep.interval_s)
                found = f"rule {names} does not match {detail_type!r} events{only}: {lost}"
                yield self.line(Level.WARN, found, f"use the EventPattern of {TEMPLATE}")
            else:
                covered.append(repr(detail_type))
        if covered:
            yield self.line(Level.PASS, f"rule {names} matches {', '.join(covered)} events")
        foreign = [
            d for s, d in _FOREIGN if any(_match(p, {"source": s, "detail-type": d}, set()) for _, p in patterns)
        ]
        if foreign:
            found = f"rule {names} also matches events the process does not read ({', '.join(foreign)}, …): "
            fix = f"list the detail-types, as the EventPattern of {TEMPLATE} does"
            yield self.line(Level.WARN, f"{found}each one becomes a poison message", fix)
        if narrowed:
            found = f"rule {names} also filters on {', '.join(sorted(narrowed))}: make sure every gated image passes"
            yield self.line(Level.INFO, found)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _json(text: str | None) -> Any:
    try:
        return json.loads(text or "null")
    except ValueError:
        return None


def _statements(policy: str, queue_arn: str) -> list[dict[str, Any]]:
    """The Allow statements of the queue policy that grant sqs:SendMessage on this queue."""
    document = _json(policy)
    found = []
    for st in _listed(document.get("Statement") or []) if isinstance(document, dict) else []:
        if not isinstance(st, dict) or st.get("Effect") != "Allow" or "NotAction" in st or "NotPrincipal" in st:
            continue
        sends = any(fnmatch.fnmatchcase("sqs:sendmessage", str(a).lower()) for a in _listed(st.get("Action", [])))
        if sends and any(fnmatch.fnmatchcase(queue_arn, str(r)) for r in _listed(st.get("Resource", "*"))):
            found.append(st)
    return found


def _principals(st: Mapping[str, Any], *kinds: str) -> list[str]:
    principal = st.get("Principal")
    if not isinstance(principal, dict):
        return ["*"] if principal == "*" else []
    return [str(p) for kind in kinds for p in _listed(principal.get(kind, []))]


def _source_arns(st: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for op, keys in (st.get("Condition") or {}).items():
        if str(op).replace("IfExists", "") in ("ArnEquals", "ArnLike", "StringEquals", "StringLike"):
            found += [str(v) for k, v in keys.items() if k.lower() == "aws:sourcearn" for v in _listed(v)]
    return found


def _match(pattern: Any, event: Mapping[str, Any], narrowed: set[str], path: str = "") -> bool | None:
    """Does the pattern match? Fields outside _CHECKED pass (noted in `narrowed`); None: cannot tell."""
    if not isinstance(pattern, Mapping):
        return None
    result: bool | None = True
    for key, want in pattern.items():
        if key == "$or":
            one = _any([_match(p, event, narrowed, path) for p in _listed(want)])
        elif isinstance(want, Mapping):
            inner = event.get(key)
            one = _match(want, inner if isinstance(inner, Mapping) else {}, narrowed, f"{path}{key}.")
        elif f"{path}{key}" not in _CHECKED:
            narrowed.add(f"{path}{key}")
            one = True
        else:
            one = _any([_condition(c, key in event, event.get(key)) for c in _listed(want)])
        if one is False:
            return False
        result = None if one is None else result
    return result


def _any(results: list[bool | None]) -> bool | None:
    return True if True in results else (None if None in results else False)


def _condition(cond: Any, present: bool, value: Any) -> bool | None:
    # A value, exists, prefix or anything-but values; None (cannot tell) for suffix, wildcard, numeric, ….
    if not isinstance(cond, Mapping):
        return present and cond == value
    op, arg = next(iter(cond.items())) if len(cond) == 1 else ("", None)
    if op == "exists" and isinstance(arg, bool):
        return present is arg
    if op == "prefix" and isinstance(arg, str):
        return present and isinstance(value, str) and value.startswith(arg)
    if op == "anything-but" and not isinstance(arg, Mapping):
        return present and value not in _listed(arg)
    return None
