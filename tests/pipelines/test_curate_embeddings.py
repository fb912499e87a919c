"""SAM 2 image-encoder embeddings (family sam2-encoder) computed with a real (random-init) SAM 2
from real mp4 files, stored in the embeddings table, and published to FiftyOne as fields plus a
brain similarity index."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sqlalchemy import select

from storage.blobs import LocalBlobStore
from storage.schema import Embedding, SubjectKind
from tests.fixtures_fiftyone import make_curation_data

pytestmark = pytest.mark.sam2


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sam2_embeddings_are_stored_and_published(sqlite_url, tmp_path, fo_dataset_name):
    import fiftyone as fo

    from annotation.fiftyone.publish import publish
    from pipelines.curation import SAM2_EMBEDDING_FAMILY, compute_sam2_embeddings
    from storage.db import make_engine
    from tests.models.conftest import make_segmenter, write_random_checkpoint

    engine = make_engine(sqlite_url)
    blobs = LocalBlobStore(tmp_path / "blobs")
    data = make_curation_data(engine, blobs, tmp_path, videos=2, frames=6, embed_dim=4)
    with engine.begin() as conn:  # drop the fixture's random vectors: the encoder's replace them
        conn.execute(Embedding.__table__.delete())
    seg = make_segmenter(write_random_checkpoint(tmp_path / "random.pt"))
    n = compute_sam2_embeddings(engine, blobs, seg, data.dataset,
                                model_version_id=data.model_version_id, keyframe_every=3)
    assert n == 2
    assert compute_sam2_embeddings(engine, blobs, seg, data.dataset,
                                   model_version_id=data.model_version_id) == 0  # idempotent
    with engine.connect() as conn:
        rows = conn.execute(select(Embedding.subject_kind, Embedding.video_id, Embedding.frame_index,
                                   Embedding.masklet_id, Embedding.dim, Embedding.vector)
                            .where(Embedding.family == SAM2_EMBEDDING_FAMILY)).all()
    kinds = [r.subject_kind for r in rows]
    assert kinds.count(SubjectKind.VIDEO) == 2 and kinds.count(SubjectKind.FRAME) == 4
    assert kinds.count(SubjectKind.MASKLET) == sum(len(v) for v in data.masklet_ids.values())
    dim = rows[0].dim
    for r in rows:
        v = np.frombuffer(r.vector, "<f4")
        assert v.size == dim and abs(np.linalg.norm(v) - 1) < 1e-4 and np.isfinite(v).all()

    report = publish(engine, blobs, data.dataset, fo_dataset=fo_dataset_name)
    assert report.embedding_families == [SAM2_EMBEDDING_FAMILY]
    ds = fo.load_dataset(fo_dataset_name)
    assert all(len(e) == dim for e in ds.values("emb_sam2_encoder"))
    index = ds.load_brain_results("sim_sam2_encoder")
    first = ds.first()
    nearest = ds.sort_by_similarity(first.id, k=1, brain_key="sim_sam2_encoder").first()
    assert nearest.id == first.id and index.total_index_size == 2
    engine.dispose()
