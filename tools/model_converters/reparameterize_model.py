# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Convert a trained checkpoint for a deploy config (mmpretrain's
``reparameterize_model`` for RepVGG-style backbones).

Builds the model of CONFIG (its backbone's ``init_cfg`` dropped: nothing is
downloaded), loads CHECKPOINT into it strictly, calls the backbone's
``switch_to_deploy()`` (for LightViT: the stem's BatchNorms folded into their
convolutions, every block's relative position bias computed once) and writes
``{'state_dict': ..., 'meta': ...}`` atomically to OUT. OUT loads strictly
into the same config with ``model.backbone.deploy=True``, e.g.
configs/mmdet/digits/mask-rcnn_lightvit-t-deploy_lightvit-fpn_digits.py.
``meta.dataset_meta`` (class names, palette) is kept.

Example:
    python tools/model_converters/reparameterize_model.py \
        configs/mmdet/digits/mask-rcnn_lightvit-t_lightvit-fpn_digits.py \
        work_dirs/digits_demo/iter_600.pth checkpoints/digits_deploy.pth
    python tools/test.py \
        configs/mmdet/digits/mask-rcnn_lightvit-t-deploy_lightvit-fpn_digits.py \
        checkpoints/digits_deploy.pth
"""
import argparse
import os.path as osp

from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

import lightvit_mm  # noqa: F401 (registers LightViT in every package's MODELS)
from lightvit_mm.checkpoint.io import (
    extract_state_dict,
    load_checkpoint_file,
    save_checkpoint_atomic,
    strip_prefixes,
)


def reparameterize(config: str, checkpoint: str, out: str) -> None:
    """Write the deploy-mode weights of ``checkpoint`` (a checkpoint of the
    model of ``config``) to ``out``.

    Raises:
        RuntimeError: a key or shape of ``checkpoint`` does not match the
            model (torch's strict ``load_state_dict``).
        TypeError: the config's backbone has no ``switch_to_deploy``.
    """
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)
    raw = load_checkpoint_file(checkpoint)
    state_dict, _ = extract_state_dict(raw)
    model.load_state_dict(strip_prefixes(state_dict, prefix=''), strict=True)
    if not hasattr(model.backbone, 'switch_to_deploy'):
        raise TypeError(f'the backbone of {config} ({type(model.backbone).__name__}) has no '
                        'switch_to_deploy()')
    model.eval()
    model.backbone.switch_to_deploy()
    meta = {k: v for k, v in raw.get('meta', {}).items() if k == 'dataset_meta'}
    save_checkpoint_atomic(dict(state_dict=model.state_dict(),
                                meta=dict(meta, source=osp.basename(checkpoint),
                                          converted_to='deploy')), out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config of the trained model')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('out', help='output file, for the config with backbone.deploy=True')
    parser.add_argument('--force', action='store_true', help='overwrite OUT')
    args = parser.parse_args(argv)
    if osp.exists(args.out) and not args.force:
        parser.error(f'{args.out} exists; pass --force to overwrite it')
    reparameterize(args.config, args.checkpoint, args.out)
    print(f'wrote the deploy-mode weights of {args.checkpoint} to {args.out}')


if __name__ == '__main__':
    main()
