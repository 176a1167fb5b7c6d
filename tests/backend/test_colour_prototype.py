"""The `test` model's box filter: scipy's zero-padded uniform filter, and exactly translation-equivariant."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from rsseg.models.colour_prototype.model import ColourPrototypeModel


@pytest.mark.parametrize("radius", [0, 1, 2, 5])
def test_encode_is_a_zero_padded_box_mean(radius):
    batch = np.random.default_rng(radius).random((2, 3, 37, 53), dtype=np.float32)
    model = ColourPrototypeModel(["water", "tree"], "softmax", radius=radius)
    size = (1, 1, 2 * radius + 1, 2 * radius + 1)
    expected = ndimage.uniform_filter(batch.astype(np.float64), size=size, mode="constant")
    out = model.encode(batch)
    assert out.dtype == np.float32 and out.shape == batch.shape
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_a_pixel_s_value_does_not_depend_on_where_the_tile_starts():
    image = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    model = ColourPrototypeModel(["water"], "softmax", radius=2)
    whole, part = model.encode(image), model.encode(image[:, :, 7:50, 11:60])
    assert np.array_equal(whole[:, :, 9:48, 13:58], part[:, :, 2:41, 2:47])  # bit for bit, away from the edges
