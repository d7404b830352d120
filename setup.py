import os.path as osp

from setuptools import find_packages, setup


def read_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'lightvit_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='lightvit_mm',
    version=read_version(),
    description='LightViT (arXiv:2207.05557) backbone and neck for '
    'OpenMMLab 3.x: mmdet, mmsegmentation and mmpretrain',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['lightvit_mm', 'lightvit_mm.*']),
    python_requires='>=3.8',
    # mmcv (with ops) is built by tools/setup_env.sh; see README for GPU installs.
    install_requires=['torch>=1.13', 'mmengine>=0.10.0,<1.0.0', 'mmcv>=2.0.0,<2.2.0'],
    extras_require={
        'mmdet': ['mmdet>=3.0.0'],
        'mmseg': ['mmsegmentation>=1.0.0', 'ftfy', 'regex'],
        'mmpretrain': ['mmpretrain>=1.0.0'],
        'tests': ['pytest', 'scikit-learn', 'pycocotools', 'onnx', 'onnxruntime'],
    },
    license='Apache License 2.0',
    zip_safe=False,
)
