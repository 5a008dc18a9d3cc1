"""Task-batched Conv2d, BatchNorm2d, MaxPool2d and Conv-4 against per-task torch.nn layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metarl.benchmarks.speed.omniglot import PlainConv4
from metarl.core import expand_to_tasks, get_params, task_forward
from metarl.core.conv import BatchNorm2d, Conv2d, MaxPool2d
from metarl.supervised.conv4 import Conv4


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # noqa: ANN001 - conftest's: restored after each test
    """Small convolutions on one thread (set per test, so other files keep their threads)."""
    yield


def _task_params(module: torch.nn.Module, n_tasks: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Different parameters for every task (θ plus task-specific noise)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        n: p.detach().expand(n_tasks, *p.shape) + torch.randn(n_tasks, *p.shape, generator=gen)
        for n, p in get_params(module).items()
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 2, "padding": 1},
        {"stride": 1, "padding": 0, "bias": False},
        {"stride": 1, "padding": 2, "dilation": 2, "groups": 2},
    ],
)
def test_conv2d_task_batch_equals_per_task_conv(kwargs):
    torch.manual_seed(0)
    conv = Conv2d(4, 6, 3, **kwargs)
    params = _task_params(conv, 3)
    x = torch.randn(3, 5, 4, 11, 11)
    out = functional_call(conv, params, (x,))
    for t in range(3):
        ref = F.conv2d(
            x[t], params["weight"][t], params["bias"][t] if "bias" in params else None,
            conv.stride, conv.padding, conv.dilation, conv.groups,
        )  # fmt: skip
        torch.testing.assert_close(out[t], ref, rtol=1e-5, atol=1e-5)
    # Unbatched parameters: an ordinary convolution.
    torch.testing.assert_close(conv(x[0]), F.conv2d(x[0], conv.weight, conv.bias, conv.stride,
                               conv.padding, conv.dilation, conv.groups))  # fmt: skip


def test_conv2d_rejects_a_task_count_mismatch():
    conv = Conv2d(1, 2, 3)
    with pytest.raises(ValueError, match="n_tasks=3"):
        functional_call(conv, _task_params(conv, 3), (torch.randn(2, 4, 1, 8, 8),))


def test_batchnorm_task_batch_equals_per_task_batch_statistics():
    bn = BatchNorm2d(6)
    params = _task_params(bn, 4)
    x = torch.randn(4, 7, 6, 5, 5) * 3 + 1
    out = functional_call(bn, params, (x,))
    for t in range(4):
        ref = F.batch_norm(x[t], None, None, params["weight"][t], params["bias"][t], training=True)
        torch.testing.assert_close(out[t], ref, rtol=1e-5, atol=1e-5)


def test_batchnorm_with_reference_statistics_by_hand():
    bn = BatchNorm2d(3)
    params = _task_params(bn, 2)
    x = torch.randn(2, 9, 3, 4, 4)
    out = functional_call(bn, params, (x, 4))  # statistics of the first 4 samples only
    for t in range(2):
        ref = x[t, :4].double()
        mean = ref.mean(dim=(0, 2, 3), keepdim=True)
        var = ref.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        w, b = params["weight"][t].view(1, -1, 1, 1), params["bias"][t].view(1, -1, 1, 1)
        expected = (x[t].double() - mean) / torch.sqrt(var + bn.eps) * w + b
        torch.testing.assert_close(out[t].double(), expected, rtol=1e-5, atol=1e-5)


def test_maxpool_task_batch():
    x = torch.randn(3, 2, 4, 9, 9)
    out = MaxPool2d(2)(x)
    for t in range(3):
        torch.testing.assert_close(out[t], F.max_pool2d(x[t], 2))


@pytest.mark.parametrize("downsample,size", [("stride", 28), ("maxpool", 32)])
def test_conv4_task_forward_and_gradients_equal_a_plain_torch_nn_model(downsample, size):
    torch.manual_seed(0)
    # Double precision: a conv bias before BatchNorm has a gradient of ~0 (BatchNorm removes
    # it), which float32 only resolves to rounding noise.
    model = Conv4(5, in_channels=1, image_size=size, filters=8, downsample=downsample).double()
    params = {n: p.requires_grad_(True) for n, p in _task_params(model, 3).items()}
    x = torch.randn(3, 6, 1, size, size, dtype=torch.float64)
    out = task_forward(model, params, x)
    assert out.shape == (3, 6, 5)
    grads = torch.autograd.grad(out.square().sum(), list(params.values()))
    plain = _plain(model, downsample).double()
    for t in range(3):
        p_t = {n: p[t].detach().requires_grad_(True) for n, p in params.items()}
        ref = functional_call(plain, p_t, (x[t],))
        torch.testing.assert_close(out[t], ref)
        ref_grads = torch.autograd.grad(ref.square().sum(), list(p_t.values()))
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g[t], r)


def _plain(model: Conv4, downsample: str) -> torch.nn.Module:
    """An independent torch.nn reference of ``model``'s architecture."""
    if downsample == "stride":
        plain = PlainConv4(5, filters=8)
        plain.load_state_dict(model.state_dict())
        return plain

    class Pooled(PlainConv4):
        def forward(self, x):
            for block in self.blocks:
                x = F.max_pool2d(F.relu(block.bn(block.conv(x))), 2)
            return self.head(x.flatten(-3))

    plain = Pooled(5, filters=8)
    for block in plain.blocks:
        block.conv.stride = (1, 1)
    plain.head = torch.nn.Linear(8 * 2 * 2, 5)
    plain.load_state_dict(model.state_dict())
    return plain


