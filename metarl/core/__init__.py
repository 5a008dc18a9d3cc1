"""The MAML core: functional adaptation of any ``nn.Module`` and the meta-gradient modes."""

from metarl.core.adapt import META_GRADIENT_MODES, MetaGradientMode, adapt, inner_step
from metarl.core.batch import TaskBatch
from metarl.core.functional import (
    Params,
    all_finite,
    expand_to_tasks,
    get_buffers,
    get_params,
    single_forward,
    task_batched,
    task_forward,
    use_batch_statistics,
)
from metarl.core.layers import MLP, Linear
from metarl.core.step_size import InnerStepSize

__all__ = [
    "META_GRADIENT_MODES",
    "InnerStepSize",
    "Linear",
    "MLP",
    "MetaGradientMode",
    "Params",
    "TaskBatch",
    "adapt",
    "all_finite",
    "expand_to_tasks",
    "get_buffers",
    "get_params",
    "inner_step",
    "single_forward",
    "task_batched",
    "task_forward",
    "use_batch_statistics",
]
