# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Draw a detector's predictions on val images into one PNG (mmdet's visualizer).

Example:
    python tools/analysis/visualize_det.py CONFIG CHECKPOINT --out preds.png
"""
import argparse
import os
import os.path as osp

import mmcv
import numpy as np
from mmdet.apis import inference_detector, init_detector
from mmdet.registry import VISUALIZERS
from mmengine.config import Config

from lightvit_mm.checkpoint import safe_mmengine_checkpoints


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--img-dir', help="images to draw on (default: the config's "
                        'val images)')
    parser.add_argument('--num-images', type=int, default=8)
    parser.add_argument('--score-thr', type=float, default=0.5)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)

    cfg = Config.fromfile(args.config)
    with safe_mmengine_checkpoints():
        model = init_detector(cfg, args.checkpoint, device=args.device)
    dataset = cfg.val_dataloader.dataset
    img_dir = args.img_dir or osp.join(dataset.data_root, dataset.data_prefix.img)
    names = sorted(os.listdir(img_dir))[:args.num_images]
    if not names:
        raise FileNotFoundError(f'no images in {img_dir}')
    visualizer = VISUALIZERS.build(dict(model.cfg.visualizer, vis_backends=None))
    visualizer.dataset_meta = model.dataset_meta
    tiles = []
    for name in names:
        image = mmcv.imread(osp.join(img_dir, name), channel_order='rgb')
        visualizer.add_datasample(name, image, inference_detector(model, image),
                                  draw_gt=False, show=False, pred_score_thr=args.score_thr)
        tiles.append(visualizer.get_image())
    rows = [np.concatenate(tiles[i:i + 4], axis=1) for i in range(0, len(tiles), 4)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    mmcv.imwrite(np.concatenate(rows, axis=0)[..., ::-1], args.out)
    print(f'predictions drawn on {len(tiles)} val images: {osp.abspath(args.out)}')


if __name__ == '__main__':
    main()
