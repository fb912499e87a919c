"""The composition root: the one place that reads configuration (env vars prefixed DATAENGINE_, and
a `.env` file) and builds every component. Lower layers (storage, models, annotation) take explicit
arguments and never read the environment themselves."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DATAENGINE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where the embedded defaults keep their files (SQLite database, blob folder, service data).
    work_dir: Path = Field(default=Path(".work"))
    # SQLAlchemy URL. Embedded default: sqlite:///<work_dir>/dataengine.db.
    # Production: postgresql+psycopg://user@host:5432/dataengine
    database_url: str | None = None
    # Blob store. Embedded default: a local folder <work_dir>/blobs. Production: s3://bucket/prefix
    blob_uri: str | None = None
    # For S3-compatible stores (MinIO, moto in tests); boto3 also honours AWS_ENDPOINT_URL_S3.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"

    # Label Studio (issue 4): its own server, talked to only through label-studio-sdk.
    label_studio_url: str = "http://127.0.0.1:8089"
    label_studio_username: str = "admin@dataengine.local"
    label_studio_password: SecretStr = SecretStr("dataengine-admin")
    label_studio_token: SecretStr = SecretStr("0123456789abcdef0123456789abcdef01234567")
    webhook_secret: SecretStr = SecretStr("change-me-webhook-secret")
    chunk_frames: int = 32

    # Ray: "local" starts a private local cluster; an address attaches to an existing one.
    ray_address: str = "local"
    ray_num_cpus: int = 2
    gpu_per_worker: float = 0.0

    # Models: which SAM 2 family version pre-annotates (None: the registry's production version).
    sam2_model_version: str | None = None
    device: str = "auto"

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.work_dir / 'dataengine.db').resolve()}"

    @cached_property
    def resolved_blob_uri(self) -> str:
        if self.blob_uri:
            return self.blob_uri
        return str((self.work_dir / "blobs").resolve())

    def ensure_work_dir(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir

    # --- component builders (the composition root) ---------------------------------------------
    def engine(self, migrate: bool = True):
        """The metadata database, migrated to the latest schema (Alembic; a no-op when current)."""
        from storage.db import make_engine, upgrade

        self.ensure_work_dir()
        engine = make_engine(self.resolved_database_url)
        if migrate:
            upgrade(engine)
        return engine

    def blob_store(self):
        from storage.blobs import open_blob_store

        self.ensure_work_dir()
        return open_blob_store(
            self.resolved_blob_uri, endpoint_url=self.s3_endpoint_url, region=self.s3_region
        )


def load_settings(**overrides) -> Settings:
    return Settings(**overrides)
