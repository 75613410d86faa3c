"""PyTorch twins of two crossjax models, layer for layer, for speed comparisons.

- `TorchVAE`: crossjax's `vae` model at hidden=(512,), latent_dim=20 on 28x28x1 images
  (784-512-20 encoder with mean and log-variance heads, 20-512-784 decoder, Bernoulli
  likelihood, closed-form KL).
- `TorchCNN`: crossjax's `fusion_classifier` on `image` with the `cnn` encoder
  (3x3 conv 32 + ReLU + 2x2 average pool, 3x3 conv 64 + ReLU + pool, global mean,
  Dense 128), concat fusion (embedding + presence bit) and a Dense head to 10 classes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TorchVAE(nn.Module):
    def __init__(self, pixels: int = 784, hidden: int = 512, latent: int = 20):
        super().__init__()
        self.trunk = nn.Linear(pixels, hidden)
        self.mean = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.dec1 = nn.Linear(latent, hidden)
        self.dec2 = nn.Linear(hidden, pixels)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO, batch mean: x (B, 784) in [0, 1]."""
        h = F.relu(self.trunk(x))
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        logits = self.dec2(F.relu(self.dec1(z)))
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (torch.exp(logvar) + mean**2 - 1.0 - logvar).sum(-1)
        return (recon + kl).mean()


class TorchCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.dense = nn.Linear(64, 128)
        self.head = nn.Linear(128 + 1, classes)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Softmax cross-entropy, batch mean: x (B, 1, 28, 28), y (B,)."""
        h = F.avg_pool2d(F.relu(self.conv1(x)), 2)
        h = F.avg_pool2d(F.relu(self.conv2(h)), 2)
        emb = self.dense(h.mean(dim=(2, 3)))
        fused = torch.cat([emb, torch.ones_like(emb[:, :1])], dim=-1)  # presence bit
        return F.cross_entropy(self.head(fused), y)


class TorchCaptioner(nn.Module):
    """crossjax's `captioner` with attention=True (configs/shapes_captioner.py's model):
    a grid CNN (3x3 conv + ReLU per channel width, 2x2 average pool between them) whose
    cells with their (row, column) coordinates go through a Linear layer; an LSTM decoder
    that starts from tanh(Linear(grid mean)), reads [word embedding, grid mean] and, at
    every step, a dot-product attention context over the cells queried by its previous h;
    logits from [h, context]. Teacher-forced token cross-entropy over the words and the
    end (the first padding position), mean per caption, then over the batch.

    The attention read depends on the previous step's h, so the recurrence runs on
    `torch.nn.LSTMCell` one position at a time (as Show, Attend and Tell's PyTorch ports).
    """

    def __init__(
        self,
        vocab: int,
        channels: tuple[int, ...] = (32, 64, 128),
        features: int = 128,
        embed: int = 64,
        hidden: int = 256,
        attention: int = 64,
    ):
        super().__init__()
        widths = (3, *channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.cells = nn.Linear(channels[-1] + 2, features)
        self.embed = nn.Embedding(vocab, embed)
        self.start = nn.Parameter(torch.randn(embed))
        self.keys = nn.Linear(features, attention)
        self.query = nn.Linear(hidden, attention)
        self.init_h = nn.Linear(features, hidden)
        self.init_c = nn.Linear(features, hidden)
        self.cell = nn.LSTMCell(embed + 2 * features, hidden)
        self.project = nn.Linear(hidden + features, vocab)
        self.attention = attention

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) -> memory (B, N, features)."""
        for i, conv in enumerate(self.convs):
            if i:
                x = F.avg_pool2d(x, 2)
            x = F.relu(conv(x))
        b, _, h, w = x.shape
        rows, cols = torch.meshgrid(
            torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"
        )
        coords = torch.stack([rows, cols]).expand(b, 2, h, w)
        x = torch.cat([x, coords], dim=1).flatten(2).transpose(1, 2)
        return self.cells(x)

    def loss(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W), text (B, L) int64 (0 = padding), mask (B, L) bool."""
        memory = self.grid(x)
        vector = memory.mean(1)
        keys = self.keys(memory)
        h, c = torch.tanh(self.init_h(vector)), torch.tanh(self.init_c(vector))
        b, length = text.shape
        words = torch.cat([self.start.expand(b, 1, -1), self.embed(text[:, :-1])], dim=1)
        outputs = []
        for t in range(length):
            scores = torch.einsum("bna,ba->bn", keys, self.query(h)) / self.attention**0.5
            context = torch.einsum("bn,bnf->bf", torch.softmax(scores, -1), memory)
            h, c = self.cell(torch.cat([words[:, t], vector, context], -1), (h, c))
            outputs.append(torch.cat([h, context], -1))
        logits = self.project(torch.stack(outputs, 1))
        lengths = mask.sum(1, keepdim=True)
        weights = (mask | (torch.arange(length)[None] == lengths)).float()
        nll = F.cross_entropy(logits.transpose(1, 2), text * mask, reduction="none")
        return ((nll * weights).sum(1) / weights.sum(1).clamp(min=1.0)).mean()


def import_open_clip():
    """open_clip, imported with torchvision's PyPI wheel (built for CUDA torch) beside the
    CPU build of torch: its compiled ops do not load and registering their fake kernels
    fails, but no model here needs them."""
    import sys
    import types

    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("meta_stub"))
    import open_clip

    return open_clip
