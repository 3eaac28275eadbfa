"""The lab's AWS credentials and region: what its emulator (labkit/awsemu) accepts and what its IAM
token checker (labkit/iamcheck.py) verifies signatures with. A leaf: it imports nothing of the lab."""

DEFAULT_CREDENTIALS = {
    "AKIALABLABLABLAB1234": {"secret": "lab-secret-key", "token": None},
    # temporary credentials: only with X-Amz-Security-Token
    "ASIALABLABLABLAB5678": {"secret": "lab-session-secret", "token": "lab-session-token"},
}
DEFAULT_REGION = "us-east-1"
