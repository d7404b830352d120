# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Convert an official LightViT checkpoint into an OpenMMLab one, and verify it.

``--to mmpretrain`` (default) writes ``{'state_dict': ...}`` for mmpretrain's
``ImageClassifier(LightViT, LightViTClsNeck, LinearClsHead)`` (the
configs/mmpretrain models): ``backbone.*``, ``neck.norm.*``, ``neck.proj.*``,
``head.fc.*``. ``--to backbone`` writes the backbone keys alone, as
``LightViT``'s ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` expects.
The file is written atomically, then loaded back and run against the source
on a random image: the tool fails unless outputs are equal.

Example:
    python tools/model_converters/lightvit_official_to_mm.py \
        lightvit_tiny_78.7.ckpt checkpoints/lightvit-tiny_in1k.pth
"""
import argparse
import os.path as osp

import torch
from mmpretrain.registry import MODELS

import lightvit_mm  # noqa: F401 (registers LightViT and LightViTClsNeck)
from lightvit_mm.checkpoint.io import (
    extract_state_dict,
    load_checkpoint_file,
    save_checkpoint_atomic,
)
from lightvit_mm.models.backbones.lightvit_weights import CLASSIFIER_PARTS, infer_lightvit_arch

#: official classifier module -> the mmpretrain classifier's
#: (``LightViT`` backbone, ``LightViTClsNeck`` neck, ``LinearClsHead`` head)
OFFICIAL_TO_MMPRETRAIN = {'norm.': 'neck.norm.', 'neck.': 'neck.proj.', 'head.': 'head.fc.'}


def official_to_mmpretrain(state_dict):
    """Rename an official LightViT classifier state dict for mmpretrain's
    ``ImageClassifier(LightViT, LightViTClsNeck, LinearClsHead)``: backbone
    keys get ``backbone.``, and ``norm.``/``neck.``/``head.`` become
    ``neck.norm.``/``neck.proj.``/``head.fc.``."""
    converted = {}
    for key, value in state_dict.items():
        prefix = next((p for p in OFFICIAL_TO_MMPRETRAIN if key.startswith(p)), None)
        new_key = (OFFICIAL_TO_MMPRETRAIN[prefix] + key[len(prefix):] if prefix
                   else 'backbone.' + key)
        converted[new_key] = value
    return converted


def build_classifier(info):
    """mmpretrain classifier (or the bare backbone) for an inferred arch."""
    backbone = dict(type='LightViT', arch=info['arch'], window_size=info['window_size'],
                    out_type='raw', out_indices=-1, drop_path_rate=0.)
    if 'num_classes' not in info:
        return MODELS.build(backbone)
    return MODELS.build(dict(
        type='ImageClassifier', backbone=backbone,
        neck=dict(type='LightViTClsNeck', in_channels=info['arch']['embed_dims'][-1],
                  out_channels=info['neck_dims']),
        head=dict(type='LinearClsHead', num_classes=info['num_classes'],
                  in_channels=info['neck_dims'])))


def convert(state_dict, target):
    if target == 'mmpretrain':
        if 'head.weight' not in state_dict:
            raise ValueError('--to mmpretrain needs a classification checkpoint (with '
                             'head.weight); use --to backbone for a backbone-only one')
        return official_to_mmpretrain(state_dict)
    return {k: v for k, v in state_dict.items() if k.split('.')[0] not in CLASSIFIER_PARTS}


def verify(source_state, dst, target):
    """Outputs of a model loaded from the written file equal the source's."""
    info = infer_lightvit_arch(source_state)
    if target == 'backbone':
        info.pop('num_classes', None)
    reference = build_classifier(info).eval()
    if target == 'mmpretrain':
        reference.load_state_dict(official_to_mmpretrain(source_state), strict=True)
    else:
        reference.load_state_dict(convert(source_state, 'backbone'), strict=True)
    converted = build_classifier(info).eval()
    converted.load_state_dict(load_checkpoint_file(dst)['state_dict'], strict=True)
    image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [m(image) if target == 'backbone' else m(image, mode='tensor')
                for m in (reference, converted)]
    for a, b in zip(*[o if isinstance(o, tuple) else (o, ) for o in outs]):
        if not torch.equal(a, b):
            raise RuntimeError(f'{dst} does not reproduce the source: max difference '
                               f'{(a - b).abs().max().item():.3g}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official checkpoint (any released format)')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--to', choices=['mmpretrain', 'backbone'], default='mmpretrain')
    parser.add_argument('--checkpoint-key', choices=['model', 'ema_model'], default='model',
                        help="which weights of a training checkpoint {'model', 'ema_model', ...}")
    parser.add_argument('--force', action='store_true', help='overwrite DST')
    args = parser.parse_args(argv)
    if osp.exists(args.dst) and not args.force:
        parser.error(f'{args.dst} exists; pass --force to overwrite it')
    state_dict, source = extract_state_dict(load_checkpoint_file(args.src), args.checkpoint_key)
    state_dict = {k: v for k, v in state_dict.items() if torch.is_tensor(v)}
    save_checkpoint_atomic(dict(state_dict=convert(state_dict, args.to),
                     meta=dict(source=osp.basename(args.src), converted_to=args.to)), args.dst)
    verify(state_dict, args.dst, args.to)
    print(f'converted {len(state_dict)} tensors from {args.src} ({source}) to '
          f'{args.dst} for {args.to}; outputs verified equal')


if __name__ == '__main__':
    main()
