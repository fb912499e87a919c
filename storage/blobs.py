"""Content-addressed blob store: one small interface, a local-folder backend and an S3 backend.

Every blob is stored under `sha256/<aa>/<hex><suffix>`, where `<hex>` is the SHA-256 of its bytes.
So the key *is* the checksum: putting the same bytes twice is a no-op (we look before we upload),
two writers racing on one key write identical bytes, and every read can be verified against the
key itself. Callers never choose keys; they get them back from `put_bytes` / `put_file`.

This module reads no environment variables: URLs, regions and credentials are arguments
(`pipelines/settings.py` is the one place that reads configuration). Credentials are never put in
messages, reprs or logs.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

KEY_PREFIX = "sha256/"
_HASH_CHUNK = 1 << 20  # 1 MiB: large enough to be fast, small enough to never hold a video in memory
# A suffix is a file extension such as ".mp4" or ".gt.json": no slashes, nothing that could escape
# the store's folder or confuse a URL.
_SUFFIX_RE = re.compile(r"^(\.[A-Za-z0-9_-]+)*$")
_KEY_RE = re.compile(r"^sha256/([0-9a-f]{2})/([0-9a-f]{64})((?:\.[A-Za-z0-9_-]+)*)$")


class BlobStoreError(Exception):
    """A blob store cannot do what was asked (missing bucket, unreachable endpoint, bad key,
    checksum mismatch). The message names the store, bucket or key concerned."""


class BlobNotFound(BlobStoreError, KeyError):
    """No blob under this key. Also a KeyError, so `except KeyError` callers keep working."""

    def __init__(self, key: str, where: str = ""):
        self.key = key
        self.where = where
        super().__init__(key)

    def __str__(self) -> str:
        return f"blob {self.key!r} not found" + (f" in {self.where}" if self.where else "")


# --- key helpers -----------------------------------------------------------------------------------
def blob_key(sha256_hex: str, suffix: str = "") -> str:
    """The key a blob with this SHA-256 (and suffix) is stored under."""
    _check_suffix(suffix)
    if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex):
        raise BlobStoreError(f"not a lower-case hex SHA-256: {sha256_hex!r}")
    return f"{KEY_PREFIX}{sha256_hex[:2]}/{sha256_hex}{suffix}"


def key_sha256(key: str) -> str | None:
    """The SHA-256 a content-addressed key promises, or None for any other key."""
    m = _KEY_RE.match(key)
    return m.group(2) if m else None


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    """(hex digest, size in bytes) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_suffix(suffix: str) -> None:
    if not _SUFFIX_RE.match(suffix):
        raise BlobStoreError(
            f"bad blob suffix {suffix!r}: expected extensions like '.mp4' or '.gt.json'"
        )


def _check_key(key: str) -> None:
    # Keys are relative, slash-separated and never climb out of the store (no '..', no '/x').
    if (not key or key.startswith("/") or "\\" in key
            or any(part in ("", ".", "..") for part in key.split("/"))):
        raise BlobStoreError(f"bad blob key {key!r}")


def _verify(key: str, data: bytes, where: str) -> bytes:
    expected = key_sha256(key)
    if expected is not None and sha256_bytes(data) != expected:
        raise BlobStoreError(f"blob {key!r} in {where} is corrupt: its bytes do not hash to its key")
    return data


def _default_suffix(path: Path) -> str:
    # Only the last extension: "clip.v2.mp4" -> ".mp4". Callers wanting ".gt.json" pass it.
    suffix = path.suffix.lower()
    return suffix if _SUFFIX_RE.match(suffix) else ""


