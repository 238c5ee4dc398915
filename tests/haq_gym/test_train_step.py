"""The fast training-step paths against the plain one: same loss, logits and gradients on the same batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from haq_gym.quant import apply_policy, calibrate, wrap_model
from haq_gym.quant.families import set_quantizer_family
from haq_gym.train_step import MODE_ENV, FastPathWarning, TrainStep, resolve_mode

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_lsq_model(device: str = "cpu", policy=((8, -1), (3, 4), (4, 3))) -> tuple[nn.Module, list]:
    """Three quantized layers (a conv with BatchNorm, a depthwise conv, a classifier) with LSQ quantizers."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    layers = [m for _, m in wrap_model(model)]
    set_quantizer_family(layers, "lsq")
    apply_policy(layers, [list(p) for p in policy])
    model.to(device)
    calibrate(model, layers, torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(device))
    model.train()
    return model, layers


def batches(n: int, device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [
        (torch.randn(16, 3, 8, 8, generator=gen).to(device), torch.randint(0, 4, (16,), generator=gen).to(device))
        for _ in range(n)
    ]


def train(model: nn.Module, mode: str, data, rtol: float = 1e-5) -> tuple[list, list]:
    """SGD steps through ``mode``; returns per-step (loss, logits) and (name, grad) lists."""
    return train_with(TrainStep(model, nn.functional.cross_entropy, mode=mode), model, data)


def train_with(step: TrainStep, model: nn.Module, data) -> tuple[list, list]:
    """SGD steps through an existing ``step`` of ``model`` (so a test can inspect it afterwards)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    outs, grads = [], []
    for x, y in data:
        loss, logits = step(x, y)
        outs.append((loss.clone(), logits.clone()))
        grads.append([(n, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()])
        opt.step()
    return outs, grads


def assert_same_training(a: tuple[list, list], b: tuple[list, list], rtol: float, atol: float) -> None:
    for (la, oa), (lb, ob) in zip(a[0], b[0], strict=True):
        torch.testing.assert_close(la, lb, rtol=rtol, atol=atol)
        torch.testing.assert_close(oa, ob, rtol=rtol, atol=atol)
    for ga, gb in zip(a[1], b[1], strict=True):
        for (name, x), (_, y) in zip(ga, gb, strict=True):
            assert (x is None) == (y is None), name
            if x is not None:
                torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


def test_modes_resolve_and_bad_names_are_rejected(monkeypatch) -> None:
    monkeypatch.delenv(MODE_ENV, raising=False)
    assert resolve_mode(None, torch.device("cpu")) == "plain"
    assert resolve_mode(None, torch.device("cuda")) == "graph"
    monkeypatch.setenv(MODE_ENV, "plain")
    assert resolve_mode(None, torch.device("cuda")) == "plain"
    assert resolve_mode("compile", torch.device("cuda")) == "compile"
    assert resolve_mode("graph-compile", torch.device("cuda")) == "graph-compile"
    with pytest.raises(
        ValueError, match="train step mode must be one of auto, graph, graph-compile, compile, plain; got 'fast'"
    ):
        resolve_mode("fast", torch.device("cpu"))
    monkeypatch.setenv(MODE_ENV, "graphs")
    with pytest.raises(ValueError, match=f"{MODE_ENV} must be one of"):
        resolve_mode(None, torch.device("cpu"))


@pytest.mark.parametrize("mode", ["graph", "graph-compile"])
def test_graph_without_cuda_warns_once_and_trains_like_plain(mode) -> None:
    data = batches(2)
    reference = train(tiny_lsq_model()[0], "plain", data)
    with pytest.warns(
        FastPathWarning, match=f"'{mode}' needs a CUDA device, the model is on cpu; using the plain path"
    ):
        fallback = train(tiny_lsq_model()[0], mode, data)
    assert_same_training(reference, fallback, rtol=0, atol=0)


def test_compiled_step_matches_plain_step_on_cpu() -> None:
    """torch.compile (Inductor) of forward + loss, LSQ's fused autograd function included, backward too.

    The batch dimension is traced as a size variable (a ragged last batch needs no new trace unless Inductor
    specialised to a range of sizes); no step breaks the graph.
    """
    full = batches(3)
    data = [*full, (full[0][0][:5], full[0][1][:5])]
    reference = train(tiny_lsq_model()[0], "plain", data)
    model, _ = tiny_lsq_model()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    fast = train(model, "compile", data)
    assert_same_training(reference, fast, rtol=1e-4, atol=1e-6)
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2  # the full batch's, maybe the ragged one's


@cuda
def test_cuda_graph_step_matches_plain_and_recaptures_when_bits_change() -> None:
    data = batches(5, "cuda")
    reference = train(tiny_lsq_model("cuda")[0], "plain", data)
    model, layers = tiny_lsq_model("cuda")
    step = TrainStep(model, nn.functional.cross_entropy, mode="graph")
    outs, grads = train_with(step, model, data)
    assert step.captures == 1  # one warm-up call initialised the steps, one configuration warmed up, then captured
    assert_same_training(reference, (outs, grads), rtol=1e-5, atol=1e-6)

    # New bit widths: the old graph must not be replayed (it baked in the old integer range).
    plain_model, plain_layers = tiny_lsq_model("cuda")
    plain_model.load_state_dict(model.state_dict())  # weights, steps, BatchNorm statistics, quantizer flags
    for layer_set in (layers, plain_layers):
        apply_policy(layer_set, [[8, -1], [2, 2], [3, 3]])
    for x, y in data[:4]:
        loss, logits = step(x, y)
        plain_loss, plain_logits = TrainStep(plain_model, nn.functional.cross_entropy, mode="plain")(x, y)
        torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-6)
        for p, q in zip(model.parameters(), plain_model.parameters(), strict=True):
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    assert step.captures == 2


@cuda
def test_compiled_cuda_graph_step_matches_plain() -> None:
    """graph-compile: the Inductor-compiled step captured in TrainStep's CUDA graph, same training as plain."""
    data = batches(5, "cuda")
    reference = train(tiny_lsq_model("cuda")[0], "plain", data)
    model, _ = tiny_lsq_model("cuda")
    step = TrainStep(model, nn.functional.cross_entropy, mode="graph-compile")
    outs, grads = train_with(step, model, data)
    assert step.mode == "graph-compile" and step.captures == 1
    assert_same_training(reference, (outs, grads), rtol=1e-4, atol=1e-6)


@cuda
def test_cuda_graph_ragged_last_batch_keeps_both_graphs() -> None:
    model, _ = tiny_lsq_model("cuda")
    step = TrainStep(model, nn.functional.cross_entropy, mode="graph")
    full, ragged = batches(1, "cuda")[0], tuple(t[:5] for t in batches(1, "cuda")[0])
    for _ in range(3):  # three "epochs" of one full and one ragged batch
        for x, y in (full, ragged, full, ragged):
            step(x, y)
    # Call 1 initialises the weight steps, so the full batch's configuration is new at call 3;
    # each configuration runs plainly once, then is captured once and replayed from then on.
    assert step.captures == 2
