# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""The four RandAugment operations of the official LightViT ImageNet recipe
that mmpretrain lacks: :class:`Zoom`, :class:`Blur`, :class:`Skew` and
:class:`Distort`.

The official recipe (github.com/hunto/image_classification_sota at 36539b6,
``lib/dataset/augment_ops.py``: ``_RAND_TRANSFORMS`` at lines 18-38, the ops
at lines 280-424, their magnitude mappings at lines 260-277) draws from 19
operations; the other 15 are mmpretrain's own transforms (see
``configs/mmpretrain/lightvit-tiny_8xb128_in1k.py``). Each op here is an
mmpretrain ``BaseAugTransform``, so it takes part in ``RandAugment``'s
magnitude level, ``magnitude_std`` noise and per-op probability, and it runs
the same Pillow operation as the official one (bicubic resampling, black
outside the image), on the image as it is (channel order does not matter to
these ops). Registered in mmpretrain's ``TRANSFORMS`` by ``import lightvit_mm``.

Shapes: ``results['img']`` is (H, W, C) or (H, W) uint8 and keeps its shape.
"""
import math
from typing import List, Optional, Tuple

import numpy as np
from mmpretrain.datasets.transforms.auto_augment import BaseAugTransform
from PIL import Image, ImageFilter


class _PillowAugTransform(BaseAugTransform):
    """A RandAugment op on a Pillow image with one magnitude argument.

    Args:
        magnitude (float, optional): The op's argument itself (e.g. the zoom
            factor). None: made from ``magnitude_range`` and the level.
        prob (float): Probability of applying the op. Defaults to 0.5 (the
            official ``AutoAugmentOp`` prob, ``augment_ops.py:525``).
        random_negative_prob (float): Probability of negating the argument.
        **kwargs: ``magnitude_level``, ``magnitude_range``, ``magnitude_std``,
            ``total_level`` of mmpretrain's ``BaseAugTransform``.

    Raises:
        ValueError: both or neither of ``magnitude`` and ``magnitude_range``.
    """

    def __init__(self, magnitude: Optional[float] = None, prob: float = 0.5,
                 random_negative_prob: float = 0., **kwargs):
        super().__init__(prob=prob, random_negative_prob=random_negative_prob, **kwargs)
        if (magnitude is None) == (self.magnitude_range is None):
            raise ValueError(f'{type(self).__name__}: give exactly one of magnitude '
                             f'({magnitude}) and magnitude_range ({self.magnitude_range})')
        self.magnitude = magnitude

    def apply(self, img: Image.Image, value: float) -> Image.Image:
        raise NotImplementedError

    def transform(self, results: dict) -> dict:
        if self.random_disable():
            return results
        value = self.magnitude if self.magnitude is not None else self.random_magnitude()
        value = self.random_negative(value)
        img = results['img']
        out = np.asarray(self.apply(Image.fromarray(np.ascontiguousarray(img)), value))
        results['img'] = out.reshape(img.shape).astype(img.dtype)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(magnitude={self.magnitude}, prob={self.prob}, '
                f'random_negative_prob={self.random_negative_prob}{self.extra_repr()})')


class Zoom(_PillowAugTransform):
    """Zoom about the centre by ``factor``: the image is resized (bicubic) to
    ``round(factor * size)`` and cropped or padded with black to its own size
    around the centre (official ``zoom``, ``augment_ops.py:362-373``). The
    official recipe maps level m to ``factor = 0.4 * m / 10``
    (``magnitude_range=(0, 0.4)``, ``augment_ops.py:264-265``): at m = 9 the
    image shrinks to 36 % inside a black border. Factors that would give an
    empty image are raised to one pixel.

    Args: see :class:`_PillowAugTransform`; the magnitude is the factor.
    """

    def apply(self, img, value):
        w, h = img.size
        zoomed = img.resize((max(1, int(round(w * value))), max(1, int(round(h * value)))),
                            resample=Image.BICUBIC)
        zw, zh = zoomed.size
        left, top = math.floor(zw / 2 - w / 2), math.floor(zh / 2 - h / 2)
        return zoomed.crop((left, top, left + w, top + h))


class Blur(_PillowAugTransform):
    """Gaussian blur with radius ``value`` (Pillow's ``GaussianBlur``;
    official ``blur``, ``augment_ops.py:421-423``). The official recipe maps
    level m to ``0.5 * m / 10``, negated with probability 0.5
    (``magnitude_range=(0, 0.5)``, ``random_negative_prob=0.5``,
    ``augment_ops.py:268-271``); Pillow blurs a negative radius as the
    positive one.

    Args: see :class:`_PillowAugTransform`; the magnitude is the radius (px).
    """

    def __init__(self, magnitude=None, prob=0.5, random_negative_prob=0.5, **kwargs):
        super().__init__(magnitude, prob, random_negative_prob, **kwargs)

    def apply(self, img, value):
        return img.filter(ImageFilter.GaussianBlur(value))


class Skew(_PillowAugTransform):
    """Perspective skew (official ``skew``, ``augment_ops.py:392-418``): with
    ``s = ceil(max(W, H) * value)`` the image corners go to (-s, 0), (W, -s),
    (W + s, H), (0, H + s) (bicubic, black outside). The official recipe maps
    level m to ``0.3 * m / 10``, negated with probability 0.5
    (``magnitude_range=(0, 0.3)``, ``random_negative_prob=0.5``,
    ``augment_ops.py:274-277``).

    Args: see :class:`_PillowAugTransform`; the magnitude is the skew as a
        fraction of the longer side.
    """

    def __init__(self, magnitude=None, prob=0.5, random_negative_prob=0.5, **kwargs):
        super().__init__(magnitude, prob, random_negative_prob, **kwargs)

    @staticmethod
    def coefficients(size: Tuple[int, int], value: float) -> List[float]:
        """Pillow ``PERSPECTIVE`` data (a, b, c, d, e, f, g, h) mapping output
        (x, y) to input ((a x + b y + c) / (g x + h y + 1), (d x + e y + f) /
        (g x + h y + 1)) that sends the skewed corners to the image corners."""
        w, h = size
        s = int(math.ceil(max(w, h) * value))
        corners = [(0, 0), (w, 0), (w, h), (0, h)]
        skewed = [(-s, 0), (w, -s), (w + s, h), (0, h + s)]
        rows, rhs = [], []
        for (x, y), (u, v) in zip(skewed, corners):
            rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
            rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
            rhs += [u, v]
        # the pseudo-inverse, as the official code: np.linalg.solve differs in the
        # last bits, enough to move a border pixel's centre across the image edge.
        # So do OpenBLAS's kernels (Haswell vs SkylakeX: 36 of 576 pixels of a 24x24
        # image at -0.27, on the border or a rounding tie), for the official op too.
        return (np.linalg.pinv(np.array(rows, float)) @ np.array(rhs, float)).tolist()

    def apply(self, img, value):
        return img.transform(img.size, Image.PERSPECTIVE, self.coefficients(img.size, value),
                             resample=Image.BICUBIC)


class Distort(_PillowAugTransform):
    """Grid distortion (official ``distort``, ``augment_ops.py:280-359``):
    the image is cut into ``n x n`` tiles, ``n = int(v / 10)`` with
    ``v = int(value)`` (the last row and column take the remainder), every
    inner grid vertex is sampled from ``v`` px further right and down, and
    each tile is warped onto its box (Pillow ``MESH``, bicubic). The
    official recipe maps level m to ``m + 10`` (``magnitude_range=(10, 20)``,
    ``augment_ops.py:260-261``): below m = 10 there is one tile and no inner
    vertex, so the op returns the image unchanged; ``magnitude_std`` noise
    takes m past 10 now and then.

    Args: see :class:`_PillowAugTransform`; the magnitude is ``v`` (px).
    """

    @staticmethod
    def mesh(size: Tuple[int, int], value: float) -> list:
        """Pillow ``MESH`` data: (box, source quad UL, LL, LR, UR) per tile."""
        w, h = size
        shift = int(value)
        tiles = int(0.1 * shift)
        if tiles < 1:
            raise ValueError(f'Distort needs a magnitude of at least 10 px, got {value}')
        xs = [i * (w // tiles) for i in range(tiles)] + [w]
        ys = [j * (h // tiles) for j in range(tiles)] + [h]

        def source(i, j):  # grid vertex (column i, row j), inner ones shifted
            inner = 0 < i < tiles and 0 < j < tiles
            return (xs[i] + shift, ys[j] + shift) if inner else (xs[i], ys[j])

        return [((xs[i], ys[j], xs[i + 1], ys[j + 1]),
                 (*source(i, j), *source(i, j + 1), *source(i + 1, j + 1), *source(i + 1, j)))
                for j in range(tiles) for i in range(tiles)]

    def apply(self, img, value):
        return img.transform(img.size, Image.MESH, self.mesh(img.size, value),
                             resample=Image.BICUBIC)


#: the ops registered in mmpretrain's TRANSFORMS by :mod:`lightvit_mm.registration`
OFFICIAL_EXTRA_OPS = [Zoom, Blur, Skew, Distort]