# --- the interface ---------------------------------------------------------------------------------
class BlobStore(ABC):
    """What every backend offers. Subclasses implement the storage primitives (underscored);
    hashing, the look-before-upload rule and key checks live here, once."""

    # -- public API --
    def put_bytes(self, data: bytes, suffix: str = "") -> str:
        """Store `data`; return its key. A no-op when the same bytes are already stored."""
        _check_suffix(suffix)
        data = bytes(data)
        digest = sha256_bytes(data)
        key = blob_key(digest, suffix)
        if not self.exists(key):
            self._write_bytes(key, data, digest)
        return key

    def put_file(self, path: str | os.PathLike, suffix: str | None = None) -> str:
        """Store the file at `path`; return its key. `suffix` defaults to the file's extension.
        A no-op when the same bytes are already stored. The bytes written are verified against
        the hash taken here (a file changing under us is an error, never a wrong key)."""
        path = Path(path)
        if not path.is_file():
            raise BlobStoreError(f"cannot store {path}: not a file")
        suffix = _default_suffix(path) if suffix is None else suffix
        _check_suffix(suffix)
        digest, size = sha256_file(path)
        key = blob_key(digest, suffix)
        if not self.exists(key):
            self._write_file(key, path, digest, size)
        return key

    def get_bytes(self, key: str) -> bytes:
        """The blob's bytes, verified against the key's SHA-256. Raises BlobNotFound."""
        _check_key(key)
        return _verify(key, self._read_bytes(key), str(self))

    def exists(self, key: str) -> bool:
        _check_key(key)
        return self._exists(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with `prefix`, in lexical order."""
        if prefix.startswith("/") or ".." in prefix.split("/") or "\\" in prefix:
            raise BlobStoreError(f"bad blob prefix {prefix!r}")
        return self._list(prefix)

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream (use it as a context manager). Not seekable on S3: to hand a
        blob to a library that seeks (PyAV, for mp4), `download` it first."""
        _check_key(key)
        return self._open(key)

    def download(self, key: str, dest_path: str | os.PathLike) -> Path:
        """Copy the blob to `dest_path` (atomically: a temp file renamed into place), verifying it
        against the key's SHA-256. Returns the destination path."""
        _check_key(key)
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            self._download(key, tmp)
            expected = key_sha256(key)
            if expected is not None and sha256_file(tmp)[0] != expected:
                raise BlobStoreError(
                    f"blob {key!r} in {self} is corrupt: its bytes do not hash to its key"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    @abstractmethod
    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        """A URL that reads the blob without further credentials (file:// for local stores)."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """A stable URI naming the blob (`file:///...` or `s3://bucket/...`)."""

    @abstractmethod
    def key_for_uri(self, uri: str) -> str:
        """The key of a URI that `uri()` returned; BlobStoreError if it names another store."""

    # -- backend primitives --
    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _write_bytes(self, key: str, data: bytes, digest: str) -> None: ...

    @abstractmethod
    def _write_file(self, key: str, path: Path, digest: str, size: int) -> None: ...

    @abstractmethod
    def _read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[str]: ...

    @abstractmethod
    def _open(self, key: str) -> BinaryIO: ...

    @abstractmethod
    def _download(self, key: str, dest: Path) -> None: ...


# --- local folder ----------------------------------------------------------------------------------
class LocalBlobStore(BlobStore):
    """Blobs as files under `root`. Writes go to a temp file in `root/.tmp` (same filesystem) and
    are renamed into place, so a reader never sees half a blob and a crash leaves only litter in
    `.tmp`, never a wrong file under a key."""

    _TMP_DIR = ".tmp"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        try:
            (self.root / self._TMP_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BlobStoreError(f"cannot create blob folder {self.root}: {e}") from e

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    __str__ = __repr__

    def path(self, key: str) -> Path:
        """Where the blob lives on disk (whether or not it exists yet)."""
        _check_key(key)
        return self.root / key

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        # A local file needs no signature; the URL never expires.
        return self.uri(key)

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def key_for_uri(self, uri: str) -> str:
        parsed = urllib.parse.urlparse(uri)
        path = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else None
        if path is None or not path.is_relative_to(self.root):
            raise BlobStoreError(f"{uri!r} is not a blob of {self}")
        key = path.relative_to(self.root).as_posix()
        _check_key(key)
        return key

    def _exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def _atomic_write(self, key: str, fill) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.root / self._TMP_DIR, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _write_bytes(self, key: str, data: bytes, digest: str) -> None:
        self._atomic_write(key, lambda f: f.write(data))

    def _write_file(self, key: str, path: Path, digest: str, size: int) -> None:
        def fill(f):
            # Hash what we copy, not what we hashed before: a file changed in between must not be
            # stored under a key its bytes do not match.
            h = hashlib.sha256()
            with open(path, "rb") as src:
                while chunk := src.read(_HASH_CHUNK):
                    h.update(chunk)
                    f.write(chunk)
            if h.hexdigest() != digest:
                raise BlobStoreError(f"{path} changed while it was being stored in {self}")

        self._atomic_write(key, fill)

    def _read_bytes(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key, str(self)) from None

    def _list(self, prefix: str) -> Iterator[str]:
        # Walk only the folder the prefix points into, then filter by the full prefix.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            if Path(dirpath) == self.root and self._TMP_DIR in dirnames:
                dirnames.remove(self._TMP_DIR)
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def _open(self, key: str) -> BinaryIO:
        try:
            return open(self.root / key, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key, str(self)) from None

    def _download(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self.root / key, dest)
        except FileNotFoundError:
            raise BlobNotFound(key, str(self)) from None


# --- S3 --------------------------------------------------------------------------------------------
class S3BlobStore(BlobStore):
    """Blobs as objects in an S3 (or S3-compatible) bucket, under an optional prefix.

    - Uploads larger than `multipart_threshold` go through boto3's transfer manager (multipart,
      parallel parts); smaller ones are one PutObject.
    - Checksums: a single PutObject carries our SHA-256 (`ChecksumSHA256`), so the server refuses
      bytes that do not match the key. Multipart uploads ask for per-part SHA-256
      (`ChecksumAlgorithm`) which the server verifies part by part; the file is re-checked (size,
      mtime) after the upload so a file changed mid-upload is an error. Servers without checksum
      support: pass `checksum_algorithm=None`.
    - The bucket is checked once (HeadBucket) on first use: a missing bucket is a BlobStoreError
      that names it.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        *,
        client=None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        multipart_threshold: int = 64 * 2**20,
        multipart_chunksize: int = 16 * 2**20,
        max_concurrency: int = 4,
        checksum_algorithm: str | None = "SHA256",
    ):
        from boto3.s3.transfer import TransferConfig

        if not bucket:
            raise BlobStoreError("S3BlobStore needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.checksum_algorithm = checksum_algorithm
        if client is None:
            client = make_s3_client(
                endpoint_url, region,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
            )
        self.client = client
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
        )
        self._bucket_checked = False

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix}{where})"

    __str__ = __repr__

    # -- helpers --
    def _obj(self, key: str) -> str:
        return self.prefix + key

    def _error(self, e: Exception, action: str, key: str | None = None) -> BlobStoreError:
        """Turn a botocore error into one of ours, naming bucket and key (never credentials)."""
        from botocore.exceptions import ClientError

        code = ""
        if isinstance(e, ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket",):
            return BlobStoreError(f"S3 bucket {self.bucket!r} does not exist ({self})")
        if key is not None and code in ("404", "NoSuchKey", "NotFound"):
            return BlobNotFound(key, str(self))
        what = f" {key!r}" if key else ""
        return BlobStoreError(f"S3 {action}{what} failed in {self}: {code or type(e).__name__}: {e}")

    def check_bucket(self) -> None:
        """HeadBucket once; raises BlobStoreError naming the bucket when it is missing,
        forbidden or unreachable."""
        if self._bucket_checked:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise BlobStoreError(
                    f"S3 bucket {self.bucket!r} does not exist"
                    + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                ) from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise BlobStoreError(f"access to S3 bucket {self.bucket!r} denied ({self})") from None
            raise self._error(e, "HeadBucket") from None
        except BotoCoreError as e:
            raise BlobStoreError(
                f"cannot reach S3 bucket {self.bucket!r} ({self}): {type(e).__name__}: {e}"
            ) from None
        self._bucket_checked = True

    # -- primitives --
    def _exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        self.check_bucket()
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._obj(key))
            return True
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error(e, "HeadObject", key) from None
        except BotoCoreError as e:
            raise self._error(e, "HeadObject", key) from None

    def _extra_args(self, digest: str) -> dict:
        # The hex SHA-256 also travels as metadata so tools that only see the object can check it.
        return {"Metadata": {"sha256": digest}}

    def _write_bytes(self, key: str, data: bytes, digest: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.check_bucket()
        args = dict(Bucket=self.bucket, Key=self._obj(key), Body=data, **self._extra_args(digest))
        if self.checksum_algorithm:
            args["ChecksumAlgorithm"] = self.checksum_algorithm
        if self.checksum_algorithm == "SHA256":
            # Our own hash, not one botocore computes from the body: the server recomputes SHA-256
            # over what it received and refuses a mismatch (BadDigest), so the object can only
            # exist if its bytes hash to its key. The algorithm is named too, or some servers
            # (moto) drop the value.
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(digest)).decode()
        try:
            self.client.put_object(**args)
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, "PutObject", key) from None

    def _write_file(self, key: str, path: Path, digest: str, size: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if size < self.transfer_config.multipart_threshold:
            # Small: one request, checked end to end against our hash by the server.
            data = path.read_bytes()
            if sha256_bytes(data) != digest:
                raise BlobStoreError(f"{path} changed while it was being stored in {self}")
            self._write_bytes(key, data, digest)
            return
        self.check_bucket()
        before = path.stat()
        extra = self._extra_args(digest)
        if self.checksum_algorithm:
            extra["ChecksumAlgorithm"] = self.checksum_algorithm
        try:
            self.client.upload_file(
                str(path), self.bucket, self._obj(key), ExtraArgs=extra, Config=self.transfer_config
            )
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, "multipart upload", key) from None
        except Exception as e:  # boto3's S3UploadFailedError wraps the ClientError
            raise BlobStoreError(f"S3 upload of {path} as {key!r} failed in {self}: {e}") from None
        after = path.stat()
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            self._delete_quietly(key)
            raise BlobStoreError(f"{path} changed while it was being stored in {self}")
        head = self.client.head_object(Bucket=self.bucket, Key=self._obj(key))
        if head["ContentLength"] != size:
            self._delete_quietly(key)
            raise BlobStoreError(
                f"S3 stored {head['ContentLength']} bytes for {key!r}, expected {size} ({self})"
            )

    def _delete_quietly(self, key: str) -> None:
        # Only used to withdraw an object we have just written and found wrong.
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._obj(key))
        except Exception:  # the error we are about to raise matters more
            log.warning("could not remove bad upload %s from %s", key, self)

    def _get(self, key: str):
        from botocore.exceptions import BotoCoreError, ClientError

        self.check_bucket()
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._obj(key))
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, "GetObject", key) from None

    def _read_bytes(self, key: str) -> bytes:
        body = self._get(key)["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def _list(self, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        self.check_bucket()
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):]
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, "ListObjectsV2") from None

    def _open(self, key: str) -> BinaryIO:
        return self._get(key)["Body"]

    def _download(self, key: str, dest: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.check_bucket()
        try:
            self.client.download_file(
                self.bucket, self._obj(key), str(dest), Config=self.transfer_config
            )
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, "download", key) from None

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        _check_key(key)
        self.check_bucket()
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._obj(key)},
            ExpiresIn=int(expires_s),
        )

    def uri(self, key: str) -> str:
        _check_key(key)
        return f"s3://{self.bucket}/{self._obj(key)}"

    def key_for_uri(self, uri: str) -> str:
        head = f"s3://{self.bucket}/{self.prefix}"
        if not uri.startswith(head) or len(uri) == len(head):
            raise BlobStoreError(f"{uri!r} is not a blob of {self}")
        key = uri[len(head):]
        _check_key(key)
        return key


