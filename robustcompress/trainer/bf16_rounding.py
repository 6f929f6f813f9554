"""bf16 forwards of frozen teachers on CPUs without bf16 units: fp32 kernels on values rounded to bf16.

Under bf16 autocast a convolution multiplies bf16 inputs by bf16 weights, accumulates in fp32 and rounds its output
to bf16; every op after it then works on bf16 tensors (computing in fp32 and rounding its output). A CPU with bf16
units (AVX512-BF16, AMX) does this in hardware. Without them oneDNN emulates it, and a ResNet-18 teacher's forward
takes about 2.3x its fp32 time (Intel Xeon, AVX-512 without BF16, docs/results/throughput_cpu.md). The product of two
bf16 numbers is exact in fp32, so an fp32 kernel given bf16-rounded operands does the same arithmetic (up to the
order of the fp32 sums, which differs between any two kernels anyway): rounding each op's output to bf16, and the
operands of the ops autocast runs in bf16, reproduces autocast at fp32 speed plus two cheap passes per op.

Frozen teachers use this. An inference forward runs in the rounded fp32 mode; a forward whose input needs a
gradient (AdaAD's inner maximisation back-propagates through its teachers to the image) runs its forward and its
backward in it, the backward's convolutions and matrix products on rounded operands too, as autocast's bf16 backward
kernels do. A model whose own parameters need gradients is left to autocast.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
# torch's only import paths for these two (TorchDispatchMode is the documented way to see every aten op)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

__all__ = ["BF16_OPERAND_OPS", "RoundToBf16", "bf16_rounded_teachers", "round_to_bf16"]

aten = torch.ops.aten

#: The ops CPU autocast runs in bf16 (its lower-precision list, as they reach the dispatcher): their fp32 operands,
#: the weights included, are rounded to bf16 before the fp32 kernel runs. Every other op keeps its operands (a batch
#: norm's statistics and affine parameters stay fp32 under autocast too) and has its output rounded.
BF16_OPERAND_OPS = frozenset({
    aten.convolution.default, aten._convolution.default, aten.conv2d.default, aten.conv1d.default,
    aten.conv3d.default, aten.mkldnn_convolution.default,
    aten.addmm.default, aten.mm.default, aten.bmm.default, aten.baddbmm.default, aten.addbmm.default,
    aten.linear.default, aten.matmul.default, aten.prelu.default, aten._prelu_kernel.default,
    aten.convolution_backward.default,
})


def round_to_bf16(value: Any) -> Any:
    """An fp32 tensor rounded to the nearest bf16 values (round-to-nearest-even, as the dtype cast), still fp32;
    anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
        return value.to(torch.bfloat16).to(torch.float32)
    return value


class RoundToBf16(TorchDispatchMode):
    """Inside this mode every fp32 op result is rounded to bf16 values, and the fp32 operands of BF16_OPERAND_OPS
    too: fp32 tensors then hold what bf16 autocast's bf16 tensors would. Views are left alone (they show rounded
    data already) and in-place ops round the tensor they wrote, except the tensors in ``kept`` (a model's parameters
    and buffers: written in place under autocast they stay fp32)."""

    def __init__(self, kept: Sequence[torch.Tensor] = ()) -> None:
        super().__init__()
        self.kept_storages = {t.untyped_storage().data_ptr() for t in kept}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        kwargs = kwargs or {}
        if func in BF16_OPERAND_OPS:
            args, kwargs = tree_map(round_to_bf16, (args, kwargs))
        out = func(*args, **kwargs)
        schema = func._schema
        if schema.is_mutable:  # in place (add_, relu_) or out=: round what it wrote, keep the caller's aliases valid
            for argument, value in zip(schema.arguments, args):
                if argument.alias_info is not None and argument.alias_info.is_write:
                    self._round_in_place(value)
            for name, value in kwargs.items():
                if any(a.name == name and a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
                    self._round_in_place(value)
            return out
        if any(r.alias_info is not None for r in schema.returns):  # a view: its base is rounded already
            return out
        return tree_map(round_to_bf16, out)

    def _round_in_place(self, value: Any) -> None:
        if (isinstance(value, torch.Tensor) and value.dtype == torch.float32
                and value.untyped_storage().data_ptr() not in self.kept_storages):
            value.copy_(value.to(torch.bfloat16))


def _as_bf16(out: Any) -> Any:
    """Exact: the values are bf16 already. Downstream code then sees the dtype autocast would have given it."""
    return tree_map(lambda t: t.to(torch.bfloat16) if isinstance(t, torch.Tensor) and t.dtype == torch.float32
                    else t, out)


class _RoundedWithInputGradient(torch.autograd.Function):
    """A frozen model's forward in the rounded mode, differentiable in its one input: the inner graph is built
    under the mode, and the backward walks it under the mode too."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, forward: Any, kept: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        with torch.enable_grad():
            inner = x.detach().requires_grad_(True)
            with torch.autocast("cpu", enabled=False), RoundToBf16(kept):
                out = forward(inner)
        ctx.inner, ctx.out, ctx.kept = inner, out, kept
        return out.detach().to(torch.bfloat16)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:  # type: ignore[override]
        with torch.autocast("cpu", enabled=False), RoundToBf16(ctx.kept):
            (grad_x,) = torch.autograd.grad(ctx.out, ctx.inner, round_to_bf16(grad.float()))
        ctx.inner = ctx.out = None  # the inner graph is spent
        return grad_x, None, None  # in x's dtype already: inner is x detached


def _emulating_forward(module: nn.Module, forward: Any) -> Any:
    """``forward`` that, called under CPU bf16 autocast, runs in fp32 with bf16 rounding instead and returns bf16
    tensors, as autocast would: for inference, and with gradients when its one input is all that needs them.
    Anything else (no autocast, keyword inputs, parameters that need gradients) is ``forward`` itself."""

    # Read once, not at every call (dual-path calls a teacher 11 times a step); within speed_context's block the
    # model's tensors are not replaced.
    parameters = list(module.parameters())
    kept = [*parameters, *module.buffers()]

    def emulated(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") != torch.bfloat16:
            return forward(*args, **kwargs)
        if not torch.is_grad_enabled():
            with torch.autocast("cpu", enabled=False), RoundToBf16(kept):
                return _as_bf16(forward(*args, **kwargs))
        one_input = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
        if not one_input or any(p.requires_grad for p in parameters):
            return forward(*args, **kwargs)
        if not args[0].requires_grad:  # nothing to differentiate: an inference forward that keeps grad mode on
            with torch.autocast("cpu", enabled=False), RoundToBf16(kept):
                return _as_bf16(forward(args[0]).detach())
        return _RoundedWithInputGradient.apply(args[0], forward, kept)

    return emulated


@contextlib.contextmanager
def bf16_rounded_teachers(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Within the block, forwards of the frozen ``modules`` under CPU bf16 autocast run as fp32 kernels on values
    rounded to bf16, backward too where their input needs a gradient (see the module docstring); the modules' own
    forwards are restored afterwards.

    The modules stay the same objects (methods inspect and hook them); only their ``forward`` attribute is
    overridden, so forward hooks still run.
    """
    patched = []
    try:
        for module in {id(m): m for m in modules}.values():
            if "forward" in vars(module):  # someone else overrode it already: leave that module as it is
                continue
            module.forward = _emulating_forward(module, module.forward)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward
