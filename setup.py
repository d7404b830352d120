import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
#: what OpenMMLab's `mim` looks for under ``<package>/.mim/``: the configs it
#: searches by file name, tools/train.py and tools/test.py it runs, and the
#: model index that `mim search` and mmengine's hub read.
MIM_FILES = ('configs', 'tools', 'model-index.yml')
#: This project's repository. PLACEHOLDER: the project has no published
#: repository URL yet; replace <OWNER> here and in docs/install.md and
#: README.md once it is hosted (tests/test_metadata.py keeps them equal).
REPOSITORY = 'https://github.com/<OWNER>/lightvit-mm'


def read_version():
    namespace = {}
    with open(osp.join(ROOT, 'lightvit_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


class BuildPyWithMim(build_py):
    """``build_py`` that also provides ``lightvit_mm/.mim/`` (OpenMMLab's
    convention, as in mmdet's ``add_mim_extension``).

    - Wheel (``pip install .``, ``python -m build``): :data:`MIM_FILES` are
      copied into the build folder, so the wheel carries them.
    - Editable install (PEP 660 ``pip install -e .``, where setuptools runs
      this command with ``editable_mode`` set): relative symlinks in the source
      tree, ``lightvit_mm/.mim/configs -> ../../configs``, so edits show at
      once (git ignores ``lightvit_mm/.mim/``).
    """

    def run(self):
        super().run()
        if self.editable_mode:
            mim_dir = osp.join(ROOT, 'lightvit_mm', '.mim')
        else:
            mim_dir = osp.join(self.build_lib, 'lightvit_mm', '.mim')
        os.makedirs(mim_dir, exist_ok=True)
        for name in MIM_FILES:
            src, dst = osp.join(ROOT, name), osp.join(mim_dir, name)
            if not osp.exists(src):
                raise FileNotFoundError(f'{src} is missing: the package ships it under .mim/')
            if osp.islink(dst) or osp.isfile(dst):
                os.remove(dst)
            elif osp.isdir(dst):
                shutil.rmtree(dst)
            if self.editable_mode:
                os.symlink(osp.relpath(src, mim_dir), dst)
            elif osp.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copyfile(src, dst)


setup(
    name='lightvit-mm',
    version=read_version(),
    description='LightViT (arXiv:2207.05557) backbone and neck for '
    'OpenMMLab 3.x: mmdet, mmsegmentation and mmpretrain',
    long_description=open(osp.join(ROOT, 'README.md')).read(),
    long_description_content_type='text/markdown',
    url=REPOSITORY,
    project_urls={
        'Source': REPOSITORY,
        'Documentation': f'{REPOSITORY}/tree/main/docs',
        'Paper': 'https://arxiv.org/abs/2207.05557',
        # The authors' code, which this package re-implements (not this package):
        'Official LightViT (detection, mmdet 2.x)': 'https://github.com/hunto/LightViT',
        'Official LightViT (ImageNet)': 'https://github.com/hunto/image_classification_sota',
    },
    packages=find_packages(include=['lightvit_mm', 'lightvit_mm.*']),
    cmdclass={'build_py': BuildPyWithMim},
    python_requires='>=3.9',
    # torch >= 2.5: torch.serialization.safe_globals and
    # get_unsafe_globals_in_checkpoint (weights-only checkpoint reading);
    # tested with torch 2.14.1, mmcv 2.1.0 (mmdet 3.3 and mmseg 1.2 refuse
    # mmcv >= 2.2) and mmengine 0.10.7. mmcv needs its compiled ops (no PyPI
    # wheel): tools/setup_env.sh builds it, docs/install.md says how.
    # setuptools < 82: mmengine 0.10.7 imports pkg_resources (gone in 82) to
    # resolve `mmdet::`/`mmseg::`/`mmpretrain::` base configs.
    install_requires=[
        'torch>=2.5,<2.15', 'mmengine>=0.10.7,<1.0.0', 'mmcv>=2.1.0,<2.2.0', 'setuptools<82'
    ],
    extras_require={
        'mmdet': ['mmdet>=3.3.0,<3.4.0'],
        'mmseg': ['mmsegmentation>=1.2.2,<1.3.0', 'ftfy', 'regex'],
        # transformers >= 4.52 breaks `import mmpretrain` 1.2.0 (lightvit_mm/registration.py,
        # TRANSFORMERS_BREAKING_MMPRETRAIN); mmpretrain itself does not bound it.
        'mmpretrain': ['mmpretrain>=1.2.0,<1.3.0', 'transformers<4.52'],
        # nncf: int8 quantization of OpenVINO graphs (export.py --precision int8)
        'deploy': ['onnx', 'onnxruntime', 'onnxscript', 'openvino', 'nncf>=3.0'],
        'tests': [
            'pytest', 'ruff>=0.17,<0.18', 'build', 'scikit-learn', 'pycocotools', 'onnx',
            'onnxruntime', 'pyyaml', 'tensorboard',
            # tests/conftest.py's scheduler subclasses xdist's LoadScopeScheduling
            'pytest-xdist>=3.8,<3.9',
            'timm>=1.0',  # the benchmark's peers (gpu_check)
        ],
    },
    license='Apache-2.0',
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)
