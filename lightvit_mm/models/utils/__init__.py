"""Building blocks of the models: the window attention and its autograd Function."""
from .window_attention import WindowAttentionWithBias, relative_position_index

__all__ = ['WindowAttentionWithBias', 'relative_position_index']
