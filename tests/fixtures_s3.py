"""S3 for tests: moto's real HTTP server on loopback (no in-process mocks), reached through boto3
with explicit dummy credentials, so tests exercise the same code path as production S3."""
from __future__ import annotations

import socket
import uuid

import pytest

__all__ = [
    "S3_TEST_CREDENTIALS", "S3_TEST_REGION", "make_s3_client", "moto_endpoint", "s3_client", "s3_bucket",
]

# Dummy credentials handed to boto3 explicitly (moto's server accepts any). Never read from the
# environment, so a developer's real AWS profile is never touched by the tests.
S3_TEST_CREDENTIALS = {
    "aws_access_key_id": "testing-access-key",
    "aws_secret_access_key": "testing-secret-key",
}
S3_TEST_REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_s3_client(endpoint_url: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=S3_TEST_REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        **S3_TEST_CREDENTIALS,
    )


@pytest.fixture(scope="session")
def moto_endpoint():
    """URL of a moto S3 server started for this test session on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_endpoint):
    return make_s3_client(moto_endpoint)


@pytest.fixture
def s3_bucket(s3_client):
    """A fresh, empty bucket for one test (its name is unique, so tests never share state)."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    return name
