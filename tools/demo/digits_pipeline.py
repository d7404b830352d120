# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""The paper's pipeline on the digits, on CPU: pretrain, then detect and segment.

1. Pretrain LightViT-T as a classifier in mmpretrain on one-digit images.
2. Train Mask R-CNN (mmdet) and UPerNet (mmseg) on the digit canvases twice
   each, at the same budget: from scratch, and from the pretrained backbone
   (``init_cfg=dict(type='Pretrained', prefix='backbone.')``, as from ImageNet).
3. Write ``REPORT_DIR/README.md``: the results table (top-1, bbox/segm mAP,
   mIoU, with and without pretraining, wall time of each stage, the machine),
   pictures of predictions on val images, and loss/metric curves plotted from
   mmengine's scalar logs.

Every stage runs ``tools/train.py`` in a subprocess with the repository's
configs; each stage's budget is one option.

Example:
    python tools/demo/digits_pipeline.py --cls-iters 1800 --det-iters 150 --seg-iters 300
"""
import argparse
import glob
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'cls': 'configs/mmpretrain/digits/lightvit-tiny_digits.py',
    'det-scratch': 'configs/mmdet/digits/mask-rcnn_lightvit-t_lightvit-fpn_digits.py',
    'det-pre': 'configs/mmdet/digits/mask-rcnn_lightvit-t-digits-pre_lightvit-fpn_digits.py',
    'seg-scratch': 'configs/mmseg/digits/lightvit-t_upernet_digits.py',
    'seg-pre': 'configs/mmseg/digits/lightvit-t-digits-pre_upernet_digits.py',
}
METRICS = {'cls': ['accuracy/top1'], 'det': ['coco/bbox_mAP', 'coco/segm_mAP'],
           'seg': ['mIoU']}


def budget_options(iters):
    """--cfg-options that set a stage's iterations, validation (3 times),
    checkpoint (at the end) and LR schedule (warm-up, then cosine)."""
    warmup = max(1, min(50, iters // 5))
    return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={max(1, iters // 3)}',
            f'default_hooks.checkpoint.interval={iters}', f'param_scheduler.0.end={warmup}',
            f'param_scheduler.1.begin={warmup}', f'param_scheduler.1.end={iters}']


def data_root(stage, data_dir):
    """The stage's data folder, for ``tools/train.py --data-root``."""
    return osp.join(data_dir, 'digits_cls' if stage == 'cls' else 'digits') + '/'


