#!/usr/bin/env bash
# The runbook's scan gate (/work/shared/reference/runbook.txt, "Fix #2 — Add a Polling Loop with Timeout to the
# Gate Script": the `script:` block of its ecr-scan-gate job), copied as written, bugs included, for
# scripts/bench_gate.py to compare the bot with. It is NOT how this project gates an image (see the README).
#
# What was parametrised, and nothing else:
#   - ECR_REPO, IMAGE_TAG come from the environment, as the job's CI variables do.
#   - MAX_ATTEMPTS, SLEEP_INTERVAL may be set from the environment (defaults: the runbook's 20 and 15 s), so
#     the benchmark can scale time down (SLEEP_INTERVAL=1.5 at 10x).
#   - The timeout message computes MAX_ATTEMPTS * SLEEP_INTERVAL with awk instead of $((...)): bash
#     arithmetic is integer-only, and with a scaled (fractional) interval `$((20 * 1.5))` aborts the script
#     with exit 1 ("blocked") instead of the runbook's exit 4. With the runbook's integers the text is the same.
#   - The endpoint: none in the script. The aws CLI (v1 >= 1.29, and v2) honours AWS_ENDPOINT_URL, which the
#     benchmark sets to the ECR double, with dummy AWS_* credentials and AWS_DEFAULT_REGION.
# The job's before_script (OIDC assume-role, `yum install jq`) and its runner are not part of this file.
#
# Kept as in the runbook (known bugs): no `set -e`/`pipefail`; stderr is captured into SCAN_RESULT (2>&1), so a
# CLI warning or a non-JSON error makes jq fail and STATUS empty, and the loop goes on; ScanNotFoundException
# right after a push (ECR still creating the scan record) fails the gate at once (exit 3), with no grace; it
# sleeps once more after the last attempt before giving up; scan.env is appended to, not written.

MAX_ATTEMPTS=${MAX_ATTEMPTS:-20}
SLEEP_INTERVAL=${SLEEP_INTERVAL:-15}
attempt=0
echo "Waiting for ECR scan to complete for $ECR_REPO:$IMAGE_TAG..."
while [ $attempt -lt $MAX_ATTEMPTS ]; do
  SCAN_RESULT=$(aws ecr describe-image-scan-findings \
    --repository-name "$ECR_REPO" \
    --image-id imageTag="$IMAGE_TAG" \
    --output json 2>&1)
  # Catch AccessDeniedException or ScanNotFoundException early
  if echo "$SCAN_RESULT" | grep -q "AccessDeniedException\|ScanNotFoundException"; then
    echo "ERROR: $SCAN_RESULT"
    exit 3
  fi
  STATUS=$(echo "$SCAN_RESULT" | jq -r '.imageScanStatus.status // "UNKNOWN"')
  echo "Attempt $((attempt+1))/$MAX_ATTEMPTS — scan status: $STATUS"
  if [ "$STATUS" = "COMPLETE" ]; then
    break
  elif [ "$STATUS" = "FAILED" ] || [ "$STATUS" = "UNSUPPORTED_IMAGE" ]; then
    echo "ERROR: ECR scan engine returned status: $STATUS"
    exit 2
  fi
  attempt=$((attempt+1))
  sleep $SLEEP_INTERVAL
done
if [ "$STATUS" != "COMPLETE" ]; then
  echo "ERROR: Scan did not complete within $(awk -v n="$MAX_ATTEMPTS" -v s="$SLEEP_INTERVAL" 'BEGIN { print n * s }')s"
  exit 4
fi
# Parse severity counts — use // 0 to handle absent keys safely
CRITICAL=$(echo "$SCAN_RESULT" | jq '.imageScanFindings.findingSeverityCounts.CRITICAL // 0')
HIGH=$(echo "$SCAN_RESULT" | jq '.imageScanFindings.findingSeverityCounts.HIGH // 0')
TOTAL=$((CRITICAL + HIGH))
echo "CRITICAL=$CRITICAL HIGH=$HIGH TOTAL_BLOCKING=$TOTAL"
# Export for downstream jobs via dotenv artifact
echo "VULN_CRITICAL=$CRITICAL" >> scan.env
echo "VULN_HIGH=$HIGH" >> scan.env
echo "VULN_TOTAL=$TOTAL" >> scan.env
if [ "$TOTAL" -gt 0 ]; then
  echo "GATE FAILED: $TOTAL blocking vulnerabilities found. Review ECR console."
  exit 1
fi
echo "GATE PASSED: No CRITICAL or HIGH findings."
