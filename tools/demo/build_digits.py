# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Build the COCO-format digits dataset used by the CPU demo.

Example:
    python tools/demo/build_digits.py --out data/digits
"""
import argparse

from lightvit_mm.demo_data.digits import build_digits_coco


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/digits', help='output folder')
    parser.add_argument('--num-train', type=int, default=1000, help='train canvases')
    parser.add_argument('--num-val', type=int, default=100, help='val canvases')
    parser.add_argument('--canvas-size', type=int, default=128, help='canvas side (px)')
    parser.add_argument('--max-digits', type=int, default=4, help='most digits a canvas')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    ann_files = build_digits_coco(args.out, args.num_train, args.num_val, args.canvas_size,
                                  args.max_digits, seed=args.seed)
    for split, path in ann_files.items():
        print(f'{split}: {path}')


if __name__ == '__main__':
    main()
