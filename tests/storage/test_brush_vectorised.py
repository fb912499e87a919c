"""storage.masks.mask_to_brush (numpy) writes exactly the bytes of the SDK's mask2rle."""
from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter.brush import mask2rle

from storage.masks import brush_to_mask, mask_to_brush


def _sdk(mask: np.ndarray) -> list[int]:
    return [int(v) for v in mask2rle(mask.astype(np.uint8) * np.uint8(255))]


EDGE_CASES = [
    np.zeros((1, 1), bool), np.ones((1, 1), bool), np.zeros((5, 7), bool), np.ones((5, 7), bool),
    np.ones((128, 128), bool),  # one run of 65,536 bytes: exactly one 16-bit piece
    np.ones((64, 257), bool),  # 65,792 bytes: a full piece and a short remainder
    np.ones((300, 300), bool),  # several pieces
    np.zeros((256, 257), bool),
]


@pytest.mark.parametrize("mask", EDGE_CASES, ids=lambda m: f"{m.shape}-{int(m.any())}")
def test_edge_cases_match_the_sdk(mask):
    assert mask_to_brush(mask) == _sdk(mask)


@pytest.mark.parametrize("density", [0.001, 0.02, 0.3, 0.5, 0.97, 0.9995])
def test_random_masks_match_the_sdk_byte_for_byte(density):
    rng = np.random.default_rng(int(density * 10000))
    for _ in range(6):
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        m = rng.random((h, w)) < density
        # runs of every length class: single pixels, short, medium and long runs
        if h * w > 40:
            r = int(rng.integers(0, h))
            m[r, : int(rng.integers(1, w + 1))] = rng.random() < 0.5
        got = mask_to_brush(m)
        assert got == _sdk(m)
        assert (brush_to_mask(got, h, w) == m).all()


def test_rectangles_and_sizes_are_checked():
    m = np.zeros((48, 64), bool)
    m[10:30, 5:60] = True
    assert mask_to_brush(m, expected_size=(48, 64)) == _sdk(m)
    with pytest.raises(ValueError):
        mask_to_brush(m, expected_size=(64, 48))
