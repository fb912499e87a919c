"""The model registry: which trained artifacts exist, what they were trained on, which one serves.

One row per artifact in ``model_versions`` (``storage.schema.ModelVersion``), the bytes in the
content-addressed blob store. Why it looks the way it does:

- Artifacts are identified by their SHA-256, which is also their blob key. Registering the same
  file twice in a family therefore returns the version that already holds it: a retried training
  flow cannot create "v7" and "v8" with identical weights.
- Every state change is one database transaction. ``promote`` retires the previous production
  version and promotes the new one together, after taking a per-family lock, so two promotions
  racing each other serialise instead of leaving two production versions (the schema has no
  partial unique index for this yet; see ``_lock_family``).
- Nothing from the ORM leaves this module: callers get frozen ``ModelVersionInfo`` records, so
  they never touch a detached ORM object or a lazy load after the session has closed.
- Downloads are verified against the SHA-256 the registry recorded, not only against the blob key,
  so a blob corrupted at rest (or a row pointing at the wrong blob) is caught before a model is
  built from it.

Layering: this module imports ``storage`` only and takes an engine and a blob store as arguments.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from storage.blobs import BlobNotFound, BlobStore, BlobStoreError, key_sha256, sha256_file
from storage.db import session_scope
from storage.schema import AnnotationRound, ModelStage, ModelVersion, ModelVersionRound

__all__ = [
    "NOTES_CONFIG_KEY",
    "ModelRegistry",
    "ModelVersionInfo",
    "PromotionResult",
    "RegistryError",
    "UnknownModelVersion",
    "VersionConflict",
    "ArtifactMissing",
    "ArtifactIntegrityError",
]

log = logging.getLogger(__name__)

# The schema has no notes column yet, so notes travel inside the config JSON under this reserved
# key; ModelVersionInfo.config never shows it (callers get back exactly the config they gave).
NOTES_CONFIG_KEY = "_registry_notes"

# Family and version names end up in file names (fetch_artifact), CLI arguments and log lines:
# keep them to a safe alphabet. 128 is the column length.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
# The content-addressed key at the end of an artifact URI (file:///.../sha256/aa/<hex>.pt or
# s3://bucket/prefix/sha256/aa/<hex>.pt); same shape as storage.blobs keys.
_KEY_IN_URI_RE = re.compile(r"(sha256/[0-9a-f]{2}/[0-9a-f]{64}(?:\.[A-Za-z0-9_-]+)*)$")
_COPY_CHUNK = 1 << 20
_MAX_NAMES_IN_ERRORS = 20
# Concurrent registrations can collide on (family, version) when the family is new (no rows to
# lock yet); the loser re-reads and tries again.
_REGISTER_ATTEMPTS = 3


# --- errors ----------------------------------------------------------------------------------------


class RegistryError(Exception):
    """Something the registry cannot do; the message names the family and version concerned."""


class UnknownModelVersion(RegistryError, LookupError):
    """No such version (or family). The message lists the versions that do exist."""


class VersionConflict(RegistryError):
    """A version name that is already taken by a different artifact."""


class ArtifactMissing(RegistryError):
    """The registry knows the version but its blob is not in the given store."""


class ArtifactIntegrityError(RegistryError):
    """The stored bytes do not hash to the SHA-256 the registry recorded for the version."""


# --- records returned to callers -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelVersionInfo:
    """One registered model version, as plain data (detached from any database session).

    ``config`` and ``metrics`` are private copies: changing them changes nothing in the registry
    (use ``update_metrics``). They are left out of the hash so the record stays hashable.
    """

    id: int  # model_versions.id, for foreign keys such as masklets.source_model_version_id
    family: str
    version: str
    stage: ModelStage
    artifact_uri: str
    artifact_sha256: str
    config: dict[str, Any] = field(hash=False)
    metrics: dict[str, Any] = field(hash=False)
    parent_id: int | None
    parent_family: str | None
    parent_version: str | None
    rounds: tuple[int, ...]  # annotation_rounds.id values whose data trained this version
    notes: str
    created_at: dt.datetime
    stage_changed_at: dt.datetime | None

    @property
    def ref(self) -> str:
        """``family/version``: how messages and the CLI name a version."""
        return f"{self.family}/{self.version}"

    @property
    def artifact_key(self) -> str | None:
        """The blob-store key inside ``artifact_uri`` (None for a URI that is not content-addressed)."""
        m = _KEY_IN_URI_RE.search(self.artifact_uri)
        return m.group(1) if m else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (timestamps as ISO 8601, stage as its string)."""
        return {
            "id": self.id,
            "family": self.family,
            "version": self.version,
            "stage": self.stage.value,
            "artifact_uri": self.artifact_uri,
            "artifact_sha256": self.artifact_sha256,
            "config": self.config,
            "metrics": self.metrics,
            "parent_id": self.parent_id,
            "parent_family": self.parent_family,
            "parent_version": self.parent_version,
            "rounds": list(self.rounds),
            "notes": self.notes,
            "created_at": self.created_at.isoformat(),
            "stage_changed_at": self.stage_changed_at.isoformat() if self.stage_changed_at else None,
        }