def test_support_statistics_do_not_leak_between_query_images():
    torch.manual_seed(0)
    model = Conv4(5, filters=8)
    params = expand_to_tasks(get_params(model), 2)
    support, query = torch.rand(2, 5, 1, 28, 28), torch.rand(2, 10, 1, 28, 28)
    changed = query.clone()
    changed[:, 3:] = torch.rand(2, 7, 1, 28, 28)
    with torch.no_grad():
        a = task_forward(model, params, query, support)
        b = task_forward(model, params, changed, support)
        trans_a = task_forward(model, params, query)
        trans_b = task_forward(model, params, changed)
        # Normalising x with x's own statistics is the transductive forward.
        same = task_forward(model, params, query, query)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # queries 0-2 unaffected by the others
    assert not torch.allclose(trans_a[:, :3], trans_b[:, :3])  # transductive BN: they leak
    torch.testing.assert_close(same, trans_a, rtol=1e-4, atol=1e-5)


def test_the_fused_batchnorm_double_backward_against_finite_differences_and_torch():
    """metarl.core.batch_norm: its first and second derivatives equal finite differences
    (float64 gradcheck and gradgradcheck) and PyTorch's BatchNorm's, also when only some of
    (gx, gγ, gβ) are used."""
    from metarl.core.batch_norm import batch_norm

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, generator=gen).requires_grad_(True)
    weight = torch.randn(4, dtype=torch.float64, generator=gen).requires_grad_(True)
    bias = torch.randn(4, dtype=torch.float64, generator=gen).requires_grad_(True)
    assert torch.autograd.gradcheck(batch_norm, (x, weight, bias))
    assert torch.autograd.gradgradcheck(batch_norm, (x, weight, bias))
    target = torch.randn(3, 4, 5, 5, dtype=torch.float64, generator=gen)

    def second_order(norm, used):
        y = norm(x, weight, bias)
        grads = torch.autograd.grad((torch.tanh(y) * target).sum(), (x, weight, bias),
                                    create_graph=True)  # fmt: skip
        outer = sum(((g * c).sin()).sum() for g, c, u in zip(grads, (1.0, 2.0, 3.0), used) if u)
        return torch.autograd.grad(outer, (x, weight, bias), allow_unused=True)

    def torch_norm(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True)

    uses = [(True, True, True), (True, False, False), (False, True, True), (False, False, True)]
    for used in uses:
        for got, want in zip(second_order(batch_norm, used), second_order(torch_norm, used)):
            torch.testing.assert_close(
                torch.zeros_like(x) if got is None else got,
                torch.zeros_like(x) if want is None else want,
            )
