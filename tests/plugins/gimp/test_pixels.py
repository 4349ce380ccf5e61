from __future__ import annotations

import pytest
from img2img_gimp.pixels import mask_runs


def test_mask_runs_are_the_selected_spans_of_each_row() -> None:
    mask = bytes([0, 1, 255, 0, 9, 0, 0, 0, 255, 255, 255, 255])
    assert mask_runs(mask, 4) == [(0, 1, 3), (1, 0, 1), (2, 0, 4)]
    assert mask_runs(bytes(8), 4) == []


def test_mask_size_must_match() -> None:
    with pytest.raises(ValueError):
        mask_runs(b"\0" * 7, 4)
