import os.path as osp

import pytest
import torch

DATA = osp.join(osp.dirname(__file__), 'data')
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='session')
def official_vectors():
    """Outputs of the official LightViT code on a small architecture
    (shared/reference/official_mini_vectors.pt, copied into tests/data)."""
    return torch.load(osp.join(DATA, 'official_mini_vectors.pt'), weights_only=True)


@pytest.fixture(scope='session')
def mini_arch(official_vectors):
    a = official_vectors['arch']
    return dict(embed_dims=a['embed_dims'], depths=a['num_layers'],
                num_heads=a['num_heads'], mlp_ratios=a['mlp_ratios'],
                num_tokens=a['num_tokens'])
