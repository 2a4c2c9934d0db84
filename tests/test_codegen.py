"""The Triton kernels inductor writes for a GPU, written on this machine: no GPU is needed to
generate them, only to run them. The fused step's budget (one pass over each parameter per step
for optimizer and max-norm) is a property of this code, so it is tested where CI runs.

Inductor is asked to emit Triton for CPU tensors with the target reported as an H100 (sm_90); it
writes the kernels, then fails to load them (there is no driver) and the step runs eagerly. Only
the written source is read.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch._inductor.graph import GraphLowering

from droptune.fused.module import forward_losses
from droptune.models.stacked import StackedMLP, compiled
from droptune.models.stacked_optim import StackedOptimizer

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.compiled


@pytest.fixture
def gpu_kernels(monkeypatch):
    """Returns a function: run fn() and list the names of the Triton kernels it was compiled to."""
    import torch.utils._triton as torch_triton
    from triton.backends.compiler import GPUTarget

    monkeypatch.setattr(torch_triton, "triton_backend", lambda: GPUTarget("cuda", 90, 32))
    monkeypatch.setattr(torch_triton, "triton_hash_with_backend", lambda: "sm90-codegen-test")

    sources: list[str] = []
    monkeypatch.setattr(GraphLowering, "save_output_code", sources.append)  # as run_and_get_code

    def kernels(fn) -> list[str]:
        torch._dynamo.reset()
        try:  # stop at the first graph's failure (compiled() lets it fall back to smaller graphs)
            with (
                torch._inductor.config.patch(cpu_backend="triton"),
                torch._dynamo.config.patch(suppress_errors=False),
            ):
                fn()
        except Exception as error:  # the kernels cannot load without a driver; their code is kept
            assert sources, f"inductor wrote no code before failing: {error}"
        finally:
            torch._dynamo.reset()
        return re.findall(r"def (triton_\w+)\(", "\n".join(sources))

    return kernels


def net(k: int, dtype: torch.dtype) -> StackedMLP:
    widths = [[1000]] * k  # one hidden layer (fan-in 784: its rows fit one block), then the output
    return StackedMLP(
        784,
        10,
        widths=widths,
        seeds=range(k),
        input_rates=[0.2] * k,
        hidden_rates=[[0.5]] * k,
        output_rates=[0.0] * k,
        max_norms=[3.0] * k,
        dtype=dtype,
    )


@pytest.mark.parametrize("precision", [torch.float32, torch.bfloat16])
def test_the_constrained_update_is_one_persistent_pass_per_parameter(gpu_kernels, precision):
    model = net(2, precision)
    optimizer = adam = {"lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999]}
    optimizer = StackedOptimizer(model, "adam", [adam] * 2, compile=True)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    names = gpu_kernels(optimizer.step)
    assert names, "inductor wrote no Triton kernel"
    updates = [n for n in names if "lerp" in n]  # Adam's moment updates
    reductions = [n for n in updates if "norm" in n]
    # the hidden layer's weights: max-norm inside the update, each row kept in registers
    # (triton_per_); a looped reduction (triton_red_) would read p, its gradient and both moments twice
    assert len(reductions) == 1 and reductions[0].startswith("triton_per_"), names
    # the output layer's weights (no constraint): one element-wise pass
    assert any(n.startswith("triton_poi_") for n in updates), names


def test_the_forward_pass_generates_masks_inside_the_activation_kernels(gpu_kernels):
    model = net(2, torch.float32)
    x, y = torch.randn(2, 128, 784), torch.randint(0, 10, (2, 128))
    step = compiled(forward_losses)
    names = gpu_kernels(lambda: step(model, x, y, torch.ones_like(y, dtype=torch.bool)))
    masked = [n for n in names if "bitwise_xor" in n]  # the counter hash of the dropout masks
    assert len(masked) == 2, names  # the input's, and the hidden layer's with its activation
    assert sum("relu" in n for n in masked) == 1, names
    assert not any(n.startswith("triton_red_") and "bitwise_xor" in n for n in names), names
