# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Draw a detector's or segmentor's predictions on val images into one PNG.

The config's scope picks the package: mmdet (``init_detector`` +
``DetLocalVisualizer``) or mmseg (``init_model`` + ``SegLocalVisualizer``).

Example:
    python tools/demo/visualize_predictions.py CONFIG CHECKPOINT --out preds.png
"""
import argparse
import os
import os.path as osp

import mmcv
import numpy as np
from mmengine.config import Config
from mmengine.registry import VISUALIZERS, init_default_scope

from lightvit_mm.checkpoint.io import safe_mmengine_checkpoints


def load_model(cfg, checkpoint, device):
    """(model, inference function) for the config's package."""
    with safe_mmengine_checkpoints():
        if cfg.default_scope == 'mmdet':
            from mmdet.apis import inference_detector, init_detector
            return init_detector(cfg, checkpoint, device=device), inference_detector
        if cfg.default_scope == 'mmseg':
            from mmseg.apis import inference_model, init_model
            return init_model(cfg, checkpoint, device=device), inference_model
    raise ValueError(f"unsupported default_scope {cfg.default_scope!r}: 'mmdet' or 'mmseg'")


def val_image_dir(cfg) -> str:
    dataset = cfg.val_dataloader.dataset
    prefix = dataset.data_prefix
    return osp.join(dataset.data_root, prefix.get('img', prefix.get('img_path', '')))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--img-dir', help="images to draw on (default: the config's "
                        'val images)')
    parser.add_argument('--num-images', type=int, default=8)
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='lowest detection score drawn (mmdet)')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)

    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.default_scope)
    model, inference = load_model(cfg, args.checkpoint, args.device)
    img_dir = args.img_dir or val_image_dir(cfg)
    names = sorted(os.listdir(img_dir))[:args.num_images]
    if not names:
        raise FileNotFoundError(f'no images in {img_dir}')
    visualizer = VISUALIZERS.build(dict(cfg.visualizer, vis_backends=None,
                                        name=f'visualize_{os.getpid()}'))
    visualizer.dataset_meta = model.dataset_meta
    extra = dict(pred_score_thr=args.score_thr) if cfg.default_scope == 'mmdet' else {}
    tiles = []
    for name in names:
        image = mmcv.imread(osp.join(img_dir, name), channel_order='rgb')
        visualizer.add_datasample(name, image, inference(model, image), draw_gt=False,
                                  show=False, **extra)
        tiles.append(visualizer.get_image())
    rows = [np.concatenate(tiles[i:i + 4], axis=1) for i in range(0, len(tiles), 4)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    mmcv.imwrite(np.concatenate(rows, axis=0)[..., ::-1], args.out)
    print(f'predictions drawn on {len(tiles)} val images: {osp.abspath(args.out)}')


if __name__ == '__main__':
    main()
