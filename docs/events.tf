# ecr-scan-gate: the event path for the `events` process (docs/events.md), the same resources as
# docs/events.cloudformation.yaml. Use it as a module or copy it into your configuration:
#
#   module "ecr_scan_gate_events" {
#     source        = "./docs"            # a folder holding this file
#     bot_role_name = "ecr-scan-gate-bot"
#   }
#
# Apply it with the provider of the registry's account and region: ECR sends its events to the default bus
# of its own account and region only (docs/events.md "Cross-account" covers other registries).
# tests/test_doctor_events.py compares the event_pattern below with the CloudFormation template's.

terraform {
  required_version = ">= 1.3"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "queue_name" {
  type    = string
  default = "ecr-scan-gate-events"
}

variable "dead_letter_queue_name" {
  type    = string
  default = "ecr-scan-gate-events-dlq"
}

variable "rule_name" {
  type    = string
  default = "ecr-scan-gate-registry-events"
}

variable "process_policy_name" {
  type    = string
  default = "ecr-scan-gate-events"
}

variable "doctor_policy_name" {
  type    = string
  default = "ecr-scan-gate-events-doctor"
}

variable "bot_role_name" {
  description = "IAM role the events process and doctor run as; both policies are attached to it (\"\" attaches none)"
  type        = string
  default     = ""
}

variable "process_moves_poison_messages" {
  description = "true when [events] dead_letter_url is set to the dead_letter_queue_url output (the process then needs sqs:SendMessage on it)"
  type        = bool
  default     = true
}

resource "aws_sqs_queue" "dead_letter" {
  name = var.dead_letter_queue_name
  # SSE-SQS, not alias/aws/sqs: EventBridge cannot use the AWS managed KMS key (its key policy cannot be
  # changed), so a queue encrypted with it silently drops every delivery. Nothing here needs kms:* then.
  sqs_managed_sse_enabled = true
  # 14 days, the SQS maximum: a standard queue keeps a message's first enqueue time when it is moved here,
  # so a dead-letter queue must keep messages longer than its source or they expire on arrival.
  message_retention_seconds = 1209600
}

resource "aws_sqs_queue" "events" {
  name                    = var.queue_name
  sqs_managed_sse_enabled = true
  # Matches [events] visibility_timeout_s: the process deletes a message within a second of receiving it,
  # so 60 s only matters when it dies mid-batch; the message is back a minute later. doctor warns under 30.
  visibility_timeout_seconds = 60
  # 4 days (the SQS default). An event helps only while its gate is open (minutes), and a lost event only
  # delays a verdict (the backstop poll and the sweep still find it), so retention is not what keeps
  # verdicts right. 4 days is long enough to see and replay a backlog after the process was down over a
  # weekend, and short enough that a stale backlog drains by itself.
  message_retention_seconds = 345600
  # The process long-polls 20 s itself ([events] wait_s); this makes any other consumer do the same.
  receive_wait_time_seconds = 20
  # A message that fails 5 receives (the process died on it five times, or could not delete it) is moved
  # aside instead of coming back every visibility timeout until retention ends.
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = 5
  })
}

# Only our queue may use the dead-letter queue (a separate resource: the two queues would otherwise refer
# to each other).
resource "aws_sqs_queue_redrive_allow_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.events.arn]
  })
}

resource "aws_cloudwatch_event_rule" "registry_events" {
  name           = var.rule_name
  description    = "ECR basic scan, Inspector scan and successful push events for ecr-scan-gate"
  event_bus_name = "default"
  state          = "ENABLED"
  # Exactly the events bot/core/scan_events.py reads (DETAIL_TYPES), each with its own source: anything
  # else would reach the process as a poison message. For image actions only successful pushes: a DELETE
  # or a failed push can start no gate. Kept as literal JSON so the test can compare it with the template's.
  event_pattern = <<-PATTERN
    {
      "$or": [
        {"source": ["aws.ecr"], "detail-type": ["ECR Image Scan"]},
        {"source": ["aws.inspector2"], "detail-type": ["Inspector2 Scan"]},
        {"source": ["aws.ecr"], "detail-type": ["ECR Image Action"],
         "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"]}},
        {"source": ["aws.inspector2"], "detail-type": ["Inspector2 Finding"]}
      ]
    }
  PATTERN
}

