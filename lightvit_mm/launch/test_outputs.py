# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Test-time outputs of ``tools/test.py`` (``--out``, ``--show-dir``, ``--tta``)
for mmdet, mmseg and mmpretrain configs, each through the package's own
metrics, hooks and test-time-augmentation models, as the package's own
``tools/test.py`` uses them:

- mmdet: ``--out`` appends ``DumpDetResults`` (a .pkl) to the test metrics;
  ``--show-dir DIR`` turns on ``DetVisualizationHook`` (``DIR/<image name>``);
  ``--tta`` wraps the model in ``DetTTAModel`` (image + flip, boxes only:
  mmdet 3.3 refuses instance masks).
- mmseg: ``--out DIR`` is the ``IoUMetric``'s ``output_dir`` (PNG label maps);
  ``--show-dir DIR`` turns on ``SegVisualizationHook`` with the visualizer
  saving to ``DIR`` (``DIR/vis_data/vis_image/``); ``--tta`` uses the config's
  ``tta_model`` (``SegTTAModel``) and ``tta_pipeline``.
- mmpretrain: ``--out`` appends mmengine's ``DumpResults`` (a .pkl);
  ``--show-dir DIR`` turns on ``VisualizationHook`` (``DIR/<image name>_0.png``);
  ``--tta`` wraps the model in ``AverageClsScoreTTA`` (image + flip).

