"""Test helpers for the gcp executor: a local stand-in for the Cloud Run Admin API v2."""
