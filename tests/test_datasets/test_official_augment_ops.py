"""The official RandAugment ops that mmpretrain lacks (Zoom, Blur, Skew,
Distort in lightvit_mm.datasets.transforms) against the outputs of the official
functions (image_classification_sota@36539b6 lib/dataset/augment_ops.py), run
once on image() and stored in tests/data/official_augment_ops.json."""
import base64
import json
import os.path as osp

import numpy as np
import pytest
from mmpretrain.registry import TRANSFORMS
from PIL import Image

import lightvit_mm  # noqa: F401  (registers the ops in mmpretrain's TRANSFORMS)
from lightvit_mm.datasets.transforms import Distort, Skew

DATA = osp.join(osp.dirname(osp.dirname(__file__)), 'data', 'official_augment_ops.json')
with open(DATA) as f:
    REFERENCE = json.load(f)
#: op -> (magnitude_range, random_negative_prob giving a positive value): the
#: official level -> value mappings (augment_ops.py:260-277)
OFFICIAL_RANGES = {'Zoom': (0, 0.4), 'Blur': (0, 0.5), 'Skew': (0, 0.3), 'Distort': (10, 20)}


def image():
    """The 24x24 RGB input of the stored official outputs."""
    y, x = np.mgrid[0:24, 0:24]
    chans = [40 + 8 * x + 3 * y, 200 - 5 * y + 2 * x, 90 + 60 * ((x // 4 + y // 4) % 2)]
    return np.stack(chans, -1).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize('case', REFERENCE['cases'],
                         ids=lambda c: f"{c['op']}-m{c['level']}-{c['value']}")
def test_same_output_as_the_official_op(case):
    expected = np.frombuffer(base64.b64decode(case['uint8_b64']), np.uint8)
    expected = expected.reshape(case['shape'])
    # Built as RandAugment builds its policies: level, range, no noise, always on;
    # the sign is forced to the stored one.
    op = TRANSFORMS.build(dict(
        type=case['op'], magnitude_range=OFFICIAL_RANGES[case['op']],
        magnitude_level=case['level'], magnitude_std=0., prob=1.,
        random_negative_prob=1. if case['value'] < 0 else 0.))
    out = op(dict(img=image()))['img']
    assert out.shape == expected.shape and out.dtype == np.uint8
    if case['op'] == 'Skew':
        # Where a pixel's source point lies on the image border or its bicubic value
        # on a rounding tie, the official op's output (and ours) depends on the last
        # bits of np.linalg.pinv, which differ between OpenBLAS kernels: those pixels
        # must match the output with the source point on one side or the other.
        moved = skew_with_source_points_moved(case['value'])
        ill_conditioned = (moved != moved[:1]).any(axis=(0, 3))
        assert ill_conditioned.sum() <= 0.2 * ill_conditioned.size
        assert (moved[:, ill_conditioned] == expected[ill_conditioned]).all(-1).any(0).all()
        out, expected = out[~ill_conditioned], expected[~ill_conditioned]
    np.testing.assert_array_equal(out, expected)


def skew_with_source_points_moved(value, shift=1e-9):
    """Skew of image() with every source point moved by 0, -shift or +shift px in
    x and in y (9, 24, 24, 3). The outputs differ only at ill-conditioned pixels:
    at -0.27 the exact source points fall on a 0.1 px grid, and 104 of the 576
    pixels lie on the border or a rounding tie (OpenBLAS's Haswell and SkylakeX
    kernels give 36 of them different values, for the official op as for ours)."""
    img = Image.fromarray(image())
    a, b, c, d, e, f, g, h = Skew.coefficients(img.size, value)
    return np.stack([
        np.asarray(img.transform(img.size, Image.PERSPECTIVE,
                                 (a, b, c + dx, d, e, f + dy, g, h), resample=Image.BICUBIC))
        for dx in (0., -shift, shift) for dy in (0., -shift, shift)])


def test_distort_below_level_10_is_the_identity_and_above_moves_inner_vertices():
    img = image()
    same = Distort(magnitude=19, prob=1.)(dict(img=img.copy()))['img']
    np.testing.assert_array_equal(same, img)
    mesh = Distort.mesh((24, 24), 20)
    assert len(mesh) == 4  # 2 x 2 tiles
    box, quad = mesh[0]
    assert box == (0, 0, 12, 12) and quad[4:6] == (32, 32)  # its LR vertex moved by 20 px


def test_skew_sends_the_skewed_corners_to_the_image_corners():
    a, b, c, d, e, f, g, h = Skew.coefficients((24, 24), 0.27)
    s = 7  # ceil(24 * 0.27)
    for (x, y), (u, v) in zip([(-s, 0), (24, -s), (24 + s, 24), (0, 24 + s)],
                              [(0, 0), (24, 0), (24, 24), (0, 24)]):
        den = g * x + h * y + 1
        assert (a * x + b * y + c) / den == pytest.approx(u, abs=1e-9)
        assert (d * x + e * y + f) / den == pytest.approx(v, abs=1e-9)


def test_ops_keep_grey_images_and_refuse_two_magnitudes():
    grey = image()[..., 0]
    for name in OFFICIAL_RANGES:
        out = TRANSFORMS.build(dict(type=name, magnitude_range=OFFICIAL_RANGES[name],
                                    magnitude_level=10, prob=1.))(dict(img=grey.copy()))
        assert out['img'].shape == grey.shape
    with pytest.raises(ValueError, match='exactly one of magnitude'):
        Skew(magnitude=0.1, magnitude_range=(0, 0.3))
    with pytest.raises(ValueError, match='exactly one of magnitude'):
        Skew()