The functions edit a config before the Runner is built from it; where the
config has no ``tta_model`` / ``tta_pipeline`` they add the packages'
defaults (flip and no flip, merged).
"""
import copy
import os.path as osp

from mmengine.config import Config, ConfigDict

from .data_root import _evaluator_metrics

PACKAGES = ('mmdet', 'mmseg', 'mmpretrain')


def package_of(cfg: Config) -> str:
    """The OpenMMLab package a config runs in, from its ``default_scope``.

    Raises:
        ValueError: the scope is none of mmdet, mmseg, mmpretrain.
    """
    scope = cfg.get('default_scope')
    if scope not in PACKAGES:
        raise ValueError(f'test-time outputs need an mmdet, mmseg or mmpretrain config '
                         f'(default_scope), got default_scope={scope!r}')
    return scope


def dump_predictions(cfg: Config, out: str) -> None:
    """Save the test predictions to ``out``, as the package's own
    ``tools/test.py --out`` does.

    mmdet and mmpretrain: a pickle file (a list with one dict per image:
    boxes, scores, labels and RLE masks, or class scores and labels), written
    by ``DumpDetResults`` / mmengine's ``DumpResults`` appended to the test
    metrics. mmseg: a folder with one PNG label map per image (the
    ``IoUMetric``'s ``output_dir``; the metrics are still computed).

    Raises:
        ValueError: mmdet or mmpretrain with a file name not ending in
            ``.pkl``/``.pickle``; mmseg without an ``IoUMetric`` in
            ``test_evaluator``.
    """
    package = package_of(cfg)
    if package == 'mmseg':
        iou = [m for m in _evaluator_metrics(cfg.test_evaluator)
               if m.get('type') in ('IoUMetric', 'mmseg.IoUMetric')]
        if not iou:
            raise ValueError('--out with an mmseg config needs an IoUMetric in test_evaluator '
                             '(it writes the label maps)')
        for metric in iou:
            metric.update(output_dir=out, keep_results=True)
        return
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out for an {package} config is a pickle file (.pkl or .pickle), '
                         f'got {out!r}')
    dump = dict(type='DumpDetResults' if package == 'mmdet' else 'mmengine.DumpResults',
                out_file_path=out)
    evaluator = cfg.test_evaluator
    if isinstance(evaluator, dict) and 'metrics' in evaluator:  # dict(type='Evaluator', ...)
        evaluator.metrics = [*evaluator.metrics, dump]
    else:
        cfg.test_evaluator = [*evaluator, dump] if isinstance(evaluator, list) \
            else [evaluator, dump]


def draw_predictions(cfg: Config, show_dir: str) -> None:
    """Draw every test image with its predictions into ``show_dir`` through
    the package's visualization hook (``default_hooks.visualization``).

    A relative ``show_dir`` is taken from the current folder for all three
    packages (mmdet's own ``tools/test.py`` puts it under
    ``WORK_DIR/TIMESTAMP/``). mmdet draws every image; the mmseg and
    mmpretrain hooks' ``interval`` is set to 1 (every image). mmseg's
    ``SegVisualizationHook`` reads ``runner.iter``, which builds the train
    dataloader: the config's train split must exist too, as with mmseg's
    own tool.

    Raises:
        KeyError: the config has no ``default_hooks.visualization``.
    """
    package = package_of(cfg)
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise KeyError('--show-dir needs default_hooks.visualization in the config '
                       f'(the {package} visualization hook)')
    show_dir = osp.abspath(show_dir)
    if package == 'mmdet':
        hook.update(draw=True, test_out_dir=show_dir)
    elif package == 'mmseg':
        hook.update(draw=True, interval=1)
        cfg.visualizer.save_dir = show_dir
    else:
        hook.update(enable=True, interval=1, out_dir=show_dir)


def _innermost_dataset(dataloader_cfg: ConfigDict) -> ConfigDict:
    dataset = dataloader_cfg.dataset
    while 'dataset' in dataset:  # wrappers (RepeatDataset, ...)
        dataset = dataset.dataset
    return dataset


def _flip_tta_pipeline(pipeline: list, extra_meta_keys=()) -> list:
    """``pipeline`` whose last transform (the packing) runs on the image and
    its horizontal flip (mmengine's ``TestTimeAug``)."""
    pack = copy.deepcopy(pipeline[-1])
    if 'meta_keys' in pack:
        pack['meta_keys'] = tuple(pack['meta_keys']) + tuple(
            k for k in extra_meta_keys if k not in pack['meta_keys'])
    flips = [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)]
    return [*copy.deepcopy(pipeline[:-1]), dict(type='TestTimeAug', transforms=[flips, [pack]])]


def enable_tta(cfg: Config) -> None:
    """Test with the package's test-time augmentation: the model becomes
    ``cfg.tta_model`` around ``cfg.model`` and the test pipeline
    ``cfg.tta_pipeline``.

    - mmdet: ``DetTTAModel`` (NMS over the merged boxes, IoU 0.5, 100 per
      image) and flip TTA when the config has none, as mmdet's tool does;
    - mmseg: the config's own (mmseg's base configs define them, e.g. six
      scales x flip for ADE20K);
    - mmpretrain: ``AverageClsScoreTTA`` and flip TTA when the config has none.

    Raises:
        ValueError: mmdet with a mask head (mmdet 3.3's ``DetTTAModel``
            merges boxes only and asserts on instance masks); mmseg without
            ``tta_model`` or ``tta_pipeline``; mmpretrain with its
            visualization hook on (mmpretrain 1.2's ``VisualizationHook``
            cannot draw a TTA batch).
    """
    package = package_of(cfg)
    if package == 'mmpretrain' and cfg.get('default_hooks', {}).get(
            'visualization', {}).get('enable'):
        raise ValueError("--tta with --show-dir: mmpretrain 1.2's VisualizationHook cannot "
                         'draw test-time-augmented batches; draw in a run without --tta')
    dataset = _innermost_dataset(cfg.test_dataloader)
    if package == 'mmdet':
        if cfg.model.get('roi_head', {}).get('mask_head') or cfg.model.get('mask_head'):
            raise ValueError(
                "--tta: mmdet 3.3's DetTTAModel merges boxes only and refuses instance "
                'masks; this config has a mask head. Test Mask R-CNN without --tta, '
                'or a box-only detector (e.g. RetinaNet) with it')
        cfg.setdefault('tta_model', dict(
            type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                             max_per_img=100)))
        cfg.setdefault('tta_pipeline', _flip_tta_pipeline(
            dataset.pipeline, extra_meta_keys=('flip', 'flip_direction')))
    elif package == 'mmseg':
        missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
        if missing:
            raise ValueError(f'--tta with an mmseg config needs {" and ".join(missing)} in it '
                             "(mmseg's base configs define them)")
    else:
        cfg.setdefault('tta_model', dict(type='mmpretrain.AverageClsScoreTTA'))
        cfg.setdefault('tta_pipeline', _flip_tta_pipeline(dataset.pipeline))
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset.pipeline = cfg.tta_pipeline