def read_scalars(work_dir):
    """Train and val records of mmengine's ``vis_data/scalars.json``; each val
    record's ``step`` is set to the training iteration it follows (a logger
    with ``log_metric_by_epoch=True`` writes the epoch, 0 in iteration loops)."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}')
    train, val = [], []
    with open(files[-1]) as f:
        for record in (json.loads(line) for line in f if line.strip()):
            if 'loss' in record:
                train.append(record)
            elif 'lr' not in record:
                val.append(dict(record, step=train[-1]['step'] if train else 0))
    return train, val


def run_stage(stage, work_dir, iters, data_dir, checkpoint=None):
    """Train one stage; return its wall time (s), last metrics and scalars."""
    stage_dir = osp.join(work_dir, stage)
    options = budget_options(iters)
    if checkpoint:
        options.append(f'model.backbone.init_cfg.checkpoint={checkpoint}')
    command = [sys.executable, osp.join(REPO, 'tools/train.py'), osp.join(REPO, CONFIGS[stage]),
               '--work-dir', stage_dir, '--data-root', data_root(stage, data_dir),
               '--cfg-options', *options]
    os.makedirs(stage_dir, exist_ok=True)
    log_file = osp.join(work_dir, f'{stage}.log')
    print(f'[{stage}] {iters} iterations, log: {log_file}', flush=True)
    start = time.time()
    with open(log_file, 'w') as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.time() - start
    if code:
        with open(log_file) as log:
            tail = ''.join(log.readlines()[-30:])
        raise RuntimeError(f'stage {stage} failed (exit {code}); end of {log_file}:\n{tail}')
    train, val = read_scalars(stage_dir)
    metrics = {k: val[-1][k] for k in METRICS[stage.split('-')[0]]}
    print(f'[{stage}] done in {seconds:.0f} s: {metrics}', flush=True)
    return dict(seconds=seconds, metrics=metrics, train=train, val=val,
                checkpoint=osp.join(stage_dir, f'iter_{iters}.pth'))


def plot_curves(results, out_file):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for col, task in enumerate(('cls', 'det', 'seg')):
        for stage, res in results.items():
            if stage.split('-')[0] != task:
                continue
            label = {'cls': 'pretraining', 'scratch': 'from scratch',
                     'pre': 'digits-pretrained'}[stage.split('-')[-1]]
            axes[0, col].plot([r['step'] for r in res['train']],
                              [r['loss'] for r in res['train']], label=label)
            for key in METRICS[task]:
                axes[1, col].plot([r['step'] for r in res['val']], [r[key] for r in res['val']],
                                  marker='o', label=f'{key} ({label})')
        axes[0, col].set(title=f'{task}: training loss', xlabel='iteration')
        axes[1, col].set(title=f'{task}: val metric', xlabel='iteration')
        axes[0, col].legend()
        axes[1, col].legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(out_file, dpi=80)
    plt.close(fig)


def visualize(stage_result, config, out_file):
    subprocess.check_call([
        sys.executable, osp.join(REPO, 'tools/demo/visualize_predictions.py'),
        osp.join(REPO, config), stage_result['checkpoint'], '--out', out_file,
        '--img-dir', stage_result['img_dir']], cwd=REPO, stdout=subprocess.DEVNULL)


def write_report(results, args, report_dir, total_seconds):
    def fmt(stage, key, scale=1.):
        return f"{results[stage]['metrics'][key] * scale:.3f}"

    def secs(stage):
        return f"{results[stage]['seconds'] / 60:.1f} min"
    rows = [
        ('classification (mmpretrain)', 'val top-1 (%)', '-', fmt('cls', 'accuracy/top1'),
         args.cls_iters, f"- / {secs('cls')}"),
        ('detection (mmdet Mask R-CNN)', 'val bbox mAP', fmt('det-scratch', 'coco/bbox_mAP'),
         fmt('det-pre', 'coco/bbox_mAP'), args.det_iters,
         f"{secs('det-scratch')} / {secs('det-pre')}"),
        ('instance segmentation (same)', 'val segm mAP', fmt('det-scratch', 'coco/segm_mAP'),
         fmt('det-pre', 'coco/segm_mAP'), args.det_iters, '(same runs)'),
        ('semantic segmentation (mmseg UPerNet)', 'val mIoU (%)', fmt('seg-scratch', 'mIoU'),
         fmt('seg-pre', 'mIoU'), args.seg_iters, f"{secs('seg-scratch')} / {secs('seg-pre')}"),
    ]
    lines = [
        '# LightViT-T on the digits: pretrain, detect, segment', '',
        f'Command: `{" ".join([osp.relpath(sys.argv[0], REPO)] + sys.argv[1:])}`  ',
        f'Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
        f'torch {torch.__version__} ({torch.get_num_threads()} threads), no GPU used.  ',
        f'Total wall time: {total_seconds / 60:.1f} min.', '',
        '| task | metric | from scratch | digits-pretrained | iterations | wall time '
        '(scratch / pretrained) |',
        '| --- | --- | --- | --- | --- | --- |',
        *[f'| {" | ".join(map(str, row))} |' for row in rows], '',
        'Pretraining: `configs/mmpretrain/digits/lightvit-tiny_digits.py`; fine-tuning starts from '
        'its checkpoint through `init_cfg=dict(type=\'Pretrained\', prefix=\'backbone.\')` '
        '(`configs/mmdet/digits/mask-rcnn_lightvit-t-digits-pre_lightvit-fpn_digits.py`, '
        '`configs/mmseg/digits/lightvit-t-digits-pre_upernet_digits.py`); '
        'the from-scratch runs use the same configs without it, at the same budget and seed.', '',
        '## Predictions on val images (digits-pretrained models)', '',
        '![detection](det_predictions.png)', '', '![segmentation](seg_predictions.png)', '',
        '## Curves (from mmengine\'s vis_data/scalars.json)', '', '![curves](curves.png)', '']
    with open(osp.join(report_dir, 'README.md'), 'w') as f:
        f.write('\n'.join(lines))
    return '\n'.join(lines[6:6 + 2 + len(rows)])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cls-iters', type=int, default=1800, help='pretraining iterations')
    parser.add_argument('--det-iters', type=int, default=150,
                        help='Mask R-CNN iterations (each of the two runs)')
    parser.add_argument('--seg-iters', type=int, default=300,
                        help='UPerNet iterations (each of the two runs)')
    parser.add_argument('--data-dir', default='data', help='where the datasets are built')
    parser.add_argument('--work-dir', default='work_dirs/digits_pipeline')
    parser.add_argument('--report-dir', default='report')
    parser.add_argument('--num-canvases', type=int, nargs=2, default=(1000, 100),
                        metavar=('TRAIN', 'VAL'), help='detection/segmentation canvases')
    parser.add_argument('--num-cls-images', type=int, nargs=2, default=(3000, 500),
                        metavar=('TRAIN', 'VAL'), help='classification images')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from lightvit_mm.demo_data.digits import build_digits_cls, build_digits_coco
    start = time.time()
    data_dir, work_dir = osp.abspath(args.data_dir), osp.abspath(args.work_dir)
    build_digits_coco(osp.join(data_dir, 'digits'), *args.num_canvases)
    build_digits_cls(osp.join(data_dir, 'digits_cls'), *args.num_cls_images)
    results = {'cls': run_stage('cls', work_dir, args.cls_iters, data_dir)}
    pretrained = results['cls']['checkpoint']
    for task, iters in (('det', args.det_iters), ('seg', args.seg_iters)):
        results[f'{task}-scratch'] = run_stage(f'{task}-scratch', work_dir, iters, data_dir)
        results[f'{task}-pre'] = run_stage(f'{task}-pre', work_dir, iters, data_dir, pretrained)
    report_dir = osp.abspath(args.report_dir)
    os.makedirs(report_dir, exist_ok=True)
    for task in ('det', 'seg'):
        results[f'{task}-pre']['img_dir'] = osp.join(data_dir, 'digits', 'val')
        visualize(results[f'{task}-pre'], CONFIGS[f'{task}-pre'],
                  osp.join(report_dir, f'{task}_predictions.png'))
    plot_curves(results, osp.join(report_dir, 'curves.png'))
    table = write_report(results, args, report_dir, time.time() - start)
    print(table)
    print(f'report: {osp.join(report_dir, "README.md")}')


if __name__ == '__main__':
    main()
