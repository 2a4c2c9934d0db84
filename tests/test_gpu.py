"""On a CUDA machine: training runs on the GPU with the data resident there (skipped elsewhere)."""

import lightning as L
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def test_auto_accelerator_trains_on_the_gpu_with_resident_data(make_cfg):
    from droptune.runner import fit, load_data, splits

    cfg = make_cfg(
        "trainer.accelerator=auto", "trainer.max_epochs=3", "model.width=64", "optim=adam"
    )
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    devices = set()

    class BatchDevice(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            devices.update({batch[0].device.type, next(pl_module.parameters()).device.type})

    result = fit(cfg, arrays, train_index, val_index, callbacks=[BatchDevice()])
    assert result.device.startswith("cuda")
    assert devices == {"cuda"}  # batches come from tensors resident on the GPU
    assert result.history[-1]["val/acc"] > 0.5
