"""MPR plugin package mpr_storage_s3: hook implementations only; the work lives in modules beside this one."""

from __future__ import annotations

from mpr import hookimpl  # noqa: F401
