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
