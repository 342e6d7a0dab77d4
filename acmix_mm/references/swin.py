"""Swin-ACmix as the official code (LeapLabTHU/ACmix, Swin's code) computes it, with its
key layout (``layers.i.blocks.j.attn.qkv`` ...)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def window_partition(x, window):
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows, window, h, w):
    b = windows.shape[0] // (h * w // window**2)
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class ReferenceBlock(nn.Module):

    def __init__(self, dim, heads, resolution, shift, window=7):
        super().__init__()
        self.dim, self.heads, self.resolution = dim, heads, resolution
        if min(resolution) <= window:  # the official rule
            shift, window = False, min(resolution)
        self.window, self.shift = window, window // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.attn.relative_position_bias_table = nn.Parameter(
            torch.randn((2 * window - 1)**2, heads) * 0.5)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing='ij')).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.attn.register_buffer('relative_position_index',
                                  rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.attn.fc = nn.Conv2d(3 * heads, 9, 1)
        self.attn.dep_conv = nn.Conv2d(9 * dim // heads, dim, 3, padding=1,
                                       groups=dim // heads, bias=False)
        self.attn.rate1 = nn.Parameter(torch.rand(1))
        self.attn.rate2 = nn.Parameter(torch.rand(1))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.fc2 = nn.Linear(4 * dim, dim)
        mask = None
        if self.shift:
            h, w = resolution
            regions = torch.zeros(1, h, w, 1)
            cuts = (slice(0, -window), slice(-window, -self.shift), slice(-self.shift, None))
            for i, rows in enumerate(cuts):
                for j, cols in enumerate(cuts):
                    regions[:, rows, cols] = 3 * i + j
            regions = window_partition(regions, window).squeeze(-1)
            mask = (regions[:, None] - regions[:, :, None]).ne(0).float() * -100.0
        self.register_buffer('attn_mask', mask)

    def attention(self, x):
        b, h, w, c = x.shape
        heads, window, attn = self.heads, self.window, self.attn
        qkv = attn.qkv(x)
        pieces = qkv.reshape(b, h * w, 3 * heads, -1).permute(0, 2, 1, 3)
        f_conv = attn.fc(pieces).permute(0, 3, 1, 2).reshape(b, -1, h, w)
        out_conv = attn.dep_conv(f_conv).permute(0, 2, 3, 1)
        windows = window_partition(qkv, window)
        n = window * window
        q, k, v = windows.reshape(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        logits = (q * (c // heads)**-0.5) @ k.transpose(-2, -1)
        bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
        logits = logits + bias.view(n, n, -1).permute(2, 0, 1)
        if self.attn_mask is not None:
            nw = self.attn_mask.shape[0]
            logits = logits.view(-1, nw, heads, n, n) + self.attn_mask[None, :, None]
            logits = logits.view(-1, heads, n, n)
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
        out = window_reverse(attn.proj(out), window, h, w)
        return attn.rate1 * out + attn.rate2 * out_conv

    def forward(self, x):
        h, w = self.resolution
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = self.attention(y)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class ReferenceSwinACmix(nn.Module):

    def __init__(self, img_size=224, embed_dim=32, depths=(2, 2, 2, 2), heads=(2, 4, 4, 8)):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, 4, 4)
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        self.layers = nn.ModuleList()
        resolution, dim = img_size // 4, embed_dim
        for i, depth in enumerate(depths):
            layer = nn.Module()
            layer.blocks = nn.ModuleList([
                ReferenceBlock(dim, heads[i], (resolution, resolution), j % 2 == 1)
                for j in range(depth)])
            if i < len(depths) - 1:
                layer.downsample = nn.Module()
                layer.downsample.norm = nn.LayerNorm(4 * dim)
                layer.downsample.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
                resolution, dim = resolution // 2, dim * 2
            self.layers.append(layer)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1000)
        for p in self.parameters():  # norms away from identity
            if p.dim() == 1:
                nn.init.normal_(p, 0.5, 0.2)

    def forward(self, x):
        """Each stage's output before its patch merging; the last one normed."""
        x = self.patch_embed.norm(self.patch_embed.proj(x).flatten(2).transpose(1, 2))
        outs = []
        for layer in self.layers:
            for block in layer.blocks:
                x = block(x)
            outs.append(x)
            if hasattr(layer, 'downsample'):
                b, n, c = x.shape
                side = int(n**0.5)
                g = x.view(b, side, side, c)
                g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2],
                               g[:, 1::2, 1::2]], -1).view(b, -1, 4 * c)
                x = layer.downsample.reduction(layer.downsample.norm(g))
        outs[-1] = self.norm(outs[-1])
        return outs
