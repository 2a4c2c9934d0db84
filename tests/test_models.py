"""Placement builds the layer order it promises; max-norm holds after steps; eval turns dropout off."""

import pytest
import torch
from torch import nn

from droptune.lit import DropoutClassifier, Optim
from droptune.models import CNN, MLP, Dropout


def kinds(module: nn.Sequential) -> list[str]:
    return [type(layer).__name__ for layer in module]


def test_placement_after_activation():
    net = MLP(10, 3, [8, 6], dropout=Dropout(input=0.2, hidden=0.5))
    assert kinds(net.net) == [
        "Flatten", "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout",
        "Identity", "Linear",
    ]  # fmt: skip


def test_placement_before_activation_with_output_site():
    net = MLP(10, 3, [8], "tanh", Dropout(hidden=0.5, output=0.1, placement="before"))
    assert kinds(net.net) == [
        "Flatten",
        "Identity",
        "Linear",
        "Dropout",
        "Tanh",
        "Dropout",
        "Linear",
    ]
    assert net.net[5].p == 0.1


def test_per_layer_hidden_rates_in_order():
    net = MLP(10, 3, [8, 6, 4], dropout=Dropout(hidden=[0.1, 0.2, 0.3]))
    assert [m.p for m in net.net if isinstance(m, nn.Dropout)] == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="2 rates for 3 layers"):
        MLP(10, 3, [8, 6, 4], dropout=Dropout(hidden=[0.1, 0.2]))


@pytest.mark.parametrize("mode, cls", [("element", nn.Dropout), ("channel", nn.Dropout2d)])
def test_cnn_conv_dropout_mode(mode, cls):
    net = CNN((1, 28, 28), 10, [4, 8], dropout=Dropout(conv=0.25, conv_mode=mode, hidden=0.5))
    conv_sites = [m for m in net.features if isinstance(m, nn.Dropout | nn.Dropout2d)]
    assert [type(m) for m in conv_sites] == [cls, cls]
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("variant", ["inverted", "classic", "gaussian", "alpha"])
def test_eval_mode_turns_dropout_off(variant):
    torch.manual_seed(0)
    drop = Dropout(input=0.3, hidden=0.5, output=0.2, variant=variant)
    net = MLP(20, 4, [32, 32], "selu", drop)
    x = torch.randn(16, 20)
    net.eval()
    first, second = net(x), net(x)
    torch.testing.assert_close(first, second)
    net.train()
    assert not torch.allclose(net(x), net(x))
    if variant in ("inverted", "gaussian", "alpha"):
        plain = MLP(20, 4, [32, 32], "selu")
        plain.load_state_dict(net.state_dict())
        torch.testing.assert_close(plain.eval()(x), first)


def _max_row_norm(net: MLP) -> float:
    return max(layer.weight.norm(dim=1).max().item() for layer in net.hidden_linears)


@pytest.mark.parametrize("max_norm", [None, 0.5])
def test_max_norm_holds_after_every_optimizer_step(max_norm):
    import lightning as L

    from droptune.data.module import IndexBatches

    torch.manual_seed(0)
    x, y = torch.randn(256, 20), torch.randint(0, 4, (256,))
    net = MLP(20, 4, [64, 64], dropout=Dropout(hidden=0.2), max_norm=max_norm)
    module = DropoutClassifier(net, Optim(name="sgd", lr=2.0, momentum=0.9))
    norms = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            norms.append(_max_row_norm(net))

    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Probe()],
        limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, IndexBatches(x, y, 32, torch.Generator().manual_seed(0)))
    assert len(norms) == 16
    if max_norm is None:  # the same training without the constraint does exceed it
        assert max(norms) > 0.5
    else:
        assert max(norms) <= max_norm + 1e-5


def test_cnn_max_norm_covers_filters_and_head():
    net = CNN((1, 8, 8), 3, [4], head_widths=[5], max_norm=0.1)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(100)
    net.apply_max_norm()
    assert net.convs[0].weight.flatten(1).norm(dim=1).max() <= 0.1 + 1e-6
    assert net.head.hidden_linears[0].weight.norm(dim=1).max() <= 0.1 + 1e-6


def test_init_std_draws_small_normal_weights():
    torch.manual_seed(0)
    net = MLP(784, 10, [256, 256], init_std=0.01)
    std = net.hidden_linears[0].weight.std().item()
    assert abs(std - 0.01) < 0.0005
    assert net.hidden_linears[0].bias.abs().max() == 0