def make_s3_client(
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    *,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
):
    """A boto3 S3 client configured the way this project needs: SigV4 everywhere (presigned URLs
    included), path-style addressing for custom endpoints (their hosts rarely resolve
    `<bucket>.<host>`), standard retries. Credentials left as None come from boto3's own chain."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"} if endpoint_url else {},
        retries={"max_attempts": 5, "mode": "standard"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
        config=config,
    )


# --- factory ---------------------------------------------------------------------------------------
def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise BlobStoreError(f"not an S3 URI (s3://bucket/prefix): {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def open_blob_store(
    uri: str | os.PathLike,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    **s3_options,
) -> BlobStore:
    """A path or `file://` URI -> LocalBlobStore; `s3://bucket/prefix` -> S3BlobStore
    (`s3_options` go to S3BlobStore: credentials, client, multipart sizes, checksum_algorithm)."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        bucket, prefix = parse_s3_uri(text)
        return S3BlobStore(bucket, prefix, endpoint_url=endpoint_url, region=region, **s3_options)
    if text.startswith("file://"):
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise BlobStoreError(f"file URI with a remote host is not supported: {text!r}")
        return LocalBlobStore(urllib.parse.unquote(parsed.path))
    if "://" in text:
        raise BlobStoreError(f"unsupported blob store URI {text!r}: use a path, file:// or s3://")
    return LocalBlobStore(text)