resource "aws_cloudwatch_event_target" "queue" {
  rule           = aws_cloudwatch_event_rule.registry_events.name
  event_bus_name = "default"
  target_id      = "ecr-scan-gate-queue"
  # No role_arn and no input transformer: SQS targets are authorised by the queue policy, and the process
  # parses the whole event as the message body.
  arn = aws_sqs_queue.events.arn
}

data "aws_iam_policy_document" "queue" {
  statement {
    sid       = "OnlyOurRuleSendsRegistryEvents"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    # Without it any EventBridge rule, of any account, could put messages on this queue that the process
    # would take for registry events (the confused-deputy problem).
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.registry_events.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "events" {
  queue_url = aws_sqs_queue.events.id
  policy    = data.aws_iam_policy_document.queue.json
}

data "aws_iam_policy_document" "process" {
  # DeleteMessageBatch is authorised as sqs:DeleteMessage, a longer visibility as ChangeMessageVisibility;
  # doctor, run as the same identity, reads the queue's attributes. No sqs:*.
  statement {
    sid = "ReadAndDeleteRegistryEvents"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.events.arn]
  }
  dynamic "statement" {
    for_each = var.process_moves_poison_messages ? [1] : []
    content {
      sid       = "MovePoisonMessagesAside"
      actions   = ["sqs:SendMessage"]
      resources = [aws_sqs_queue.dead_letter.arn]
    }
  }
}

resource "aws_iam_policy" "process" {
  name        = var.process_policy_name
  description = "ecr-scan-gate events process - read and delete registry events from its queue"
  policy      = data.aws_iam_policy_document.process.json
}

data "aws_iam_policy_document" "doctor" {
  statement {
    sid       = "ReadQueueSettings"
    actions   = ["sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.events.arn]
  }
  # ListRuleNamesByTarget is asked by target ARN, not by rule: granted on "*", it reveals rule names only.
  statement {
    sid       = "FindTheRuleByItsTarget"
    actions   = ["events:ListRuleNamesByTarget"]
    resources = ["*"]
  }
  statement {
    sid       = "ReadTheRulePattern"
    actions   = ["events:DescribeRule"]
    resources = [aws_cloudwatch_event_rule.registry_events.arn]
  }
}

resource "aws_iam_policy" "doctor" {
  name        = var.doctor_policy_name
  description = "ecr-scan-gate doctor - read the events queue settings and the rule that feeds it"
  policy      = data.aws_iam_policy_document.doctor.json
}

resource "aws_iam_role_policy_attachment" "process" {
  count      = var.bot_role_name == "" ? 0 : 1
  role       = var.bot_role_name
  policy_arn = aws_iam_policy.process.arn
}

resource "aws_iam_role_policy_attachment" "doctor" {
  count      = var.bot_role_name == "" ? 0 : 1
  role       = var.bot_role_name
  policy_arn = aws_iam_policy.doctor.arn
}

output "queue_url" {
  description = "[events] queue_url"
  value       = aws_sqs_queue.events.id
}

output "dead_letter_queue_url" {
  description = "[events] dead_letter_url (with process_moves_poison_messages = true)"
  value       = aws_sqs_queue.dead_letter.id
}

output "rule_arn" {
  description = "The rule the queue policy's aws:SourceArn names"
  value       = aws_cloudwatch_event_rule.registry_events.arn
}

output "queue_arn" {
  value = aws_sqs_queue.events.arn
}

output "events_process_policy_arn" {
  value = aws_iam_policy.process.arn
}

output "doctor_policy_arn" {
  value = aws_iam_policy.doctor.arn
}
