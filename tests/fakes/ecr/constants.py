"""ECR facts the double's modules share: defaults, operation names, enums, error HTTP statuses."""

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"  # moto's default account
SCAN_OP = "DescribeImageScanFindings"

# botocore's ECR model, ScanStatus enum.
SCAN_STATUSES = frozenset(
    {
        "IN_PROGRESS",
        "COMPLETE",
        "FAILED",
        "UNSUPPORTED_IMAGE",
        "ACTIVE",
        "PENDING",
        "SCAN_ELIGIBILITY_EXPIRED",
        "FINDINGS_UNAVAILABLE",
        "LIMIT_EXCEEDED",
        "IMAGE_ARCHIVED",
    }
)
BASIC_SEVERITIES = frozenset({"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL", "UNDEFINED"})
ENHANCED_SEVERITIES = frozenset({"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL", "UNTRIAGED"})
_ERROR_HTTP = {"ServerException": 500}  # everything else ECR documents for this call is 400
_STATUS_OPS = frozenset({SCAN_OP, "StartImageScan"})  # ops whose answers have an imageScanStatus
