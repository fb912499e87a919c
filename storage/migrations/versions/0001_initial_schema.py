"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 15:40:09.559182

Revision scripts are frozen history: they use only alembic and sqlalchemy, never storage.schema.

Written by autogenerate from storage/schema.py, then reviewed:
- enum columns are spelled as VARCHAR(32) plus an explicit, named CHECK constraint
  (``ck_<table>_<column>``). Alembic builds these tables on a MetaData without the schema's naming
  convention, so ``sa.Enum(create_constraint=True)`` would have named every one of them just
  "status"/"kind"/..., and later batch migrations could not find them by their ORM names;
- every other CHECK, unique constraint, foreign key (with its ON DELETE) and index is named as the
  ORM names it; tests/storage/test_migrations.py compares both (autogenerate cannot see CHECKs).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('datasets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
    sa.UniqueConstraint('name', name=op.f('uq_datasets_name'))
    )
    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('family', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=128), nullable=False),
    sa.Column('artifact_uri', sa.String(length=1024), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('stage', sa.String(length=32), server_default='candidate', nullable=False),
    sa.Column('stage_changed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint('length(artifact_sha256) = 64', name=op.f('ck_model_versions_artifact_sha256_hex')),
    sa.CheckConstraint('parent_id IS NULL OR parent_id <> id', name=op.f('ck_model_versions_not_own_parent')),
    sa.ForeignKeyConstraint(['parent_id'], ['model_versions.id'], name=op.f('fk_model_versions_parent_id_model_versions'), ondelete='SET NULL'),
    sa.CheckConstraint("stage IN ('candidate', 'production', 'retired')", name=op.f('ck_model_versions_stage')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('family', 'version', name=op.f('uq_model_versions_family_version'))
    )
    op.create_index(op.f('ix_model_versions_family_stage'), 'model_versions', ['family', 'stage'], unique=False)
    op.create_index(op.f('ix_model_versions_parent_id'), 'model_versions', ['parent_id'], unique=False)
    op.create_table('pipeline_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flow', sa.String(length=128), nullable=False),
    sa.Column('run_key', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=32), server_default='pending', nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f('ck_pipeline_runs_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_runs')),
    sa.UniqueConstraint('run_key', name=op.f('uq_pipeline_runs_run_key'))
    )
    op.create_index(op.f('ix_pipeline_runs_flow_status'), 'pipeline_runs', ['flow', 'status'], unique=False)
    op.create_table('annotation_rounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), server_default='planned', nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint('number >= 0', name=op.f('ck_annotation_rounds_number_nonneg')),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_annotation_rounds_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_annotation_rounds_model_version_id_model_versions')),
    sa.CheckConstraint("status IN ('planned', 'running', 'completed', 'failed', 'cancelled')", name=op.f('ck_annotation_rounds_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotation_rounds')),
    sa.UniqueConstraint('dataset_id', 'number', name=op.f('uq_annotation_rounds_dataset_id_number'))
    )
    op.create_index(op.f('ix_annotation_rounds_model_version_id'), 'annotation_rounds', ['model_version_id'], unique=False)
    op.create_table('videos',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('uri', sa.String(length=1024), nullable=False),
    sa.Column('blob_key', sa.String(length=512), nullable=True),
    sa.Column('source_path', sa.String(length=1024), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('fps', sa.Float(), nullable=False),
    sa.Column('frame_count', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('split', sa.String(length=32), server_default='train', nullable=False),
    sa.Column('ground_truth_uri', sa.String(length=1024), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint('fps > 0', name=op.f('ck_videos_fps_positive')),
    sa.CheckConstraint('frame_count >= 0', name=op.f('ck_videos_frame_count_nonneg')),
    sa.CheckConstraint('length(sha256) = 64', name=op.f('ck_videos_sha256_hex')),
    sa.CheckConstraint('size_bytes >= 0', name=op.f('ck_videos_size_bytes_nonneg')),
    sa.CheckConstraint('width > 0 AND height > 0', name=op.f('ck_videos_size_positive')),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_videos_dataset_id_datasets'), ondelete='CASCADE'),
    sa.CheckConstraint("split IN ('train', 'val', 'test')", name=op.f('ck_videos_split')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_videos')),
    sa.UniqueConstraint('dataset_id', 'sha256', name=op.f('uq_videos_dataset_id_sha256'))
    )
    op.create_table('annotation_tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('tool', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('external_task_id', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('frame_start', sa.Integer(), nullable=False),
    sa.Column('frame_stop', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), server_default='pending', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint('frame_start >= 0 AND frame_stop > frame_start', name=op.f('ck_annotation_tasks_frame_range')),
    sa.ForeignKeyConstraint(['round_id'], ['annotation_rounds.id'], name=op.f('fk_annotation_tasks_round_id_annotation_rounds'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_annotation_tasks_video_id_videos'), ondelete='CASCADE'),
    sa.CheckConstraint("kind IN ('correction', 'verification')", name=op.f('ck_annotation_tasks_kind')),
    sa.CheckConstraint("status IN ('pending', 'open', 'submitted', 'synced', 'failed', 'cancelled')", name=op.f('ck_annotation_tasks_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotation_tasks')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_annotation_tasks_idempotency_key')),
    sa.UniqueConstraint('tool', 'project_id', 'external_task_id', name=op.f('uq_annotation_tasks_tool_project_id_external_task_id'))
    )
    op.create_index(op.f('ix_annotation_tasks_round_id_status'), 'annotation_tasks', ['round_id', 'status'], unique=False)
    op.create_index(op.f('ix_annotation_tasks_video_id'), 'annotation_tasks', ['video_id'], unique=False)
    op.create_table('captions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('frame_index', sa.Integer(), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('source_kind', sa.String(length=32), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint('frame_index IS NULL OR frame_index >= 0', name=op.f('ck_captions_frame_index_nonneg')),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_captions_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_captions_video_id_videos'), ondelete='CASCADE'),
    sa.CheckConstraint("source_kind IN ('model', 'human', 'scripted_annotator', 'ground_truth')", name=op.f('ck_captions_source_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_captions'))
    )
    op.create_index(op.f('ix_captions_model_version_id'), 'captions', ['model_version_id'], unique=False)
    op.create_index(op.f('ix_captions_video_id_frame_index'), 'captions', ['video_id', 'frame_index'], unique=False)
    op.create_table('masklets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('object_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=128), nullable=False),
    sa.Column('source_kind', sa.String(length=32), nullable=False),
    sa.Column('source_model_version_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=32), server_default='predicted', nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint("source_kind <> 'model' OR source_model_version_id IS NOT NULL", name=op.f('ck_masklets_model_source_has_version')),
    sa.CheckConstraint('object_id >= 0', name=op.f('ck_masklets_object_id_nonneg')),
    sa.ForeignKeyConstraint(['round_id'], ['annotation_rounds.id'], name=op.f('fk_masklets_round_id_annotation_rounds'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['source_model_version_id'], ['model_versions.id'], name=op.f('fk_masklets_source_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_masklets_video_id_videos'), ondelete='CASCADE'),
    sa.CheckConstraint("source_kind IN ('model', 'human', 'scripted_annotator', 'ground_truth')", name=op.f('ck_masklets_source_kind')),
    sa.CheckConstraint("status IN ('predicted', 'in_review', 'corrected', 'verified', 'rejected')", name=op.f('ck_masklets_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_masklets'))
    )
    op.create_index(op.f('ix_masklets_round_id_status'), 'masklets', ['round_id', 'status'], unique=False)
    op.create_index(op.f('ix_masklets_source_model_version_id'), 'masklets', ['source_model_version_id'], unique=False)
    op.create_index(op.f('ix_masklets_video_id_object_id'), 'masklets', ['video_id', 'object_id'], unique=False)
    op.create_table('model_version_rounds',
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_model_version_rounds_model_version_id_model_versions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['round_id'], ['annotation_rounds.id'], name=op.f('fk_model_version_rounds_round_id_annotation_rounds')),
    sa.PrimaryKeyConstraint('model_version_id', 'round_id', name=op.f('pk_model_version_rounds'))
    )
    op.create_index(op.f('ix_model_version_rounds_round_id'), 'model_version_rounds', ['round_id'], unique=False)
    op.create_table('ocr_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('frame_index', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('bbox_x', sa.Float(), nullable=False),
    sa.Column('bbox_y', sa.Float(), nullable=False),
    sa.Column('bbox_w', sa.Float(), nullable=False),
    sa.Column('bbox_h', sa.Float(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('engine', sa.String(length=64), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint('confidence IS NULL OR (confidence >= 0 AND confidence <= 1)', name=op.f('ck_ocr_tokens_confidence_range')),
    sa.CheckConstraint('frame_index >= 0', name=op.f('ck_ocr_tokens_frame_index_nonneg')),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_ocr_tokens_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_ocr_tokens_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ocr_tokens'))
    )
    op.create_index(op.f('ix_ocr_tokens_model_version_id'), 'ocr_tokens', ['model_version_id'], unique=False)
    op.create_index(op.f('ix_ocr_tokens_video_id_frame_index'), 'ocr_tokens', ['video_id', 'frame_index'], unique=False)
    op.create_table('applied_annotations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('tool', sa.String(length=64), nullable=False),
    sa.Column('external_annotation_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=128), nullable=False),
    sa.Column('summary', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('applied_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['annotation_tasks.id'], name=op.f('fk_applied_annotations_task_id_annotation_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_applied_annotations')),
    sa.UniqueConstraint('tool', 'external_annotation_id', 'version', name=op.f('uq_applied_annotations_tool_external_annotation_id_version'))
    )
    op.create_index(op.f('ix_applied_annotations_task_id'), 'applied_annotations', ['task_id'], unique=False)
    op.create_table('curation_tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('frame_index', sa.Integer(), nullable=True),
    sa.Column('masklet_id', sa.Integer(), nullable=True),
    sa.Column('tag', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('consumed_by_round_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint('frame_index IS NULL OR frame_index >= 0', name=op.f('ck_curation_tags_frame_index_nonneg')),
    sa.ForeignKeyConstraint(['consumed_by_round_id'], ['annotation_rounds.id'], name=op.f('fk_curation_tags_consumed_by_round_id_annotation_rounds'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['masklet_id'], ['masklets.id'], name=op.f('fk_curation_tags_masklet_id_masklets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_curation_tags_video_id_videos'), ondelete='CASCADE'),
    sa.CheckConstraint("tag IN ('reannotate', 'exclude', 'needs-review')", name=op.f('ck_curation_tags_tag')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_curation_tags'))
    )
    op.create_index(op.f('ix_curation_tags_consumed_by_round_id'), 'curation_tags', ['consumed_by_round_id'], unique=False)
    op.create_index(op.f('ix_curation_tags_masklet_id'), 'curation_tags', ['masklet_id'], unique=False)
    op.create_index(op.f('ix_curation_tags_video_id_tag'), 'curation_tags', ['video_id', 'tag'], unique=False)
    op.create_table('effort_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('masklet_id', sa.Integer(), nullable=True),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('actor_kind', sa.String(length=32), nullable=False),
    sa.Column('actor_id', sa.String(length=128), nullable=False),
    sa.Column('mode', sa.String(length=32), nullable=False),
    sa.Column('frames_total', sa.Integer(), server_default='0', nullable=False),
    sa.Column('frames_edited', sa.Integer(), server_default='0', nullable=False),
    sa.Column('clicks', sa.Integer(), server_default='0', nullable=False),
    sa.Column('strokes', sa.Integer(), server_default='0', nullable=False),
    sa.Column('seconds', sa.Float(), server_default='0', nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint('frames_edited <= frames_total', name=op.f('ck_effort_events_edited_within_total')),
    sa.CheckConstraint('frames_total >= 0 AND frames_edited >= 0 AND clicks >= 0 AND strokes >= 0 AND seconds >= 0', name=op.f('ck_effort_events_counts_nonneg')),
    sa.ForeignKeyConstraint(['masklet_id'], ['masklets.id'], name=op.f('fk_effort_events_masklet_id_masklets'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['round_id'], ['annotation_rounds.id'], name=op.f('fk_effort_events_round_id_annotation_rounds'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['annotation_tasks.id'], name=op.f('fk_effort_events_task_id_annotation_tasks'), ondelete='SET NULL'),
    sa.CheckConstraint("actor_kind IN ('human', 'scripted_annotator', 'model')", name=op.f('ck_effort_events_actor_kind')),
    sa.CheckConstraint("mode IN ('manual', 'propagate', 'interactive', 'review')", name=op.f('ck_effort_events_mode')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_effort_events'))
    )
    op.create_index(op.f('ix_effort_events_masklet_id'), 'effort_events', ['masklet_id'], unique=False)
    op.create_index(op.f('ix_effort_events_round_id_actor_kind'), 'effort_events', ['round_id', 'actor_kind'], unique=False)
    op.create_index(op.f('ix_effort_events_task_id'), 'effort_events', ['task_id'], unique=False)
    op.create_table('embeddings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('family', sa.String(length=128), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('subject_kind', sa.String(length=32), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('masklet_id', sa.Integer(), nullable=True),
    sa.Column('frame_index', sa.Integer(), nullable=True),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=True),
    sa.Column('blob_key', sa.String(length=512), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.CheckConstraint("(subject_kind <> 'video' OR (masklet_id IS NULL AND frame_index IS NULL)) AND (subject_kind <> 'frame' OR (masklet_id IS NULL AND frame_index IS NOT NULL)) AND (subject_kind <> 'masklet' OR masklet_id IS NOT NULL)", name=op.f('ck_embeddings_subject_consistent')),
    sa.CheckConstraint('dim > 0', name=op.f('ck_embeddings_dim_positive')),
    sa.CheckConstraint('vector IS NOT NULL OR blob_key IS NOT NULL', name=op.f('ck_embeddings_has_vector')),
    sa.CheckConstraint('vector IS NULL OR length(vector) = dim * 4', name=op.f('ck_embeddings_vector_float32')),
    sa.ForeignKeyConstraint(['masklet_id'], ['masklets.id'], name=op.f('fk_embeddings_masklet_id_masklets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_embeddings_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_embeddings_video_id_videos'), ondelete='CASCADE'),
    sa.CheckConstraint("subject_kind IN ('video', 'frame', 'masklet')", name=op.f('ck_embeddings_subject_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_embeddings'))
    )
    op.create_index(op.f('ix_embeddings_family_subject_kind'), 'embeddings', ['family', 'subject_kind'], unique=False)
    op.create_index(op.f('ix_embeddings_masklet_id'), 'embeddings', ['masklet_id'], unique=False)
    op.create_index(op.f('ix_embeddings_model_version_id'), 'embeddings', ['model_version_id'], unique=False)
    op.create_index(op.f('ix_embeddings_video_id_frame_index'), 'embeddings', ['video_id', 'frame_index'], unique=False)
    op.create_table('frame_masks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('masklet_id', sa.Integer(), nullable=False),
    sa.Column('frame_index', sa.Integer(), nullable=False),
    sa.Column('rle_counts', sa.Text(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('area', sa.Integer(), nullable=False),
    sa.Column('bbox_x', sa.Float(), nullable=False),
    sa.Column('bbox_y', sa.Float(), nullable=False),
    sa.Column('bbox_w', sa.Float(), nullable=False),
    sa.Column('bbox_h', sa.Float(), nullable=False),
    sa.Column('predicted_iou', sa.Float(), nullable=True),
    sa.Column('object_score', sa.Float(), nullable=True),
    sa.CheckConstraint('area >= 0', name=op.f('ck_frame_masks_area_nonneg')),
    sa.CheckConstraint('frame_index >= 0', name=op.f('ck_frame_masks_frame_index_nonneg')),
    sa.CheckConstraint('height > 0 AND width > 0', name=op.f('ck_frame_masks_size_positive')),
    sa.ForeignKeyConstraint(['masklet_id'], ['masklets.id'], name=op.f('fk_frame_masks_masklet_id_masklets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_frame_masks')),
    sa.UniqueConstraint('masklet_id', 'frame_index', name=op.f('uq_frame_masks_masklet_id_frame_index'))
    )


def downgrade() -> None:
    op.drop_table('frame_masks')
    op.drop_index(op.f('ix_embeddings_video_id_frame_index'), table_name='embeddings')
    op.drop_index(op.f('ix_embeddings_model_version_id'), table_name='embeddings')
    op.drop_index(op.f('ix_embeddings_masklet_id'), table_name='embeddings')
    op.drop_index(op.f('ix_embeddings_family_subject_kind'), table_name='embeddings')
    op.drop_table('embeddings')
    op.drop_index(op.f('ix_effort_events_task_id'), table_name='effort_events')
    op.drop_index(op.f('ix_effort_events_round_id_actor_kind'), table_name='effort_events')
    op.drop_index(op.f('ix_effort_events_masklet_id'), table_name='effort_events')
    op.drop_table('effort_events')
    op.drop_index(op.f('ix_curation_tags_video_id_tag'), table_name='curation_tags')
    op.drop_index(op.f('ix_curation_tags_masklet_id'), table_name='curation_tags')
    op.drop_index(op.f('ix_curation_tags_consumed_by_round_id'), table_name='curation_tags')
    op.drop_table('curation_tags')
    op.drop_index(op.f('ix_applied_annotations_task_id'), table_name='applied_annotations')
    op.drop_table('applied_annotations')
    op.drop_index(op.f('ix_ocr_tokens_video_id_frame_index'), table_name='ocr_tokens')
    op.drop_index(op.f('ix_ocr_tokens_model_version_id'), table_name='ocr_tokens')
    op.drop_table('ocr_tokens')
    op.drop_index(op.f('ix_model_version_rounds_round_id'), table_name='model_version_rounds')
    op.drop_table('model_version_rounds')
    op.drop_index(op.f('ix_masklets_video_id_object_id'), table_name='masklets')
    op.drop_index(op.f('ix_masklets_source_model_version_id'), table_name='masklets')
    op.drop_index(op.f('ix_masklets_round_id_status'), table_name='masklets')
    op.drop_table('masklets')
    op.drop_index(op.f('ix_captions_video_id_frame_index'), table_name='captions')
    op.drop_index(op.f('ix_captions_model_version_id'), table_name='captions')
    op.drop_table('captions')
    op.drop_index(op.f('ix_annotation_tasks_video_id'), table_name='annotation_tasks')
    op.drop_index(op.f('ix_annotation_tasks_round_id_status'), table_name='annotation_tasks')
    op.drop_table('annotation_tasks')
    op.drop_table('videos')
    op.drop_index(op.f('ix_annotation_rounds_model_version_id'), table_name='annotation_rounds')
    op.drop_table('annotation_rounds')
    op.drop_index(op.f('ix_pipeline_runs_flow_status'), table_name='pipeline_runs')
    op.drop_table('pipeline_runs')
    op.drop_index(op.f('ix_model_versions_parent_id'), table_name='model_versions')
    op.drop_index(op.f('ix_model_versions_family_stage'), table_name='model_versions')
    op.drop_table('model_versions')
    op.drop_table('datasets')
