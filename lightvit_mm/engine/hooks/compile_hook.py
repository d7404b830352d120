# Copyright (c) lightvit-mm contributors. Licensed under the Apache License 2.0.
"""Compile a part of the model (the backbone by default) from a config.

mmengine 0.10.7's own ``compile = True`` (or ``compile = dict(...)``) in a
config compiles the whole ``train_step`` of the model, for training only
(``Runner.train``; validation and testing run eagerly), and breaks the graph
wherever mmdet's or mmseg's heads do data-dependent Python. The
:class:`CompileModuleHook` compiles one submodule in place instead, for
training, validation and testing alike: ``import lightvit_mm`` registers it in
mmengine's ``HOOKS``; add to a config::

    custom_hooks = [dict(type='CompileModuleHook')]        # model.backbone
    custom_hooks = [dict(type='CompileModuleHook', module='backbone',
                         mode='max-autotune-no-cudagraphs')]  # torch.compile options
"""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class CompileModuleHook(Hook):
    """``torch.compile`` a submodule of the runner's model before the run.

    Uses ``nn.Module.compile`` (torch >= 2.2), which compiles the module's
    forward in place: the module stays where it was, so state-dict keys,
    checkpoints and ``load_from`` are unchanged (``torch.compile(module)``
    would wrap it and prefix every key with ``_orig_mod.``). The first
    iterations of each input size are slow (compilation; see docs/benchmarks.md).

    Args:
        module (str): Dotted path of the submodule in the model (unwrapped
            from DDP etc.), ``''`` for the whole model. Defaults to
            ``'backbone'``.
        **compile_options: Keyword arguments of ``torch.compile`` (``backend``,
            ``mode``, ``dynamic``, ``fullgraph``, ``options``).

    Raises:
        AttributeError: in ``before_run``, the model has no submodule
            ``module``; the message lists its top-level children.
    """

    priority = 'VERY_LOW'  # after weights are loaded and wrappers are set up

    def __init__(self, module: str = 'backbone', **compile_options):
        self.module = module
        self.compile_options = compile_options

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        try:
            target = model.get_submodule(self.module)
        except AttributeError as error:
            children = [name for name, _ in model.named_children()]
            raise AttributeError(f'CompileModuleHook: the model has no submodule '
                                 f'{self.module!r} ({error}); its top-level children are '
                                 f'{children}') from None
        target.compile(**self.compile_options)
