"""A small vision transformer with every kind of dropout a modern network has, written the ways
torch, torchvision, timm and nanoGPT write them: dropout modules, nn.MultiheadAttention's rate
(inside torch's nn.TransformerEncoder), an LSTM's rate between its layers, torchvision's
StochasticDepth, a hand-written attention whose rate is a float passed to
scaled_dot_product_attention, a head whose rate is a float passed to F.dropout, and a rate kept
but never read."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth


class Attention(nn.Module):
    """Multi-head self-attention as timm and nanoGPT write it: its dropout is the float `attn_p`
    handed to scaled_dot_product_attention, with no module to find. droptune tunes it when
    `model.dropout.kinds` names it: {examples.mynets.transformer.Attention: attn_p}."""

    def __init__(self, dim: int, heads: int, attn_p: float) -> None:
        super().__init__()
        self.heads, self.attn_p = heads, attn_p
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.attn_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """A pre-norm residual block: attention, then an MLP with a dropout module; each branch is
    dropped whole for some examples (stochastic depth, torchvision's StochasticDepth)."""

    def __init__(self, dim: int, heads: int, attn_p: float, mlp_p: float, path_p: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attn_p)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(mlp_p), nn.Linear(2 * dim, dim)
        )
        self.drop_path = StochasticDepth(path_p, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchTransformer(nn.Module):
    """Patch tokens, `depth` hand-written blocks, `encoder_layers` layers of torch's
    nn.TransformerEncoder, then an LSTM of `lstm_layers` layers over the tokens (0: their mean)
    and a linear head. `drop_rate` is the head's dropout, read in forward (timm's way);
    `attention_dropout` is kept and never read (torchvision's VisionTransformer keeps one so)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        n_classes: int,
        patch: int = 7,
        dim: int = 32,
        heads: int = 4,
        depth: int = 2,
        encoder_layers: int = 1,
        lstm_layers: int = 2,
        p: float = 0.1,
        drop_rate: float = 0.1,
        attention_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        tokens = (height // patch) * (width // patch)
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.position = nn.Parameter(torch.randn(1, tokens, dim) / math.sqrt(dim))
        self.embed_drop = nn.Dropout(p)
        self.blocks = nn.Sequential(*(Block(dim, heads, p, p, p) for _ in range(depth)))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, p, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, encoder_layers, enable_nested_tensor=False)
        self.lstm = (
            nn.LSTM(dim, dim, lstm_layers, batch_first=True, dropout=p) if lstm_layers else None
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)
        self.drop_rate, self.attention_dropout = drop_rate, attention_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        tokens = self.encoder(self.blocks(self.embed_drop(tokens)))
        pooled = self.lstm(tokens)[0][:, -1] if self.lstm is not None else tokens.mean(1)
        return self.head(F.dropout(self.norm(pooled), self.drop_rate, self.training))