@dataclass(frozen=True, kw_only=True)
class PromotionResult:
    """What ``promote`` did: the promoted version, the version it replaced, and notes worth
    showing a person (e.g. that a retired version was brought back)."""

    promoted: ModelVersionInfo
    previous_stage: ModelStage
    retired: ModelVersionInfo | None  # the former production version, now retired
    changed: bool  # False when the version was production already
    notes: tuple[str, ...] = ()


# --- the registry ----------------------------------------------------------------------------------


class ModelRegistry:
    """Model versions per family over a database (``engine``, migrated to head) and a blob store."""

    def __init__(self, engine: Engine, blob_store: BlobStore):
        self.engine = engine
        self.blob_store = blob_store

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"ModelRegistry({url!r}, {self.blob_store!r})"

    # -- writing --------------------------------------------------------------------------------

    def register(
        self,
        family: str,
        artifact_path: str | os.PathLike,
        *,
        version: str | None = None,
        config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        parent_version: str | None = None,
        parent_family: str | None = None,
        rounds: Iterable[int] = (),
        stage: ModelStage | str = ModelStage.CANDIDATE,
        notes: str = "",
    ) -> ModelVersionInfo:
        """Upload ``artifact_path`` and record it as a version of ``family``.

        - ``version``: a name, or None for the next ``{family}-v{n}``.
        - ``parent_version``: the version this one was fine-tuned from, in ``parent_family``
          (default: the same family, e.g. ``sam2-v3`` from ``sam2-v2``).
        - ``rounds``: ``annotation_rounds.id`` values whose data trained it (round numbers are
          only unique per dataset, so ids are what identifies a round).
        - ``stage``: ``production`` promotes it in the same transaction (retiring the old one).

        Idempotent: if a version of ``family`` already holds the same bytes, that version is
        returned unchanged (its metadata wins; a warning is logged when the request differs).
        A ``version`` name already used for *different* bytes raises ``VersionConflict``.
        """
        _check_name("family", family)
        if version is not None:
            _check_name("version", version)
        if parent_version is not None:
            _check_name("parent version", parent_version)
        parent_family = family if parent_family is None else parent_family
        _check_name("parent family", parent_family)
        stage = _as_stage(stage)
        config_json = _json_object("config", config, family=family)
        if NOTES_CONFIG_KEY in config_json:
            raise RegistryError(
                f"cannot register {family}: config key {NOTES_CONFIG_KEY!r} is reserved for notes; "
                "pass notes=... instead"
            )
        if notes:
            config_json[NOTES_CONFIG_KEY] = str(notes)
        metrics_json = _json_object("metrics", metrics, family=family)
        round_ids = _unique_ints(rounds, family=family)

        path = Path(artifact_path)
        if not path.is_file():
            raise RegistryError(f"cannot register {family}: artifact {path} is not a file")
        # Fail on a mistyped parent or round before uploading what may be a gigabyte; the
        # transaction below checks again (the parent could be deleted in between).
        with session_scope(self.engine) as s:
            if parent_version is not None:
                _get_row(s, parent_family, parent_version)
            _check_rounds_exist(s, round_ids, family=family)
        # Upload before the transaction: a content-addressed blob without a row is harmless (and
        # re-used next time), while a row without its blob would not be. put_file is a no-op for
        # bytes already stored, and re-uploads a blob an earlier registration lost.
        try:
            key = self.blob_store.put_file(path)
        except BlobStoreError as exc:
            raise RegistryError(
                f"cannot register {family}: uploading {path} to {self.blob_store} failed: {exc}"
            ) from exc
        sha = key_sha256(key)
        if sha is None:  # every BlobStore returns content-addressed keys; guard the contract
            raise RegistryError(f"blob store {self.blob_store} returned a key without a SHA-256: {key!r}")
        uri = self.blob_store.uri(key)

        last_error: IntegrityError | None = None
        for _ in range(_REGISTER_ATTEMPTS):
            try:
                with session_scope(self.engine) as s:
                    _lock_family(s, family)
                    existing = s.scalars(
                        select(ModelVersion)
                        .where(ModelVersion.family == family, ModelVersion.artifact_sha256 == sha)
                        .order_by(ModelVersion.id)
                        .limit(1)
                    ).first()
                    if existing is not None:
                        if version is not None and version != existing.version:
                            log.warning(
                                "%s: %s holds the same bytes (sha256 %s) as the requested version "
                                "%r; returning %s", family, existing.version, sha, version,
                                existing.version,
                            )
                        else:
                            log.info("%s/%s already holds sha256 %s", family, existing.version, sha)
                        return _to_info(s, existing)
                    name = version or _next_version_name(s, family)
                    taken = s.scalars(
                        select(ModelVersion).where(
                            ModelVersion.family == family, ModelVersion.version == name
                        )
                    ).first()
                    if taken is not None:
                        raise VersionConflict(
                            f"{family}/{name} already exists with a different artifact "
                            f"(sha256 {taken.artifact_sha256}, {taken.artifact_uri}); "
                            f"{path} has sha256 {sha}: choose another version name"
                        )
                    parent_id = None
                    if parent_version is not None:
                        parent_id = _get_row(s, parent_family, parent_version).id
                    _check_rounds_exist(s, round_ids, family=family)
                    row = ModelVersion(
                        family=family,
                        version=name,
                        artifact_uri=uri,
                        artifact_sha256=sha,
                        config=config_json,
                        metrics=metrics_json,
                        parent_id=parent_id,
                        stage=ModelStage.CANDIDATE,
                    )
                    s.add(row)
                    s.flush()
                    for rid in round_ids:
                        s.add(ModelVersionRound(model_version_id=row.id, round_id=rid))
                    if stage is ModelStage.PRODUCTION:
                        _promote_locked(s, row)
                    elif stage is ModelStage.RETIRED:
                        _set_stage(row, ModelStage.RETIRED)
                    s.flush()
                    info = _to_info(s, row)
                log.info("registered %s (sha256 %s, %s)", info.ref, sha, info.stage.value)
                return info
            except IntegrityError as exc:
                # Another writer inserted the same (family, version) first; the next attempt sees
                # its row and either returns it (same bytes) or picks the next free name.
                last_error = exc
        raise RegistryError(
            f"cannot register {family} ({path}): the version name kept colliding with concurrent "
            f"registrations after {_REGISTER_ATTEMPTS} attempts: {last_error}"
        )

    def promote(self, family: str, version: str) -> PromotionResult:
        """Make ``family/version`` the production version, retiring the current one, atomically.

        Promoting a retired version (a rollback) is allowed; the result's ``notes`` say so.
        Promoting the production version again changes nothing (``changed=False``).
        """
        with session_scope(self.engine) as s:
            _lock_family(s, family)
            row = _get_row(s, family, version)
            previous_stage = row.stage
            notes: list[str] = []
            if previous_stage is ModelStage.PRODUCTION:
                others = _production_rows(s, family)
                if len(others) == 1:
                    return PromotionResult(
                        promoted=_to_info(s, row), previous_stage=previous_stage, retired=None,
                        changed=False, notes=(f"{family}/{version} is already production",),
                    )
            if previous_stage is ModelStage.RETIRED:
                since = f" since {row.stage_changed_at.isoformat()}" if row.stage_changed_at else ""
                notes.append(
                    f"{family}/{version} was retired{since}; it is production again (rollback)"
                )
            retired_rows = _promote_locked(s, row)
            s.flush()
            retired = [_to_info(s, r) for r in retired_rows]
            if len(retired) > 1:  # only possible if the invariant was broken before us
                notes.append(
                    "repaired: the family had several production versions "
                    f"({', '.join(r.version for r in retired)}); all of them are retired now"
                )
            result = PromotionResult(
                promoted=_to_info(s, row),
                previous_stage=previous_stage,
                retired=retired[0] if retired else None,
                changed=True,
                notes=tuple(notes),
            )
        for note in result.notes:
            log.warning("%s", note)
        log.info(
            "promoted %s to production%s", result.promoted.ref,
            f", retired {result.retired.version}" if result.retired else "",
        )
        return result

    def retire(self, family: str, version: str) -> ModelVersionInfo:
        """Take ``family/version`` out of service. Retiring the production version leaves the
        family without one (logged): that is how a bad model is withdrawn without a replacement."""
        with session_scope(self.engine) as s:
            _lock_family(s, family)
            row = _get_row(s, family, version)
            was = row.stage
            if was is not ModelStage.RETIRED:
                _set_stage(row, ModelStage.RETIRED)
                s.flush()
            info = _to_info(s, row)
        if was is ModelStage.PRODUCTION:
            log.warning("retired %s, the production version: %s has no production version now",
                        info.ref, family)
        return info

    def update_metrics(
        self, family: str, version: str, metrics: Mapping[str, Any]
    ) -> ModelVersionInfo:
        """Merge ``metrics`` into the version's metrics (new keys added, equal keys replaced),
        e.g. evaluation results that arrive after registration. Returns the updated record."""
        new = _json_object("metrics", metrics, family=family)
        with session_scope(self.engine) as s:
            # Locked so that two evaluations writing different keys do not drop each other's.
            _lock_family(s, family)
            row = _get_row(s, family, version)
            row.metrics = {**(row.metrics or {}), **new}  # a new dict: JSON is not mutation-tracked
            s.flush()
            return _to_info(s, row)

    # -- reading --------------------------------------------------------------------------------

    def get(self, family: str, version: str) -> ModelVersionInfo:
        """The version, or ``UnknownModelVersion`` naming the family and its known versions."""
        with session_scope(self.engine) as s:
            return _to_info(s, _get_row(s, family, version))

    def production(self, family: str) -> ModelVersionInfo | None:
        """The family's production version, or None (no version promoted yet, or retired)."""
        with session_scope(self.engine) as s:
            rows = _production_rows(s, family)
            if len(rows) > 1:
                raise RegistryError(
                    f"{family} has {len(rows)} production versions "
                    f"({', '.join(r.version for r in rows)}); there must be one: promote the "
                    "right one again to retire the others"
                )
            return _to_info(s, rows[0]) if rows else None

    def list(self, family: str | None = None) -> list[ModelVersionInfo]:
        """All versions (of ``family``, or of every family), by family then registration order."""
        with session_scope(self.engine) as s:
            stmt = select(ModelVersion).order_by(ModelVersion.family, ModelVersion.id)
            if family is not None:
                stmt = stmt.where(ModelVersion.family == family)
            rows = s.scalars(stmt).all()
            return _to_infos(s, rows)

    def families(self) -> list[str]:
        """Every family with at least one version, sorted."""
        with session_scope(self.engine) as s:
            return _families(s)

    def lineage(self, family: str, version: str) -> list[ModelVersionInfo]:
        """The parents of ``family/version``, nearest first (parent, grandparent, ... root).

        Empty for a version trained from scratch. The chain may cross families (a fine-tuned
        family whose root is an imported official checkpoint).
        """
        with session_scope(self.engine) as s:
            row = _get_row(s, family, version)
            chain: list[ModelVersion] = []
            seen = {row.id}
            parent_id = row.parent_id
            while parent_id is not None:
                if parent_id in seen:  # cannot be created through the registry; stop, don't spin
                    raise RegistryError(
                        f"lineage of {family}/{version} has a cycle at model_versions.id={parent_id}"
                    )
                seen.add(parent_id)
                parent = s.get(ModelVersion, parent_id)
                if parent is None:
                    break
                chain.append(parent)
                parent_id = parent.parent_id
            return _to_infos(s, chain)

    # -- artifacts ------------------------------------------------------------------------------

    def fetch_artifact(self, family: str, version: str, dest_dir: str | os.PathLike) -> Path:
        """Download the version's artifact to ``dest_dir/<family>/<version><suffix>`` and verify
        it against the SHA-256 the registry recorded.

        A file already there with the right hash is reused (no download). A mismatch raises
        ``ArtifactIntegrityError`` naming the version, and leaves nothing at the destination.
        The blob is streamed through the store's ``open`` and hashed while it is written, so it
        is read once and verified end to end, whichever backend holds it.
        """
        info = self.get(family, version)
        key = info.artifact_key
        if key is None or key_sha256(key) != info.artifact_sha256:
            raise RegistryError(
                f"{info.ref}: artifact URI {info.artifact_uri!r} does not name the content-addressed "
                f"blob of its recorded sha256 {info.artifact_sha256}; it was not registered "
                "through this registry, or its row was edited"
            )
        suffix = key[len("sha256/xx/") + 64:]
        dest = Path(dest_dir) / family / f"{version}{suffix}"
        if dest.is_file() and sha256_file(dest)[0] == info.artifact_sha256:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                try:
                    with self.blob_store.open(key) as src:
                        while chunk := src.read(_COPY_CHUNK):
                            h.update(chunk)
                            out.write(chunk)
                except BlobNotFound:
                    raise ArtifactMissing(
                        f"{info.ref}: its artifact {key!r} (registered as {info.artifact_uri}) is "
                        f"not in {self.blob_store}"
                    ) from None
                except BlobStoreError as exc:
                    raise RegistryError(
                        f"{info.ref}: downloading its artifact {key!r} from {self.blob_store} "
                        f"failed: {exc}"
                    ) from exc
                out.flush()
                os.fsync(out.fileno())
            got = h.hexdigest()
            if got != info.artifact_sha256:
                raise ArtifactIntegrityError(
                    f"{info.ref}: artifact {key!r} in {self.blob_store} is corrupt: its bytes hash "
                    f"to sha256 {got}, the registry recorded {info.artifact_sha256}; "
                    f"nothing was written to {dest}"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest


# --- helpers (all run inside the caller's session) -------------------------------------------------


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistryError(
            f"invalid model {what} {name!r}: use 1-128 characters from letters, digits and ._+- "
            "starting with a letter or digit"
        )


def _as_stage(stage: ModelStage | str) -> ModelStage:
    try:
        return ModelStage(stage)
    except ValueError:
        raise RegistryError(
            f"unknown model stage {stage!r}; expected one of {', '.join(m.value for m in ModelStage)}"
        ) from None


def _plain(value: Any, where: str) -> Any:
    """A JSON-ready copy of ``value``. numpy/torch scalars (anything with ``.item()``) become
    Python numbers, since metrics usually come straight from a training loop. NaN and infinity are
    refused: PostgreSQL's JSON rejects them while SQLite would keep them, so the two backends would
    disagree; the error names the offending key."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise RegistryError(f"{where}: key {k!r} is not a string (JSON objects need string keys)")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RegistryError(f"{where} is {value}: JSON cannot store it; record None instead")
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _plain(item(), where)
        except (TypeError, ValueError):
            pass  # not a scalar (e.g. a multi-element array): reported below
    raise RegistryError(f"{where} has a value of type {type(value).__name__} that JSON cannot store")


def _json_object(what: str, value: Mapping[str, Any] | None, *, family: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RegistryError(f"{family}: {what} must be a dict, got {type(value).__name__}")
    return _plain(value, f"{family} {what}")


def _unique_ints(values: Iterable[int], *, family: str) -> list[int]:
    out: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise RegistryError(
                f"{family}: rounds must be annotation_rounds ids (ints), got {v!r}"
            )
        if v not in out:
            out.append(v)
    return out


def _lock_family(s: Session, family: str) -> None:
    """Serialise writers of one family until the transaction ends. Must be the transaction's first
    statement.

    PostgreSQL: row locks on every version of the family (in id order, so two lockers cannot
    deadlock); a second promoter waits, then reads the first one's committed result.
    SQLite has no row locks: a write statement takes the database's single write lock for the rest
    of the transaction (a second writer waits up to the busy timeout). Taking it before any read
    matters: a WAL reader that later tries to write fails with SQLITE_BUSY instead of waiting.
    The statement changes no row.
    """
    if s.get_bind().dialect.name == "postgresql":
        s.execute(
            select(ModelVersion.id)
            .where(ModelVersion.family == family)
            .order_by(ModelVersion.id)
            .with_for_update()
        )
    else:
        s.execute(text("UPDATE model_versions SET stage = stage WHERE 1 = 0"))


def _set_stage(row: ModelVersion, stage: ModelStage) -> None:
    row.stage = stage
    row.stage_changed_at = dt.datetime.now(dt.timezone.utc)


def _production_rows(s: Session, family: str) -> list[ModelVersion]:
    return list(
        s.scalars(
            select(ModelVersion)
            .where(ModelVersion.family == family, ModelVersion.stage == ModelStage.PRODUCTION)
            .order_by(ModelVersion.id)
        ).all()
    )


def _promote_locked(s: Session, row: ModelVersion) -> list[ModelVersion]:
    """Retire the family's other production versions, then promote ``row``; returns the retired.

    The retirements are flushed before the promotion so that the statements reach the database in
    that order: with a partial unique index on (family) WHERE stage = 'production', the other
    order would violate it in between (the ORM's own flush order is by primary key)."""
    retired = [r for r in _production_rows(s, row.family) if r.id != row.id]
    for r in retired:
        _set_stage(r, ModelStage.RETIRED)
    s.flush()
    if row.stage is not ModelStage.PRODUCTION:
        _set_stage(row, ModelStage.PRODUCTION)
    return retired


def _families(s: Session) -> list[str]:
    return list(s.scalars(select(ModelVersion.family).distinct().order_by(ModelVersion.family)))


def _preview(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:_MAX_NAMES_IN_ERRORS])
    more = len(names) - _MAX_NAMES_IN_ERRORS
    return shown + (f" and {more} more" if more > 0 else "")


def _get_row(s: Session, family: str, version: str) -> ModelVersion:
    row = s.scalars(
        select(ModelVersion).where(ModelVersion.family == family, ModelVersion.version == version)
    ).first()
    if row is not None:
        return row
    known = list(
        s.scalars(
            select(ModelVersion.version)
            .where(ModelVersion.family == family)
            .order_by(ModelVersion.id)
        )
    )
    if known:
        raise UnknownModelVersion(
            f"model family {family!r} has no version {version!r}; known versions: {_preview(known)}"
        )
    raise UnknownModelVersion(
        f"no model family {family!r} (looking for version {version!r}); "
        f"known families: {_preview(_families(s))}"
    )


def _next_version_name(s: Session, family: str) -> str:
    """``{family}-v{n}`` with n one above the highest auto-style name in the family (not the row
    count: an explicitly named ``{family}-v9`` must not be collided with later)."""
    pattern = re.compile(rf"^{re.escape(family)}-v(\d+)$")
    names = s.scalars(select(ModelVersion.version).where(ModelVersion.family == family))
    highest = max((int(m.group(1)) for n in names if (m := pattern.match(n))), default=0)
    return f"{family}-v{highest + 1}"


def _check_rounds_exist(s: Session, round_ids: list[int], *, family: str) -> None:
    if not round_ids:
        return
    found = set(s.scalars(select(AnnotationRound.id).where(AnnotationRound.id.in_(round_ids))))
    missing = [r for r in round_ids if r not in found]
    if missing:
        raise RegistryError(
            f"cannot register {family}: annotation round id(s) {missing} do not exist "
            "(rounds are annotation_rounds.id values)"
        )


def _to_infos(s: Session, rows: Iterable[ModelVersion]) -> list[ModelVersionInfo]:
    rows = list(rows)
    if not rows:
        return []
    ids = [r.id for r in rows]
    rounds: dict[int, list[int]] = {i: [] for i in ids}
    for mv_id, round_id in s.execute(
        select(ModelVersionRound.model_version_id, ModelVersionRound.round_id)
        .where(ModelVersionRound.model_version_id.in_(ids))
        .order_by(ModelVersionRound.round_id)
    ):
        rounds[mv_id].append(round_id)
    parent_ids = {r.parent_id for r in rows if r.parent_id is not None}
    parents: dict[int, tuple[str, str]] = {}
    if parent_ids:
        p = aliased(ModelVersion)
        for pid, pfam, pver in s.execute(
            select(p.id, p.family, p.version).where(p.id.in_(parent_ids))
        ):
            parents[pid] = (pfam, pver)
    out = []
    for r in rows:
        config = dict(r.config or {})
        notes = config.pop(NOTES_CONFIG_KEY, "") or ""
        pfam, pver = parents.get(r.parent_id, (None, None)) if r.parent_id else (None, None)
        out.append(
            ModelVersionInfo(
                id=r.id,
                family=r.family,
                version=r.version,
                stage=ModelStage(r.stage),
                artifact_uri=r.artifact_uri,
                artifact_sha256=r.artifact_sha256,
                config=json.loads(json.dumps(config)),  # deep copy: callers may mutate theirs
                metrics=json.loads(json.dumps(r.metrics or {})),
                parent_id=r.parent_id,
                parent_family=pfam,
                parent_version=pver,
                rounds=tuple(rounds[r.id]),
                notes=str(notes),
                created_at=r.created_at,
                stage_changed_at=r.stage_changed_at,
            )
        )
    return out


def _to_info(s: Session, row: ModelVersion) -> ModelVersionInfo:
    return _to_infos(s, [row])[0]

