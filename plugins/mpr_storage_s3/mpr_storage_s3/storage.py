"""``S3Storage``: a media root in an S3 bucket (AWS S3, MinIO, GCS's S3 API, any S3 API).

A root is ``s3://bucket/prefix/`` (or ``gs://bucket/prefix/``); keys are
relative to it, exactly as with a local folder, so a database made on a local
library keeps working once the library moves to a bucket.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mpr.errors import NotFound, StorageError
from mpr.storage import ObjectInfo, safe_key, scheme_of
from mpr_storage_s3.settings import S3Settings

if TYPE_CHECKING:
    from mpr.settings import Settings

log = logging.getLogger(__name__)

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def parse_root(root: str) -> tuple[str, str, str]:
    """Split ``s3://bucket/some/prefix/`` into ``("s3", "bucket", "some/prefix/")``.

    The prefix is empty or ends with ``/``; a prefix that could escape the
    bucket (``..``) is refused like any other unsafe key.
    """
    scheme = scheme_of(root)
    if scheme not in ("s3", "gs"):
        raise StorageError(f"not an s3:// or gs:// URL: {root!r}")
    rest = root.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if not bucket or "/" in bucket or not all(c.isalnum() or c in "-._" for c in bucket):
        raise StorageError(f"storage root {root!r} does not name a bucket (expected {scheme}://bucket/prefix/)")
    prefix = prefix.strip("/")
    return scheme, bucket, (safe_key(prefix) + "/") if prefix else ""


def _is_missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return error.get("Code") in _MISSING or status == "404"


class S3Storage:
    """Storage backend for ``s3://`` and ``gs://`` roots (see :class:`mpr.storage.Storage`)."""

    def __init__(self, root: str, settings: Settings, s3_settings: S3Settings | None = None) -> None:
        self.root = root
        self.scheme, self.bucket, self.prefix = parse_root(root)
        self.settings = settings
        self.s3_settings = s3_settings or S3Settings.from_env()
        self._client: Any = None
        self._lock = threading.Lock()
        normal = root.rstrip("/")
        if normal == (settings.media_in or "").rstrip("/"):
            self.base_url = settings.media_base_url
        elif normal == (settings.media_out or "").rstrip("/"):
            self.base_url = settings.media_out_base_url
        else:
            self.base_url = None

    def __repr__(self) -> str:
        return f"S3Storage({self.root!r})"

    # -- the boto3 client -------------------------------------------------

    @property
    def endpoint_url(self) -> str | None:
        """The S3 API endpoint used for this root (None = AWS's default for the region)."""
        if self.scheme == "gs":
            return self.s3_settings.gs_endpoint_url
        return self.settings.s3_endpoint_url

    @property
    def client(self) -> Any:
        """A boto3 S3 client (thread-safe; built once per root)."""
        with self._lock:
            if self._client is None:
                kwargs: dict[str, Any] = {}
                if self.scheme == "gs" and self.s3_settings.gs_access_key_id:
                    kwargs["aws_access_key_id"] = self.s3_settings.gs_access_key_id
                    kwargs["aws_secret_access_key"] = self.s3_settings.gs_secret_access_key
                endpoint = self.endpoint_url
                config = Config(
                    signature_version="s3v4",
                    retries={"max_attempts": 5, "mode": "standard"},
                    # MinIO, moto and most S3-compatible services want path-style URLs
                    s3={"addressing_style": "path" if endpoint else "auto"},
                    max_pool_connections=max(10, self.s3_settings.max_concurrency * 2),
                )
                session = boto3.session.Session()
                self._client = session.client(
                    "s3", endpoint_url=endpoint, region_name=self.s3_settings.region, config=config, **kwargs
                )
            return self._client

    @property
    def transfer_config(self) -> TransferConfig:
        """Multipart settings for uploads and downloads."""
        s = self.s3_settings
        return TransferConfig(
            multipart_threshold=s.multipart_threshold,
            multipart_chunksize=s.multipart_chunksize,
            max_concurrency=s.max_concurrency,
        )

    def object_key(self, key: str) -> str:
        """The bucket key of ``key`` (checked with :func:`mpr.storage.safe_key`)."""
        return self.prefix + safe_key(key)

    def locate(self, key: str = "") -> str:
        """``scheme://bucket/prefix/key`` (the root for ``""``): compared across roots by :func:`mpr.storage.key_within`."""
        return f"{self.scheme}://{self.bucket}/{self.object_key(key) if key else self.prefix}"

    def _fail(self, exc: Exception, action: str, key: str = "") -> Exception:
        where = f"{self.scheme}://{self.bucket}/{self.prefix}{key}"
        if isinstance(exc, ClientError):
            if _is_missing(exc):
                code = exc.response.get("Error", {}).get("Code")
                if code == "NoSuchBucket":
                    return StorageError(f"bucket {self.bucket!r} does not exist ({action} {where})")
                return NotFound(f"no such object: {key or where}")
            code = exc.response.get("Error", {}).get("Code", "error")
            return StorageError(f"cannot {action} {where}: {code}")
        return StorageError(f"cannot {action} {where}: {exc.__class__.__name__}: {exc}")

    # -- the Storage protocol --------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive, paginated), in key order."""
        if prefix.rstrip("/"):
            safe_key(prefix.rstrip("/"))  # refuses "../" and absolute prefixes ("/x" too), like LocalStorage
        sub = prefix if prefix.strip("/") else ""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + sub):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) :]
                    if not rel or rel.endswith("/"):
                        continue  # "folder" placeholder objects
                    try:
                        if safe_key(rel) != rel:
                            raise StorageError("not normalised")
                    except StorageError:
                        log.warning("skipping object with an unsafe key: %r", obj["Key"])
                        continue
                    yield ObjectInfo(key=rel, size=int(obj["Size"]), mtime=obj["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "list", sub) from exc

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of ``key``; NotFound if it does not exist."""
        okey = self.object_key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=okey)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "stat", key) from exc
        return ObjectInfo(key=safe_key(key), size=int(head["ContentLength"]), mtime=head["LastModified"].timestamp())

    def exists(self, key: str) -> bool:
        """True if ``key`` exists."""
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A stream of bytes ``start``..``end`` (inclusive; None = to the end) from a ranged GET."""
        okey = self.object_key(key)
        if start < 0 or (end is not None and end < start):
            raise StorageError(f"bad byte range {start}-{end} for {key!r}")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": okey}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            return self.client.get_object(**kwargs)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "read", key) from exc

    def put(self, key: str, local_file: Path) -> ObjectInfo:
        """Upload ``local_file`` as ``key`` (multipart above the threshold; S3 puts are atomic)."""
        okey = self.object_key(key)
        content_type = mimetypes.guess_type(okey)[0] or "application/octet-stream"
        try:
            self.client.upload_file(
                str(local_file),
                self.bucket,
                okey,
                ExtraArgs={"ContentType": content_type},
                Config=self.transfer_config,
            )
        except FileNotFoundError:
            raise StorageError(f"cannot upload {local_file}: no such file") from None
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "upload", key) from exc
        except Exception as exc:  # boto3's S3UploadFailedError wraps ClientError
            raise self._fail(exc, "upload", key) from exc
        return self.stat(key)

    def delete(self, key: str) -> None:
        """Delete ``key``; no error if it is already gone."""
        okey = self.object_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=okey)
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
            if isinstance(exc, ClientError) and _is_missing(exc) and code != "NoSuchBucket":
                return
            raise self._fail(exc, "delete", key) from exc

    def url(self, key: str, expires: int = 3600) -> str | None:
        """``MEDIA_BASE_URL``/``MEDIA_OUT_BASE_URL`` + key when set, else a presigned GET URL."""
        okey = self.object_key(key)
        if self.base_url:
            return self.base_url.rstrip("/") + "/" + urllib.parse.quote(safe_key(key))
        try:
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": okey}, ExpiresIn=int(expires)
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "sign a URL for", key) from exc

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """Download ``key`` to a temporary file (same file name) and remove it afterwards."""
        okey = self.object_key(key)
        tmp = Path(tempfile.mkdtemp(prefix="mpr-s3-"))
        try:
            target = tmp / posixpath.basename(okey)
            try:
                self.client.download_file(self.bucket, okey, str(target), Config=self.transfer_config)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "download", key) from exc
            yield target
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def download(self, key: str, target: Path) -> Path:
        """Download ``key`` to ``target`` (multipart for large objects); returns ``target``."""
        okey = self.object_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, okey, str(target), Config=self.transfer_config)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "download", key) from exc
        return target

    def local_path(self, key: str) -> Path | None:
        """Always None: objects in a bucket have no filesystem path."""
        safe_key(key)
        return None
