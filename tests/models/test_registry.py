"""models.registry against real databases (SQLite and PostgreSQL, via the ``engine`` fixture) and
real blob stores (a local folder, and moto's S3 server over HTTP). No mocks."""
from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from pathlib import Path

import pytest

from models.registry import (
    NOTES_CONFIG_KEY,
    ArtifactIntegrityError,
    ArtifactMissing,
    ModelRegistry,
    RegistryError,
    UnknownModelVersion,
    VersionConflict,
)
from storage.blobs import LocalBlobStore, S3BlobStore, sha256_file
from storage.db import session_scope
from storage.schema import AnnotationRound, Dataset, ModelStage, ModelVersion
from tests.fixtures_s3 import S3_TEST_CREDENTIALS


@pytest.fixture
def store(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def registry(engine, store) -> ModelRegistry:
    return ModelRegistry(engine, store)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def any_store(request, tmp_path):
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    return S3BlobStore(
        request.getfixturevalue("s3_bucket"), prefix="models",
        endpoint_url=request.getfixturevalue("moto_endpoint"), **S3_TEST_CREDENTIALS,
    )


def artifact(tmp_path: Path, name: str, payload: bytes | str) -> Path:
    """A stand-in checkpoint: the registry treats artifacts as opaque bytes."""
    path = tmp_path / "artifacts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload.encode() if isinstance(payload, str) else payload)
    return path


def make_rounds(engine, n: int) -> list[int]:
    with session_scope(engine) as s:
        ds = Dataset(name="sav-mini")
        s.add(ds)
        s.flush()
        rounds = [AnnotationRound(dataset_id=ds.id, number=i) for i in range(n)]
        s.add_all(rounds)
        s.flush()
        return [r.id for r in rounds]


def register_n(registry, tmp_path, n: int, family: str = "sam2"):
    return [
        registry.register(family, artifact(tmp_path, f"{family}-{i}.pt", f"{family} weights {i}"))
        for i in range(n)
    ]


def production_versions(engine, family: str) -> list[str]:
    """Read the stage column directly, not through the registry under test."""
    with session_scope(engine) as s:
        return [
            r.version for r in s.query(ModelVersion).filter_by(family=family).all()
            if r.stage == ModelStage.PRODUCTION
        ]


# --- register --------------------------------------------------------------------------------------


def test_register_records_artifact_config_metrics_and_lineage(registry, store, engine, tmp_path):
    round_ids = make_rounds(engine, 2)
    base = registry.register(
        "sam2", artifact(tmp_path, "base.pt", b"base weights"),
        config={"image_size": 128, "layers": [1, 2]}, metrics={"j_and_f": 0.61},
    )
    path = artifact(tmp_path, "ft.pt", b"fine-tuned weights")
    ft = registry.register(
        "sam2", path, config={"lr": 1e-4}, metrics={"j_and_f": 0.68, "val_loss": 0.2},
        parent_version=base.version, rounds=[round_ids[1], round_ids[0], round_ids[1]],
        notes="round 2 retrain",
    )
    assert (base.version, ft.version) == ("sam2-v1", "sam2-v2")
    sha, _ = sha256_file(path)
    assert ft.artifact_sha256 == sha
    assert ft.artifact_key is not None and store.exists(ft.artifact_key)
    assert ft.artifact_uri == store.uri(ft.artifact_key)
    assert store.get_bytes(ft.artifact_key) == b"fine-tuned weights"
    assert ft.config == {"lr": 1e-4} and NOTES_CONFIG_KEY not in ft.config
    assert ft.metrics == {"j_and_f": 0.68, "val_loss": 0.2}
    assert ft.notes == "round 2 retrain" and base.notes == ""
    assert (ft.parent_family, ft.parent_version, ft.parent_id) == ("sam2", "sam2-v1", base.id)
    assert ft.rounds == tuple(sorted(round_ids))
    assert ft.stage is ModelStage.CANDIDATE and ft.stage_changed_at is None
    assert ft.created_at.tzinfo is not None
    assert abs(ft.created_at - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    assert registry.get("sam2", "sam2-v2") == ft


def test_same_file_twice_returns_the_existing_version(registry, store, tmp_path):
    path = artifact(tmp_path, "a.pt", b"same bytes")
    first = registry.register("sam2", path, metrics={"j": 0.5})
    copy = artifact(tmp_path, "copy-of-a.pt", b"same bytes")
    again = registry.register("sam2", copy, metrics={"j": 0.9})
    renamed = registry.register("sam2", path, version="would-be-duplicate")
    assert again == first and renamed == first
    assert again.metrics == {"j": 0.5}  # the existing record wins
    assert [v.version for v in registry.list("sam2")] == ["sam2-v1"]
    assert len(list(store.list())) == 1
    # Idempotency is per family: the same bytes may start another family.
    other = registry.register("sam2-distilled", path)
    assert other.version == "sam2-distilled-v1" and other.artifact_sha256 == first.artifact_sha256


def test_explicit_versions_and_auto_numbering(registry, tmp_path):
    registry.register("sam2", artifact(tmp_path, "x.pt", "x"), version="sam2-v9")
    auto = registry.register("sam2", artifact(tmp_path, "y.pt", "y"))
    assert auto.version == "sam2-v10"  # above the highest, not the row count
    custom = registry.register("sam2", artifact(tmp_path, "z.pt", "z"), version="baseline.1")
    assert custom.version == "baseline.1"
    with pytest.raises(VersionConflict, match=r"sam2/baseline\.1 already exists with a different"):
        registry.register("sam2", artifact(tmp_path, "w.pt", "w"), version="baseline.1")


def test_register_as_production_retires_the_previous_one(registry, engine, tmp_path):
    v1 = registry.register("sam2", artifact(tmp_path, "1.pt", "1"), stage="production")
    v2 = registry.register("sam2", artifact(tmp_path, "2.pt", "2"), stage=ModelStage.PRODUCTION)
    assert v1.stage is ModelStage.PRODUCTION and v2.stage is ModelStage.PRODUCTION
    assert registry.get("sam2", v1.version).stage is ModelStage.RETIRED
    assert production_versions(engine, "sam2") == [v2.version]


@pytest.mark.badinput
def test_register_refuses_bad_input_and_writes_nothing(registry, store, engine, tmp_path):
    good = artifact(tmp_path, "g.pt", "g")
    cases = [
        (dict(family="sam 2"), "invalid model family 'sam 2'"),
        (dict(version="../evil"), "invalid model version '../evil'"),
        (dict(metrics={"val_loss": float("nan")}), r"sam2 metrics\['val_loss'\] is nan"),
        (dict(metrics={"x": object()}), r"metrics\['x'\] has a value of type object"),
        (dict(config={NOTES_CONFIG_KEY: "x"}), "is reserved for notes"),
        (dict(stage="staging"), "unknown model stage 'staging'"),
        (dict(rounds=[424242]), r"annotation round id\(s\) \[424242\] do not exist"),
        (dict(parent_version="nope"), "model family 'sam2' has no version 'nope'|no model family 'sam2'"),
        (dict(artifact_path=tmp_path / "missing.pt"), "missing.pt is not a file"),
    ]
    for overrides, message in cases:
        kwargs = {"family": "sam2", "artifact_path": good, **overrides}
        with pytest.raises(RegistryError, match=message):
            registry.register(kwargs.pop("family"), kwargs.pop("artifact_path"), **kwargs)
    assert registry.list() == []
    assert list(store.list()) == []  # all refused before the upload


def test_numpy_like_scalars_become_plain_numbers(registry, tmp_path):
    class Scalar:  # what numpy/torch scalars look like to the registry: .item()
        def __init__(self, v):
            self.v = v

        def item(self):
            return self.v

    info = registry.register("sam2", artifact(tmp_path, "s.pt", "s"), metrics={"iou": Scalar(0.75)})
    assert registry.get("sam2", info.version).metrics == {"iou": 0.75}


# --- reading ---------------------------------------------------------------------------------------


def test_unknown_version_names_family_and_known_versions(registry, tmp_path):
    register_n(registry, tmp_path, 2)
    with pytest.raises(UnknownModelVersion, match=r"'sam2' has no version 'v7'; known versions: sam2-v1, sam2-v2"):
        registry.get("sam2", "v7")
    with pytest.raises(UnknownModelVersion, match=r"no model family 'yolo'.*known families: sam2"):
        registry.promote("yolo", "v1")
    assert registry.production("yolo") is None


def test_list_orders_by_family_then_registration(registry, tmp_path):
    register_n(registry, tmp_path, 2, family="zeta")
    register_n(registry, tmp_path, 2, family="alpha")
    assert [v.ref for v in registry.list()] == ["alpha/alpha-v1", "alpha/alpha-v2", "zeta/zeta-v1", "zeta/zeta-v2"]
    assert [v.version for v in registry.list("zeta")] == ["zeta-v1", "zeta-v2"]
    assert registry.families() == ["alpha", "zeta"]


def test_infos_are_frozen_copies(registry, tmp_path):
    info = registry.register("sam2", artifact(tmp_path, "f.pt", "f"), metrics={"j": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.stage = ModelStage.PRODUCTION  # type: ignore[misc]
    info.metrics["j"] = 99
    assert registry.get("sam2", info.version).metrics == {"j": 1}
    assert hash(registry.get("sam2", info.version)) == hash(registry.get("sam2", info.version))


def test_lineage_is_the_parent_chain_nearest_first(registry, tmp_path):
    root = registry.register("sam2.1-hiera-small", artifact(tmp_path, "official.pt", "official"),
                             version="official")
    v1 = registry.register("sam2", artifact(tmp_path, "1.pt", "1"),
                           parent_family="sam2.1-hiera-small", parent_version="official")
    v2 = registry.register("sam2", artifact(tmp_path, "2.pt", "2"), parent_version=v1.version)
    v3 = registry.register("sam2", artifact(tmp_path, "3.pt", "3"), parent_version=v2.version)
    assert [p.ref for p in registry.lineage("sam2", v3.version)] == [v2.ref, v1.ref, root.ref]
    assert registry.lineage("sam2.1-hiera-small", "official") == []


def test_update_metrics_merges(registry, tmp_path):
    info = registry.register("sam2", artifact(tmp_path, "m.pt", "m"), metrics={"train_loss": 0.3, "j": 0.5})
    updated = registry.update_metrics("sam2", info.version, {"j": 0.55, "val_j_and_f": 0.6})
    assert updated.metrics == {"train_loss": 0.3, "j": 0.55, "val_j_and_f": 0.6}
    assert registry.get("sam2", info.version).metrics == updated.metrics
    with pytest.raises(RegistryError, match="is inf"):
        registry.update_metrics("sam2", info.version, {"j": float("inf")})


# --- stages ----------------------------------------------------------------------------------------


def test_promote_retires_the_previous_production_version(registry, engine, tmp_path):
    v1, v2, _ = register_n(registry, tmp_path, 3)
    first = registry.promote("sam2", v1.version)
    assert first.changed and first.retired is None and first.previous_stage is ModelStage.CANDIDATE
    assert first.promoted.stage is ModelStage.PRODUCTION and first.promoted.stage_changed_at
    second = registry.promote("sam2", v2.version)
    assert second.retired is not None and second.retired.version == v1.version
    assert second.retired.stage is ModelStage.RETIRED
    assert registry.production("sam2").version == v2.version
    assert registry.get("sam2", v1.version).stage is ModelStage.RETIRED
    again = registry.promote("sam2", v2.version)
    assert not again.changed and again.retired is None
    assert production_versions(engine, "sam2") == [v2.version]


def test_exactly_one_production_after_many_promotes(registry, engine, tmp_path):
    versions = [v.version for v in register_n(registry, tmp_path, 4)]
    other = register_n(registry, tmp_path, 1, family="other")[0]
    registry.promote("other", other.version)
    for name in [versions[0], versions[2], versions[1], versions[2], versions[3], versions[0]]:
        registry.promote("sam2", name)
        assert production_versions(engine, "sam2") == [name]
        assert registry.production("sam2").version == name
    # Other families are untouched.
    assert production_versions(engine, "other") == [other.version]
    stages = {v.version: v.stage for v in registry.list("sam2")}
    assert stages == {versions[0]: ModelStage.PRODUCTION, versions[1]: ModelStage.RETIRED,
                      versions[2]: ModelStage.RETIRED, versions[3]: ModelStage.RETIRED}


def test_promoting_a_retired_version_is_allowed_and_noted(registry, tmp_path):
    v1, v2 = register_n(registry, tmp_path, 2)
    registry.promote("sam2", v1.version)
    registry.promote("sam2", v2.version)
    rollback = registry.promote("sam2", v1.version)
    assert rollback.previous_stage is ModelStage.RETIRED
    assert rollback.retired.version == v2.version
    assert any("was retired" in n and "sam2/sam2-v1" in n for n in rollback.notes)


def test_retire(registry, tmp_path):
    v1, v2 = register_n(registry, tmp_path, 2)
    registry.promote("sam2", v1.version)
    assert registry.retire("sam2", v2.version).stage is ModelStage.RETIRED
    assert registry.production("sam2").version == v1.version
    retired = registry.retire("sam2", v1.version)
    assert retired.stage is ModelStage.RETIRED and retired.stage_changed_at is not None
    assert registry.production("sam2") is None
    assert registry.retire("sam2", v1.version) == retired  # already retired: no change


def test_concurrent_promotes_leave_exactly_one_production(registry, engine, tmp_path):
    """Writers racing on one family serialise on the family lock (row locks on PostgreSQL, the
    write lock on SQLite) instead of each retiring the same old version and promoting its own."""
    versions = [v.version for v in register_n(registry, tmp_path, 4)]
    registry.promote("sam2", versions[0])
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(versions))

    def worker(name: str) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(3):
                registry.promote("sam2", name)
        except BaseException as exc:  # surfaced below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(production_versions(engine, "sam2")) == 1


# --- artifacts -------------------------------------------------------------------------------------


def test_fetch_artifact_round_trip(engine, any_store, tmp_path):
    registry = ModelRegistry(engine, any_store)
    payload = bytes(range(256)) * 5000  # > 1 MiB: several read chunks
    info = registry.register("sam2", artifact(tmp_path, "big.pt", payload))
    if isinstance(any_store, S3BlobStore):
        assert info.artifact_uri.startswith(f"s3://{any_store.bucket}/models/sha256/")
    dest = registry.fetch_artifact("sam2", info.version, tmp_path / "cache")
    assert dest == tmp_path / "cache" / "sam2" / "sam2-v1.pt"
    assert dest.read_bytes() == payload
    mtime = dest.stat().st_mtime_ns
    assert registry.fetch_artifact("sam2", info.version, tmp_path / "cache") == dest
    assert dest.stat().st_mtime_ns == mtime  # verified copy reused, not downloaded again
    dest.write_bytes(b"stale")
    assert registry.fetch_artifact("sam2", info.version, tmp_path / "cache").read_bytes() == payload


@pytest.mark.badinput
def test_fetch_artifact_detects_a_corrupt_blob(engine, any_store, tmp_path):
    registry = ModelRegistry(engine, any_store)
    info = registry.register("sam2", artifact(tmp_path, "c.pt", b"good weights"))
    # Corrupt the stored blob behind the registry's back.
    if isinstance(any_store, S3BlobStore):
        any_store.client.put_object(Bucket=any_store.bucket, Key=any_store.prefix + info.artifact_key,
                                    Body=b"bit rot")
    else:
        any_store.path(info.artifact_key).write_bytes(b"bit rot")
    with pytest.raises(ArtifactIntegrityError, match=r"sam2/sam2-v1: artifact .* is corrupt") as err:
        registry.fetch_artifact("sam2", info.version, tmp_path / "cache")
    assert info.artifact_sha256 in str(err.value)
    cache = tmp_path / "cache" / "sam2"
    assert not any(cache.iterdir())  # neither the file nor a temp file is left behind


@pytest.mark.badinput
def test_fetch_artifact_missing_blob_names_the_version(registry, store, tmp_path):
    info = registry.register("sam2", artifact(tmp_path, "gone.pt", b"weights"))
    store.path(info.artifact_key).unlink()
    with pytest.raises(ArtifactMissing, match=r"sam2/sam2-v1: its artifact .* is not in LocalBlobStore"):
        registry.fetch_artifact("sam2", info.version, tmp_path / "cache")
    # Registering the same file again heals the store (same version, blob uploaded again).
    assert registry.register("sam2", artifact(tmp_path, "gone.pt", b"weights")) == info
    assert registry.fetch_artifact("sam2", info.version, tmp_path / "cache").read_bytes() == b"weights"
