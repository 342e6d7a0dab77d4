"""PVT v1 as the official code (whai362/PVT) computes it, with its key layout."""
import torch
import torch.nn as nn


class ReferencePVT(nn.Module):
    """PVT v1 written as the official detection code computes it, with the official
    key layout (patch_embed{i}, pos_embed{i}, block{i}.{j}.attn.q/kv/sr/norm/proj, ...),
    plus the class token, final norm and head that the ImageNet checkpoints carry."""

    class Attention(nn.Module):

        def __init__(self, dim, heads, sr_ratio):
            super().__init__()
            self.heads, self.sr_ratio = heads, sr_ratio
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * dim)
            self.proj = nn.Linear(dim, dim)
            if sr_ratio > 1:
                self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
                self.norm = nn.LayerNorm(dim)

        def forward(self, x, height, width):
            batch, length, dim = x.shape
            q = self.q(x).reshape(batch, length, self.heads, -1).transpose(1, 2)
            if self.sr_ratio > 1:
                x = self.sr(x.transpose(1, 2).reshape(batch, dim, height, width))
                x = self.norm(x.flatten(2).transpose(1, 2))
            kv = self.kv(x).reshape(batch, -1, 2, self.heads, dim // self.heads)
            k, v = kv.permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-2, -1) * (dim // self.heads)**-0.5).softmax(-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(batch, length, dim))

    def __init__(self, depths=(2, 2, 2, 2)):
        super().__init__()
        dims, heads, ratios, srs = [64, 128, 320, 512], [1, 2, 5, 8], [8, 8, 4, 4], \
            [8, 4, 2, 1]
        channels = 3
        for i in range(4):
            patch = 4 if i == 0 else 2
            embed = nn.Module()
            embed.proj = nn.Conv2d(channels, dims[i], patch, patch)
            embed.norm = nn.LayerNorm(dims[i])
            setattr(self, f'patch_embed{i + 1}', embed)
            tokens = (56 // 2**i)**2 + (1 if i == 3 else 0)
            setattr(self, f'pos_embed{i + 1}', nn.Parameter(torch.randn(1, tokens, dims[i])))
            blocks = nn.ModuleList()
            for _ in range(depths[i]):
                block = nn.Module()
                block.norm1 = nn.LayerNorm(dims[i], eps=1e-6)
                block.attn = self.Attention(dims[i], heads[i], srs[i])
                block.norm2 = nn.LayerNorm(dims[i], eps=1e-6)
                block.mlp = nn.Module()
                block.mlp.fc1 = nn.Linear(dims[i], dims[i] * ratios[i])
                block.mlp.fc2 = nn.Linear(dims[i] * ratios[i], dims[i])
                blocks.append(block)
            setattr(self, f'block{i + 1}', blocks)
            channels = dims[i]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 512))
        self.norm = nn.LayerNorm(512)
        self.head = nn.Linear(512, 1000)
        self.untame()

    @torch.no_grad()
    def untame(self):
        """Weights that expose scale and eps errors: norm gains around 1 and shifts
        around 0 (not a near-zero gain that hides a norm), sharp attention (q and k
        scaled up, so softmax is far from uniform), position embeddings that matter,
        and a spatial reduction whose output has a small variance (where the norm's
        eps shows)."""
        for name, p in self.named_parameters():
            if 'norm' in name and name.endswith('weight'):
                p.uniform_(0.7, 1.3)
            elif p.dim() == 1:
                p.normal_(0, 0.3)
            elif name.endswith(('attn.q.weight', 'attn.kv.weight')):
                p.mul_(4)
            elif name.endswith('attn.sr.weight'):
                p.mul_(0.02)
            elif 'pos_embed' in name:
                p.normal_(0, 0.5)

    @staticmethod
    def resized(pos, height, width):
        # The official detection PVT resizes the 224-pixel embeddings bilinearly.
        side = int(pos.shape[1]**0.5)
        grid = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid, size=(height, width), mode='bilinear')
        return grid.reshape(1, -1, height * width).permute(0, 2, 1)

    def forward(self, x):
        outs = []
        for i in range(1, 5):
            embed = getattr(self, f'patch_embed{i}')
            x = embed.proj(x)
            height, width = x.shape[-2:]
            x = embed.norm(x.flatten(2).transpose(1, 2))
            pos = getattr(self, f'pos_embed{i}')
            x = x + self.resized(pos[:, 1:] if i == 4 else pos, height, width)
            for block in getattr(self, f'block{i}'):
                x = x + block.attn(block.norm1(x), height, width)
                h = block.norm2(x)
                x = x + block.mlp.fc2(nn.functional.gelu(block.mlp.fc1(h)))
            x = x.transpose(1, 2).reshape(x.shape[0], -1, height, width)
            outs.append(x)
        return outs
