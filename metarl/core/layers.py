"""Layers that also run a whole task batch at once.

When :func:`metarl.core.functional.task_forward` swaps in parameters with a leading task
dimension, these layers compute every task with a single batched kernel instead of a loop or a
``vmap``. With ordinary (unbatched) parameters they behave exactly like their ``torch.nn``
parents, so a model built from them is still a plain ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class Linear(nn.Linear):
    """``nn.Linear`` that accepts a task batch.

    Shapes:
        unbatched: ``weight (out, in)``, ``x (..., in)`` -> ``(..., out)``.
        task batch: ``weight (n_tasks, out, in)``, ``bias (n_tasks, out)``,
        ``x (n_tasks, ..., in)`` -> ``(n_tasks, ..., out)``, computed by one ``baddbmm``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dim() == 2:
            return F.linear(x, self.weight, self.bias)
        n_tasks = self.weight.shape[0]
        if x.shape[0] != n_tasks:
            raise ValueError(
                f"task-batched Linear: input has {x.shape[0]} tasks, weights have {n_tasks}"
            )
        # Views are autograd nodes too, and MAML backpropagates through this graph twice:
        # reshape only when the input is not already (n_tasks, N, in).
        flat = x if x.dim() == 3 else x.reshape(n_tasks, -1, x.shape[-1])
        weight_t = self.weight.transpose(1, 2)
        if self.bias is None:
            out = torch.bmm(flat, weight_t)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, weight_t)
        return out if x.dim() == 3 else out.reshape(*x.shape[:-1], self.out_features)


class MLP(nn.Sequential):
    """Fully connected network ``sizes[0] -> ... -> sizes[-1]``, no activation on the output.

    Args:
        sizes: layer widths including input and output, e.g. ``(1, 40, 40, 1)``.
        activation: ``"relu"`` or ``"tanh"``.
    """

    native_task_batch = True

    def __init__(self, sizes: Sequence[int], activation: str = "relu") -> None:
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"MLP sizes must be >= 2 positive widths, got {list(sizes)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(int(n_in), int(n_out)))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.sizes = tuple(int(s) for s in sizes)

    def linearize(
        self, params: Mapping[str, Tensor], x: Tensor
    ) -> tuple[Tensor, Callable[[Mapping[str, Tensor]], Tensor]]:
        """The task-batched output at ``params`` and its Jacobian-vector product in ``params``.

        Equal to :func:`torch.func.jvp` of the task-batched forward, but the activations are
        computed once and kept: when the same point is differentiated in many directions (the
        conjugate-gradient iterations of TRPO), each product costs two batched matmuls per
        layer and no forward pass.

        Args:
            params: this MLP's parameters by their own names (``"0.weight"``, ``"0.bias"``, …),
                each with a leading task dimension: ``weight (n_tasks, out, in)``,
                ``bias (n_tasks, out)``.
            x: input ``(n_tasks, ..., sizes[0])``, held fixed.

        Returns:
            ``(output, jvp)``: ``output (n_tasks, ..., sizes[-1])`` (no graph) and the function
            mapping tangents shaped like ``params`` to ``d output`` of the same shape.
        """
        linears = [(i, m) for i, m in enumerate(self) if isinstance(m, Linear)]
        with torch.no_grad():
            n_tasks = x.shape[0]
            h = x.reshape(n_tasks, -1, x.shape[-1])
            inputs, slopes = [], []  # each Linear's input; the activation's derivative after it
            for position, (i, _) in enumerate(linears):
                inputs.append(h)
                h = torch.baddbmm(
                    params[f"{i}.bias"].unsqueeze(1), h, params[f"{i}.weight"].transpose(1, 2)
                )
                if position < len(linears) - 1:
                    activation = self[i + 1]
                    if isinstance(activation, nn.ReLU):
                        slopes.append((h > 0).to(h.dtype))  # relu's derivative as autograd's
                        h = torch.relu(h)
                    else:
                        h = torch.tanh(h)
                        slopes.append(1.0 - h * h)
        out_shape = (*x.shape[:-1], self.sizes[-1])

        @torch.no_grad()
        def jvp(tangents: Mapping[str, Tensor]) -> Tensor:
            d: Tensor | None = None
            for position, (i, _) in enumerate(linears):
                d_out = torch.baddbmm(
                    tangents[f"{i}.bias"].unsqueeze(1),
                    inputs[position],
                    tangents[f"{i}.weight"].transpose(1, 2),
                )
                if d is not None:  # the input's own tangent, through this layer's weights
                    d_out = torch.baddbmm(d_out, d, params[f"{i}.weight"].transpose(1, 2))
                d = d_out * slopes[position] if position < len(slopes) else d_out
            assert d is not None
            return d.reshape(out_shape)

        return h.reshape(out_shape), jvp
