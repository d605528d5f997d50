"""TinyViT image encoder (Wu et al., ECCV 2022) in the variant used by LiteMedSAM.

Parameter names follow the LiteMedSAM checkpoint (``image_encoder.*`` keys with the prefix
stripped) so that ``load_state_dict(..., strict=True)`` works. The implementation is
inference-oriented: no stochastic depth, no gradient checkpointing, and after loading the
weights :func:`prepare_for_inference` folds every BatchNorm into the preceding convolution
and caches the per-window attention-bias tables.

Shapes are taken from the tensor at run time, so any input whose height and width are
multiples of 4 works (square or not). The 2D feature maps of stages 1-3 are kept as
(B, H, W, C) tensors, which is what LayerNorm / Linear want; the depthwise convolutions see
them through a free permute (a channels-last NCHW view).

Architecture (LiteMedSAM): input 3 x H x W in [0, 1]
  patch_embed: 1x1 conv-BN 3->32, GELU, 1x1 conv-BN 32->64          (H, W)
  layers.0:    2 MBConv(64), patch merging 64->128 stride 2          (H/2)
  layers.1:    2 TinyViT blocks(128, 4 heads, window 7), merge ->160 (H/4)
  layers.2:    6 TinyViT blocks(160, 5 heads, window 14), merge ->320 stride 1
  layers.3:    2 TinyViT blocks(320, 10 heads, window 7)
  neck:        1x1 conv 320->256, LayerNorm2d, 3x3 conv 256->256, LayerNorm2d
Output 256 x H/4 x W/4.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TinyViT", "build_litemedsam_encoder", "prepare_for_inference", "fold_batchnorm"]


def _gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in place: the activations it is applied to are fresh temporaries, and
    at full input resolution (stage 0) this saves one 256-channel map per slice."""
    return torch.ops.aten.gelu_(x)


class ConvBN(nn.Module):
    """Bias-free convolution followed by BatchNorm (child names ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.c = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))

    @torch.no_grad()
    def folded(self) -> nn.Conv2d:
        """An equivalent single convolution with the (eval-mode) BatchNorm folded in."""
        c, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
                         groups=c.groups, bias=True).to(c.weight.device, c.weight.dtype)
        conv.weight.copy_(c.weight * scale.view(-1, 1, 1, 1))
        conv.bias.copy_(bn.bias - bn.running_mean * scale)
        return conv


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand: int = 4):
        super().__init__()
        hidden = dim * expand
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _gelu_(self.conv1(x))
        y = _gelu_(self.conv2(y))
        y = self.conv3(y)
        y += x
        return _gelu_(y)


class PatchMerging(nn.Module):
    """1x1 conv, depthwise 3x3 (stride 2, or 1 for the 320-channel stage), 1x1 conv."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        stride = 1 if out_dim in (320, 448, 576) else 2
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C', H', W')."""
        x = _gelu_(self.conv1(x))
        x = _gelu_(self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows, with a LayerNorm in front.

    Each head has one learned bias per absolute offset (|dy|, |dx|) between two positions
    of a window; offset (dy, dx) is stored at column ``dy * window + dx`` of
    ``attention_biases``.
    """

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.window = window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ys, xs = ys.reshape(-1), xs.reshape(-1)
        index = (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()
        self.register_buffer("bias_index", index, persistent=False)
        self.register_buffer("bias_cache", None, persistent=False)

    def bias_table(self) -> torch.Tensor:
        """(heads, N, N) additive attention bias; cached by :meth:`freeze`."""
        if self.bias_cache is not None and not self.training:
            return self.bias_cache
        return self.attention_biases[:, self.bias_index]

    @torch.no_grad()
    def freeze(self) -> None:
        self.bias_cache = self.attention_biases[:, self.bias_index].detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B', N, C) windows of N = window**2 tokens -> same shape."""
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x))
        # per head the channels are laid out as [q | k | v]
        q, k, v = qkv.view(b, n, self.heads, 3, self.head_dim).permute(3, 0, 2, 1, 4).unbind(0)
        h, d = self.heads, self.head_dim
        bias = self.bias_table().to(q.dtype).expand(b, h, n, n).reshape(b * h, n, n)
        # explicit attention: on CPU this is ~1.5x faster than scaled_dot_product_attention
        # with a float mask, which falls back to its generic path
        scores = torch.baddbmm(bias, q.reshape(b * h, n, d), k.reshape(b * h, n, d).transpose(1, 2),
                               alpha=d ** -0.5)
        out = torch.bmm(scores.softmax(dim=-1), v.reshape(b * h, n, d))
        return self.proj(out.view(b, h, n, d).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(_gelu_(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (+residual), depthwise 3x3 conv-BN, MLP (+residual)."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: int = 4):
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.mlp = Mlp(dim, mlp_ratio)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        pad_b, pad_r = (-h) % ws, (-w) % ws
        if pad_b or pad_r:
            # zero tokens are appended bottom/right; they are attended to, as in training
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        win = x.reshape(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        win = self.attn(win)
        x = win.reshape(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        if pad_b or pad_r:
            x = x[:, :h, :w]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        x = x + self._windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, out_dim: int, expand: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim, expand) for _ in range(depth)])
        self.downsample = PatchMerging(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H', W', C')."""
        for block in self.blocks:
            x = block(x)
        return self.downsample(x).permute(0, 2, 3, 1)


class AttentionStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, out_dim: int | None):
        super().__init__()
        self.blocks = nn.ModuleList([TinyViTBlock(dim, heads, window) for _ in range(depth)])
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C')."""
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(cin, dim // 2), nn.GELU(), ConvBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class TinyViT(nn.Module):
    """TinyViT backbone + SAM-style neck. ``forward``: (B, 3, H, W) -> (B, 256, H/4, W/4)."""

    def __init__(self, in_chans: int = 3,
                 embed_dims: Sequence[int] = (64, 128, 160, 320),
                 depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (2, 4, 5, 10),
                 window_sizes: Sequence[int] = (7, 7, 14, 7),
                 out_chans: int = 256):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        last = len(embed_dims) - 1
        layers: List[nn.Module] = [ConvStage(embed_dims[0], depths[0], embed_dims[1])]
        for i in range(1, len(embed_dims)):
            out_dim = embed_dims[i + 1] if i < last else None
            layers.append(AttentionStage(embed_dims[i], depths[i], num_heads[i], window_sizes[i], out_dim))
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x.permute(0, 3, 1, 2))


def build_litemedsam_encoder() -> TinyViT:
    """TinyViT with LiteMedSAM's hyper-parameters (random weights)."""
    return TinyViT(embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2),
                   num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7))


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every :class:`ConvBN` below ``module`` by its folded convolution (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, ConvBN):
            setattr(module, name, child.folded())
        else:
            fold_batchnorm(child)
    return module


def prepare_for_inference(model: TinyViT, fold_bn: bool = True) -> TinyViT:
    """Eval mode, no gradients, BatchNorm folded, attention-bias tables cached."""
    model.eval()
    if fold_bn:
        fold_batchnorm(model)
    for m in model.modules():
        if isinstance(m, WindowAttention):
            m.freeze()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
