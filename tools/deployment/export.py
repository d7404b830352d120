# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Export a trained model whole (mmpretrain classifier, mmseg EncoderDecoder,
mmdet RetinaNet / Mask R-CNN) to ONNX Runtime or OpenVINO, then check it
against PyTorch.

Writes into WORK_DIR the model files (one graph per weighted part, see
lightvit_mm/deploy/graphs.py) and deploy.json, then loads the folder as
``lightvit_mm.deploy.DeployedModel`` and compares each graph's outputs with
PyTorch's on the first test images of the config, printing the largest
difference of each output. Exits with 1 when one is over --tolerance
(relative to max(1, max |PyTorch|)).

Example:
    python tools/deployment/export.py \
        configs/mmdet/digits/mask-rcnn_lightvit-t_lightvit-fpn_digits.py \
        work_dirs/digits_demo/iter_600.pth --backend onnxruntime \
        --work-dir work_dirs/digits_demo/deploy_ort --data-root data/digits/
"""
import argparse
import sys

from mmengine.config import DictAction

from lightvit_mm.deploy.precision import PRECISIONS
from lightvit_mm.deploy.quantize import CALIB_IMAGES
from lightvit_mm.launch.data_root import DATA_ROOT_HELP, check_data_files, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a trained model to a deployed folder')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--backend', choices=['onnxruntime', 'openvino'], required=True)
    parser.add_argument('--work-dir', required=True, help='the deployed-model folder to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='static input size (default: the first test batch\'s size after '
                        'the test pipeline and data preprocessor)')
    parser.add_argument('--data-root', help=DATA_ROOT_HELP)
    parser.add_argument('--num-images', type=int, default=4,
                        help='test images to export and check with (default 4)')
    parser.add_argument('--tolerance', type=float, default=None,
                        help='largest accepted |deployed - PyTorch| / max(1, max |PyTorch|) '
                        '(default 1e-3 for fp32, 5e-2 bf16, 0.25 int8)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                        help='fp32 (default); bf16: OpenVINO\'s bf16 inference on CPUs with '
                        'bf16 units (AMX, AVX512_BF16), fp32 elsewhere; int8: quantized, '
                        'calibrated on --calib-images training images (docs/deployment.md)')
    parser.add_argument('--calib-images', type=int, default=CALIB_IMAGES,
                        help=f'int8: training images to calibrate on (default {CALIB_IMAGES})')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from lightvit_mm.deploy.exporter import TOLERANCES, compare, export_model
    cfg = load_config(args.config, args.data_root, args.cfg_options)
    check_data_files(cfg, ('test_dataloader', ))
    tolerance = TOLERANCES[args.precision] if args.tolerance is None else args.tolerance
    if args.precision == 'int8':
        check_data_files(cfg, ('train_dataloader', ))
    result = export_model(cfg, args.checkpoint, args.backend, args.work_dir,
                          shape=args.shape, num_images=args.num_images,
                          precision=args.precision, calib_images=args.calib_images)
    print(f'exported {result["task"]} ({", ".join(result["graphs"])}) for {args.backend} '
          f'({args.precision}) at {result["input"]["shape"][0]}x{result["input"]["shape"][1]} '
          f'into {args.work_dir}')
    errors = compare(args.work_dir, result['_model'], result['_specs'], result['_calls'])
    failed = False
    for graph, diffs in errors.items():
        for i, diff in enumerate(diffs):
            over = diff > tolerance
            failed |= over
            print(f'{graph} output{i}: max |{args.backend} - pytorch| / max(1, max|pytorch|) = '
                  f'{diff:.2e}{"  OVER TOLERANCE " + str(tolerance) if over else ""}')
    print('check: ' + ('FAILED' if failed else f'passed (tolerance {tolerance})'))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
