# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Params and FLOPs of the LightViT backbones, classifiers, detectors and segmentors.

Prints one Markdown table, counted with mmengine's FlopAnalyzer plus a handle
for ``scaled_dot_product_attention`` (lightvit_mm/complexity.py), next to the
paper's figures, and a note on counting conventions.

Examples:
    python tools/analysis/get_flops.py                       # everything (~2 min on 2 CPU cores)
    python tools/analysis/get_flops.py --tasks classifier    # one task
    python tools/analysis/get_flops.py --no-attention-flops  # mmcv 1.x convention
"""
import argparse
import logging
import os.path as osp
import warnings

import torch
from mmengine.logging import MMLogger

from lightvit_mm import LightViT
from lightvit_mm.analysis.complexity import build_from_config, count_complexity, model_inputs

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))  # the configs' checkout

ARCHS = (('T', 'tiny', 't'), ('S', 'small', 's'), ('B', 'base', 'b'))
#: the paper's (params, FLOPs) per task and variant (PAPER.md)
PAPER = {
    'classifier': {'T': '9.4M / 0.7G', 'S': '19.2M / 1.7G', 'B': '35.2M / 3.9G'},
    'detector': {'T': '28M / 187G', 'S': '38M / 204G', 'B': '54M / 240G'},
}
TASKS = ('backbone', 'classifier', 'detector', 'segmentor')


def rows(tasks, det_size):
    """(task, variant, model name, config or None, input size) to count."""
    for task in tasks:
        for short, name, letter in ARCHS:
            if task == 'backbone':
                yield task, short, f'LightViT-{short} backbone', None, (224, 224)
            elif task == 'classifier':
                yield (task, short, f'LightViT-{short} classifier',
                       f'configs/mmpretrain/lightvit-{name}_8xb128_in1k.py', (224, 224))
            elif task == 'detector':
                yield (task, short, f'Mask R-CNN + LightViT-{short}',
                       f'configs/mmdet/mask-rcnn_lightvit-{letter}_lightvit-fpn_1x_coco.py',
                       det_size)
                if short == 'T':  # the released official T: 512 global tokens
                    yield (task, 'T-512', 'Mask R-CNN + LightViT-T, 512 tokens',
                           'configs/mmdet/mask-rcnn_lightvit-t-tok512_lightvit-fpn_1x_coco.py',
                           det_size)
            else:
                yield (task, short, f'UPerNet + LightViT-{short}',
                       f'configs/mmseg/lightvit-{letter}-in1k-pre_upernet_8xb2-160k_ade20k-'
                       '512x512.py', (512, 512))


def count_row(task, short, config, size, attention):
    """Count one row; returns the complexity dict and a note (or None)."""
    torch.manual_seed(0)
    note = None
    if config is None:
        model = LightViT(arch=short.lower()).eval()
        inputs, kwargs = (torch.rand(1, 3, *size), ), {}
    else:
        model, cfg = build_from_config(osp.join(REPO, config))
        inputs, kwargs = model_inputs(model, cfg.default_scope, size)
    num_rois = []
    if task == 'detector':
        # How many proposals reach the RoI heads (the count depends on it).
        model.roi_head.bbox_roi_extractor.register_forward_hook(
            lambda mod, args, out: num_rois.append(args[1].shape[0]))
    with torch.no_grad():
        stats = count_complexity(model, inputs, attention=attention, **kwargs)
    if num_rois:
        note = (f'{num_rois[0]} RPN proposals through the box head, '
                f'{min(num_rois[0], 100)} through the mask head')
    return stats, note


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tasks', nargs='+', choices=TASKS, default=list(TASKS),
                        help='which rows to count (default: all)')
    parser.add_argument('--no-attention-flops', action='store_true',
                        help='skip the attention matrix products (Q K^T, A V), as '
                        "mmcv 1.x's hook-based counter did for the paper's detection FLOPs")
    parser.add_argument('--det-size', type=int, nargs=2, default=(800, 1280),
                        metavar=('H', 'W'), help='detector input size (default: 800 1280)')
    args = parser.parse_args(argv)
    attention = not args.no_attention_flops
    MMLogger.get_current_instance().setLevel(logging.ERROR)  # builders' INFO lines
    warnings.filterwarnings('ignore')

    flops_header = ('FLOPs (G)' if attention else 'FLOPs w/o attn. (G)')
    lines = [f'| model | input (HxW) | params (M) | {flops_header} | attn. products (G) '
             '| paper params / FLOPs | config |',
             '| --- | --- | ---: | ---: | ---: | --- | --- |']
    notes = []
    for task, short, name, config, size in rows(args.tasks, tuple(args.det_size)):
        stats, note = count_row(task, short, config, size, attention)
        paper = PAPER.get(task, {}).get(short, '-')
        lines.append(f'| {name} | {size[0]}x{size[1]} | {stats["params"] / 1e6:.2f} '
                     f'| {stats["flops"] / 1e9:.2f} | {stats["attention_flops"] / 1e9:.2f} '
                     f'| {paper} | {f"`{config}`" if config else "-"} |')
        if note:
            notes.append(f'{name}: {note}.')
    print('\n'.join(lines))
    print()
    print('Counted with mmengine.analysis.FlopAnalyzer (1 FLOP = 1 multiply-add, as in mmcv '
          '1.x, whose counts the paper reports) plus a handle for '
          'aten::scaled_dot_product_attention '
          '(2 * B * heads * Nq * Nk * d per call), in eval mode, batch 1; params are all '
          'parameters of the built model (segmentors include the auxiliary FCN head). '
          + ('The FLOPs column includes the attention products.' if attention else
             'The FLOPs column leaves the attention products out (--no-attention-flops).'))
    print("Paper's conventions (PAPER.md, 'Counting conventions'): the classification FLOPs "
          'are analytic (mmengine counts 0.78G / 1.84G / 4.13G for the official T / S / B at '
          '224x224); the detection FLOPs were counted at 1280x800 with mmcv 1.x hooks, which '
          'skip the attention matrix products (compare with --no-attention-flops) and every '
          'functional op; mmengine also counts norms, upsampling and pooling. The paper '
          'gives no backbone-only or segmentation figures.')
    for note in notes:
        print(note)


if __name__ == '__main__':
    main()
