"""The digits pipeline (tools/demo/digits_pipeline.py) at a tiny budget."""
import os.path as osp

import torch
from conftest import REPO, build_model, load_tool
from mmengine.config import Config


def build_pretrained_backbone(config, checkpoint):
    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    model = build_model(cfg)
    model.init_weights()
    return model.backbone


def test_pipeline_runs_and_pretrained_weights_reach_both_tasks(tmp_path):
    # In this process; each stage still trains in a process of its own (the
    # tool raises with the end of a failed stage's log).
    load_tool('tools/demo/digits_pipeline.py').main(
        ['--cls-iters', '2', '--det-iters', '2', '--seg-iters', '2', '--num-canvases', '8', '4',
         '--num-cls-images', '20', '10', '--data-dir', str(tmp_path / 'data'),
         '--work-dir', str(tmp_path / 'work'), '--report-dir', str(tmp_path / 'report')])
    report = (tmp_path / 'report' / 'README.md').read_text()
    assert '| detection (mmdet Mask R-CNN) | val bbox mAP |' in report
    for picture in ('det_predictions.png', 'seg_predictions.png', 'curves.png'):
        assert (tmp_path / 'report' / picture).stat().st_size > 1000
    checkpoint = str(tmp_path / 'work' / 'cls' / 'iter_2.pth')
    pretrained = torch.load(checkpoint, weights_only=False)['state_dict']
    for config in ('configs/mmdet/digits/mask-rcnn_lightvit-t-digits-pre_lightvit-fpn_digits.py',
                   'configs/mmseg/digits/lightvit-t-digits-pre_upernet_digits.py'):
        backbone = build_pretrained_backbone(config, checkpoint)
        state = backbone.state_dict()
        keys = [k for k in pretrained if k.startswith('backbone.')]
        assert len(keys) == len(state) - 6  # all but the detection output norms
        for key in keys:
            assert torch.equal(state[key[len('backbone.'):]], pretrained[key]), (config, key)
