"""Fixtures for the Lambda executor tests: moto server (S3 + Step Functions), the deploy files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpr_storage_s3.testing import moto_server, s3_bucket  # noqa: F401

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "aws"
ASL_PATH = DEPLOY / "statemachine.asl.json"
TEMPLATE_PATH = DEPLOY / "template.yaml"


@pytest.fixture
def asl() -> dict:
    """The state machine definition as shipped (placeholders not substituted)."""
    return json.loads(ASL_PATH.read_text())
