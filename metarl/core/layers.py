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

    def linearize(self, params: Mapping[str, Tensor], x: Tensor) -> MLPLinearization:
        """This MLP frozen at ``params`` on the input ``x`` (see :class:`MLPLinearization`)."""
        return MLPLinearization(self, params, x)


HessianVectorProduct = Callable[
    [Mapping[str, Tensor], Callable[[Tensor], Tensor]], tuple[dict[str, Tensor], Tensor]
]
"""``(v, output_grad_r) -> ((∇² L) v, d output)``: see :meth:`MLPLinearization.curvature`."""


class MLPLinearization:
    """A task-batched :class:`MLP` frozen at one point: its output, Jacobian-vector and
    vector-Jacobian products, and Hessian-vector products of a loss on its output, with the
    activations computed once.

    TRPO's conjugate gradient differentiates the same point in many directions. Autograd would
    redo the forward pass (``torch.func.jvp``) or walk a double-backward graph with its
    zero-filled and accumulated intermediates for every direction; here a product costs the
    batched matmuls of Pearlmutter's R-operator and little else. The numbers equal autograd's
    (tested), including ReLU's second derivative, which autograd takes as zero.

    Args:
        mlp: the network (ReLU or tanh).
        params: its parameters by their own names (``"0.weight"``, ``"0.bias"``, …), each with
            a leading task dimension: ``weight (n_tasks, out, in)``, ``bias (n_tasks, out)``.
        x: input ``(n_tasks, ..., sizes[0])``, held fixed.

    Attributes:
        output: ``(n_tasks, ..., sizes[-1])``, without a graph.
    """

    @torch.no_grad()
    def __init__(self, mlp: MLP, params: Mapping[str, Tensor], x: Tensor) -> None:
        self._indices = [i for i, m in enumerate(mlp) if isinstance(m, Linear)]
        self._weights = [params[f"{i}.weight"].detach() for i in self._indices]
        if self._weights[0].dim() != 3 or x.shape[0] != self._weights[0].shape[0]:
            raise ValueError(
                "MLPLinearization needs task-batched parameters (n_tasks, out, in) and an input "
                f"(n_tasks, ..., in); got weight {tuple(self._weights[0].shape)}, "
                f"input {tuple(x.shape)}"
            )
        activations = {type(m) for m in mlp if not isinstance(m, Linear)}
        if not activations <= {nn.ReLU, nn.Tanh}:
            raise NotImplementedError(f"MLPLinearization knows ReLU and tanh, not {activations}")
        self._tanh = nn.Tanh in activations
        n_tasks = x.shape[0]
        h = x.reshape(n_tasks, -1, x.shape[-1])
        self._inputs: list[Tensor] = []  # each Linear's input: x, then the hidden outputs h_k
        self._slopes: list[Tensor] = []  # the activation's derivative after each hidden Linear
        for k, i in enumerate(self._indices):
            self._inputs.append(h)
            h = torch.baddbmm(params[f"{i}.bias"].detach().unsqueeze(1), h, self._weights[k].mT)
            if k < len(self._indices) - 1:
                if self._tanh:
                    h = torch.tanh(h)
                    self._slopes.append(1.0 - h * h)
                else:
                    self._slopes.append((h > 0).to(h.dtype))  # relu's derivative as autograd's
                    h = torch.relu(h)
        self._out_shape = (*x.shape[:-1], mlp.sizes[-1])
        self.output = h.reshape(self._out_shape)

    def _backward(
        self, output_grad: Tensor
    ) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
        """∂L/∂params, and per layer δ_k = ∂L/∂(pre-activation k) and ∂L/∂h_k (tanh only)."""
        delta = output_grad.detach().reshape(self._inputs[-1].shape[0], -1, self._out_shape[-1])
        deltas, hidden_grads = [delta], []
        grads: dict[str, Tensor] = {}
        for k in range(len(self._indices) - 1, -1, -1):
            i = self._indices[k]
            grads[f"{i}.weight"] = torch.bmm(delta.mT, self._inputs[k])
            grads[f"{i}.bias"] = delta.sum(dim=1)
            if k > 0:
                grad_h = torch.bmm(delta, self._weights[k])
                if self._tanh:
                    hidden_grads.insert(0, grad_h)
                delta = grad_h * self._slopes[k - 1]
                deltas.insert(0, delta)
        return grads, deltas, hidden_grads

    @torch.no_grad()
    def vjp(self, output_grad: Tensor) -> dict[str, Tensor]:
        """``∂L/∂params`` per task, by the parameters' names, given ``∂L/∂output``."""
        return self._backward(output_grad)[0]

    def _tangent_forward(self, tangents: Mapping[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """``d output`` and the tangent ``R{h_k}`` of every hidden layer's output."""
        d: Tensor | None = None
        d_hidden: list[Tensor] = []
        for k, i in enumerate(self._indices):
            out = torch.baddbmm(
                tangents[f"{i}.bias"].unsqueeze(1), self._inputs[k], tangents[f"{i}.weight"].mT
            )
            if d is not None:  # the input's own tangent, through this layer's weights
                out = torch.baddbmm(out, d, self._weights[k].mT)
            if k < len(self._slopes):
                d = out.mul_(self._slopes[k])  # out is fresh: nothing else holds it
                d_hidden.append(d)
            else:
                d = out
        assert d is not None
        return d, d_hidden

    @torch.no_grad()
    def jvp(self, tangents: Mapping[str, Tensor]) -> Tensor:
        """``d output`` (the output's shape) for parameter tangents shaped like ``params``."""
        return self._tangent_forward(tangents)[0].reshape(self._out_shape)

    def curvature(self, output_grad: Tensor) -> HessianVectorProduct:
        """Hessian-vector products of a loss L whose gradient in the output is ``output_grad``.

        The backward pass of L is computed here, once; each product then runs the R-operator's
        forward and backward passes.

        Args:
            output_grad: ``∂L/∂output`` at this point, the output's shape.

        Returns:
            ``hvp(v, output_grad_r)``: ``v`` is the direction, shaped like ``params``;
            ``output_grad_r`` maps ``d output`` along ``v`` to ``R{∂L/∂output}``, the tangent of
            ``output_grad`` (the loss's own curvature, plus any dependence on parameters
            outside this MLP, which the caller closes over). It returns ``(∇²_params L) v`` per
            task by the parameters' names, and ``d output`` (the :meth:`jvp`, computed on the
            way).
        """
        _, deltas, hidden_grads = self._backward(output_grad)

        @torch.no_grad()
        def hvp(
            tangents: Mapping[str, Tensor], output_grad_r: Callable[[Tensor], Tensor]
        ) -> tuple[dict[str, Tensor], Tensor]:
            d_out, d_hidden = self._tangent_forward(tangents)
            d_output = d_out.reshape(self._out_shape)
            r_delta = output_grad_r(d_output).reshape(d_out.shape)
            product: dict[str, Tensor] = {}
            for k in range(len(self._indices) - 1, -1, -1):
                i, delta = self._indices[k], deltas[k]
                # ∂L/∂W_k = δ_kᵀ h_{k-1}: R{·} = R{δ_k}ᵀ h_{k-1} + δ_kᵀ R{h_{k-1}}
                r_weight = torch.bmm(r_delta.mT, self._inputs[k])
                product[f"{i}.bias"] = r_delta.sum(dim=1)
                if k == 0:  # the input is fixed: R{h_0} = 0
                    product[f"{i}.weight"] = r_weight
                    break
                r_hidden = d_hidden[k - 1]  # R{h_{k-1}}
                product[f"{i}.weight"] = torch.baddbmm(r_weight, delta.mT, r_hidden)
                # δ_{k-1} = (δ_k W_k) ⊙ σ'(pre_{k-1})
                r_grad_h = torch.bmm(r_delta, self._weights[k])
                r_grad_h = torch.baddbmm(r_grad_h, delta, tangents[f"{i}.weight"])
                r_delta = r_grad_h.mul_(self._slopes[k - 1])
                if self._tanh:  # σ' = 1 − h², R{σ'} = −2 h R{h} (h = _inputs[k], tanh's output)
                    r_delta -= 2.0 * hidden_grads[k - 1] * self._inputs[k] * r_hidden
                # relu: σ'' = 0, as autograd has it
            return product, d_output

        return hvp
