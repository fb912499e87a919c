"""Label Studio adapter: the only code that talks to Label Studio (``client`` is the only module
that uses label-studio-sdk).

- ``client``: ``LabelStudioClient(url, token)``: projects (one per dataset and round kind, found or
  created by title), local-files storages, bulk import, task/annotation reads, snapshot exports.
- ``label_config``: labeling configs built from the XML files in ``configs/``.
- ``tasks``: chunk tasks (one per video chunk, multi-image, brush predictions per frame/object).
- ``importer``: batched, retried, idempotent import recorded in ``annotation_tasks``.
- ``validate``: every result read back is checked before it touches the database.
- ``server``: a local server run through ``infra/labelstudio/*.sh`` (tests, bench, services).
"""
from annotation.labelstudio.client import (
    LabelStudioApiError,
    LabelStudioClient,
    LabelStudioError,
    LabelStudioUnavailable,
    ProjectRef,
    project_title,
)
from annotation.labelstudio.importer import ImportReport, import_chunk_tasks
from annotation.labelstudio.label_config import (
    CORRECTION,
    CORRECTION_VERDICTS,
    VERIFICATION,
    VERIFICATION_VERDICTS,
    build_label_config,
)
from annotation.labelstudio.tasks import (
    ChunkObject,
    ChunkTask,
    brush_result,
    build_task_payload,
    chunk_ranges,
    idempotency_key,
    local_file_url,
    write_frames,
)
from annotation.labelstudio.validate import (
    AnnotationInvalid,
    Issue,
    TaskSpec,
    ValidatedAnnotation,
    frames_changed,
    task_spec_from_data,
    validate_annotation,
    validate_result,
)

__all__ = [
    "AnnotationInvalid",
    "CORRECTION",
    "CORRECTION_VERDICTS",
    "ChunkObject",
    "ChunkTask",
    "ImportReport",
    "Issue",
    "LabelStudioApiError",
    "LabelStudioClient",
    "LabelStudioError",
    "LabelStudioUnavailable",
    "ProjectRef",
    "TaskSpec",
    "VERIFICATION",
    "VERIFICATION_VERDICTS",
    "ValidatedAnnotation",
    "brush_result",
    "build_label_config",
    "build_task_payload",
    "chunk_ranges",
    "frames_changed",
    "idempotency_key",
    "import_chunk_tasks",
    "local_file_url",
    "project_title",
    "task_spec_from_data",
    "validate_annotation",
    "validate_result",
    "write_frames",
]
