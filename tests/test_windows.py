"""The pure sliding-window tiler and the strip blender (no files, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.windows import StripBlender, WindowGrid, blend_weights, window_starts, window_stride


@pytest.mark.parametrize("length", [1, 63, 64, 65, 100, 127, 128, 200, 1000, 1031])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_windows_cover_every_pixel_and_stay_inside(length: int, overlap: float) -> None:
    tile = 64
    stride = window_stride(tile, overlap)
    starts = window_starts(length, tile, stride)
    covered = np.zeros(length, dtype=int)
    for s in starts:
        covered[s:s + tile] += 1
    assert covered.min() >= 1
    assert starts[0] == 0
    if length >= tile:
        # Shifted inward, never padded: the last window ends exactly on the edge.
        assert starts[-1] == length - tile
        assert all(0 <= s <= length - tile for s in starts)
    else:
        assert starts == (0,)
    assert list(starts) == sorted(set(starts))
    # Steps never exceed the stride, so the requested overlap is a minimum.
    assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def test_stride_from_overlap() -> None:
    assert window_stride(256, 0.25) == 192
    assert window_stride(256, 0.0) == 256
    assert window_stride(4, 0.9) == 1
    with pytest.raises(ValueError):
        window_stride(256, 1.0)


def test_blend_weight_is_smooth_symmetric_and_floored() -> None:
    w = blend_weights(64, floor=0.001)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert 0.0 < w.min() < 0.002  # corners: floor, never zero
    assert w[31:33, 31:33].min() > 0.99  # centre: full weight
    assert np.abs(np.diff(w, axis=0)).max() < 0.1  # no jumps: blends without seams


def test_sides_on_the_raster_edge_are_not_tapered() -> None:
    w = blend_weights(64, open_sides=(True, False, False, True))  # top and right on the edge
    assert w[0, 63] == pytest.approx(1.0) and w[0, 32] == pytest.approx(1.0)
    assert w[63, 0] < 1e-5 and w[63, 63] < 0.01


def _blend_whole(height: int, width: int, tile: int, overlap: float, field: np.ndarray) -> tuple[np.ndarray, int]:
    """Run the strip blender over a raster where every window 'predicts' the field itself."""
    grid = WindowGrid(height, width, tile, overlap)
    blender = StripBlender(grid)
    out = np.full((height, width), np.nan, dtype=np.float32)
    rows_written = 0
    for strip, windows in grid.strips():
        for w in windows:
            pred = np.zeros((tile, tile), dtype=np.float32)
            pred[:w.height, :w.width] = field[w.row:w.row + w.height, w.col:w.col + w.width]
            blender.add(w, pred)
        first, rows = blender.finish(strip)
        assert np.isnan(out[first:first + rows.shape[0]]).all(), "a row was written twice"
        out[first:first + rows.shape[0]] = rows
        rows_written += rows.shape[0]
    return out, rows_written


@pytest.mark.parametrize("shape", [(300, 257), (64, 64), (40, 90), (129, 500)])
def test_strip_blender_reproduces_consistent_predictions(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    field = rng.random(shape, dtype=np.float32)
    out, rows = _blend_whole(*shape, tile=64, overlap=0.25, field=field)
    assert rows == shape[0]
    # Weights are normalised: windows that agree blend to exactly their common value.
    np.testing.assert_allclose(out, field, atol=1e-5)


def test_strip_blender_suppresses_border_errors() -> None:
    """Windows whose borders are wrong (as with zero padding) blend to nearly the true value."""
    height, width, tile = 256, 256, 64
    truth = np.full((height, width), 0.5, dtype=np.float32)
    grid = WindowGrid(height, width, tile, 0.5)
    blender = StripBlender(grid)
    out = np.zeros_like(truth)
    for strip, windows in grid.strips():
        for w in windows:
            pred = np.full((tile, tile), 0.5, dtype=np.float32)
            pred[:4, :] = pred[-4:, :] = pred[:, :4] = pred[:, -4:] = 1.0  # a 4-px wrong border
            blender.add(w, pred)
        first, rows = blender.finish(strip)
        out[first:first + rows.shape[0]] = rows
    inner = out[4:-4, 4:-4]  # raster edges have no second window to correct them
    naive_error = 0.5
    assert np.abs(inner - truth[4:-4, 4:-4]).max() < 0.05 * naive_error * 2


def test_blender_memory_is_a_strip_not_the_raster() -> None:
    grid = WindowGrid(100_000, 1000, 256, 0.25)
    blender = StripBlender(grid)
    assert blender._sums.shape == (256, 1000)
