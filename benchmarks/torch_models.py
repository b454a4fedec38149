"""The PyTorch side of the training benchmarks: the toolkit's MNIST models, layer for
layer, and a plain CPU training loop.

Imported only when PyTorch is installed (`common.import_torch()` is not `None`).

The models match `build_classifier("mnist_mlp" | "mnist_cnn", 10, weights=None)`:
`x / 255 -> backbone -> Dropout(0.2) -> Dense(10)`. Keras ends in softmax and takes the
cross-entropy of the probabilities; here the last layer gives logits and
`nn.CrossEntropyLoss` applies log-softmax (the same function, the usual PyTorch way).

The loop is the textbook one: tensors built once, a `randperm` shuffle each epoch,
`zero_grad / forward / loss / backward / step` per batch of 128 (the last batch is
partial, as in Keras `fit` on arrays), Adam(lr=1e-3). Like Keras `fit`, it also keeps
the running mean loss and accuracy of the epoch (accumulated as tensors, read once an
epoch).
"""

import os
import time

import numpy as np
import torch
from torch import nn


def set_threads():
    """All cores for intra-op work, as a PyTorch user on this machine would."""
    torch.set_num_threads(os.cpu_count() or 1)


class MnistMLP(nn.Module):
    """`mnist_mlp`: Flatten -> Dense(128, relu) -> Dropout(0.2) -> Dense(10)."""

    def __init__(self, num_classes=10, units=128):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, units)
        self.dropout = nn.Dropout(0.2)
        self.predictions = nn.Linear(units, num_classes)

    def forward(self, x):
        x = torch.flatten(x * (1.0 / 255.0), 1)
        x = torch.relu(self.fc1(x))
        return self.predictions(self.dropout(x))


class MnistCNN(nn.Module):
    """`mnist_cnn`: Conv(64, 3, relu) -> MaxPool(2) -> Conv(128, 3, relu) -> MaxPool(2)
    -> Flatten -> Dense(128, relu) -> Dropout(0.2) -> Dense(10) (NCHW, "valid" convs)."""

    def __init__(self, num_classes=10, units=128, filters=(64, 128)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters[0], 3)
        self.conv2 = nn.Conv2d(filters[0], filters[1], 3)
        self.fc1 = nn.Linear(filters[1] * 5 * 5, units)
        self.dropout = nn.Dropout(0.2)
        self.predictions = nn.Linear(units, num_classes)

    def forward(self, x):
        x = x * (1.0 / 255.0)
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.predictions(self.dropout(x))


class Loop:
    """A plain PyTorch training loop over in-memory tensors.

    Args:
        model: `nn.Module`.
        x: float32 array (N, 28, 28, 1) of 0-255 pixels (NHWC, as the toolkit loads them).
        y: int array (N,).
        batch_size: int.
        channels_last: bool. Store the images and the model in `torch.channels_last`
            memory format (a CNN option; the tensors stay NCHW-shaped).
        bf16: bool. Run forward and loss under `torch.autocast("cpu", torch.bfloat16)`
            (weights and optimizer stay float32).
        seed: int.
    """

    def __init__(self, model, x, y, *, batch_size=128, channels_last=False, bf16=False, seed=0):
        torch.manual_seed(seed)
        self.model = model
        images = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.x = images
        self.y = torch.from_numpy(np.asarray(y, np.int64))
        self.batch_size = batch_size
        self.bf16 = bf16
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss_fn = nn.CrossEntropyLoss()
        self.history = []

    def epoch(self):
        """One epoch; appends `(mean loss, accuracy)` to `history`."""
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        model.train()
        n = len(self.x)
        order = torch.randperm(n)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            xb, yb = self.x[index], self.y[index]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                logits = model(xb)
                loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach().float() * len(yb)
                correct += (logits.argmax(1) == yb).sum()
        self.history.append((loss_sum.item() / n, correct.item() / n))

    def run(self, epochs):
        for _ in range(epochs):
            self.epoch()

    def timed(self, epochs, threads=None):
        """One warm-up epoch, then `epochs` timed ones: their seconds.

        `threads` sets `torch.set_num_threads` first (the loop is run at several
        thread counts side by side: on a busy machine OpenMP's spinning threads can
        make 2 threads far slower than 1)."""
        if threads is not None:
            torch.set_num_threads(threads)
        self.epoch()
        start = time.perf_counter()
        self.run(epochs)
        return time.perf_counter() - start
