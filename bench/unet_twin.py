#!/usr/bin/python3
"""The image U-Net of flowmatch (include/flowmatch/models/unet.h) written in plain PyTorch, for timing
the same network side by side (issue "Performance II": image training and sampling).

The twin first loads flowmatch's own weights and checks that it gives flowmatch's outputs; only then
are its timings printed:

    flowmatch bench --case unet-twin --save-weights /tmp/unet.pt        # weights + a probe (x, t, labels, v)
    /usr/bin/python3 bench/unet_twin.py --weights /tmp/unet.pt --threads 1 > twin.json
    flowmatch bench --case unet-train --case unet-sample --threads 1     # the same work in flowmatch

The work is that of `flowmatch bench --case unet-train --case unet-sample` (src/benchmarks.cpp): the
default U-Net (base 32 channels, levels x1 x2 x2, one residual block per level, 4-head attention at 7x7,
10 classes + "no class"); training steps of batch 64 on random 28x28 images (straight path, independent
pairs, label dropout 0.1, Adam lr 5e-4, EMA 0.999 of the weights); guided sampling (w = 2: one network
call on the doubled batch [x; x] with labels [c; none]) of 500 images with midpoint, 10 steps.
Prints one JSON object: max_abs_output_difference (against flowmatch's probe output), train_images_per_s,
sample_images_per_s, network_images_per_s, and the settings.
"""
import argparse, json, math, time

import torch
import torch.nn.functional as F


class ResidualBlock(torch.nn.Module):
    def __init__(self, cin, cout, emb, groups):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(groups, cin)
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, padding=1)
        self.embedding_projection = torch.nn.Linear(emb, cout)
        self.norm2 = torch.nn.GroupNorm(groups, cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = torch.nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embedding_projection(F.silu(e))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class SelfAttention(torch.nn.Module):
    def __init__(self, c, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm = torch.nn.GroupNorm(groups, c)
        self.qkv = torch.nn.Conv2d(c, 3 * c, 1)
        self.projection = torch.nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        d = c // self.heads
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, d, h * w)
        q, k, v = (qkv[:, i].reshape(b * self.heads, d, h * w).transpose(1, 2) for i in range(3))
        a = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(d), -1)
        out = torch.bmm(a, v).transpose(1, 2).reshape(b, c, h, w)
        return x + self.projection(out)


class UNet(torch.nn.Module):
    def __init__(self, in_channels=1, size=28, base=32, mult=(1, 2, 2), blocks=1, heads=4, classes=10, groups=8):
        super().__init__()
        self.c, self.s, self.classes, self.levels, self.blocks = in_channels, size, classes, len(mult), blocks
        emb, half = 4 * base, max(1, base // 2)
        self.register_buffer("frequencies", torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / max(1, half - 1))))
        self.time_hidden = torch.nn.Linear(2 * half, emb)
        self.time_output = torch.nn.Linear(emb, emb)
        self.class_embedding = torch.nn.Embedding(classes + 1, emb)
        self.input = torch.nn.Conv2d(in_channels, base, 3, padding=1)
        self.down_blocks, self.down_attention, self.downsamples = torch.nn.ModuleList(), torch.nn.ModuleList(), torch.nn.ModuleList()
        skips, ch = [base], base
        for level, m in enumerate(mult):
            for _ in range(blocks):
                self.down_blocks.append(ResidualBlock(ch, base * m, emb, groups))
                ch = base * m
                if level == len(mult) - 1:
                    self.down_attention.append(SelfAttention(ch, heads, groups))
                skips.append(ch)
            if level != len(mult) - 1:
                self.downsamples.append(torch.nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.middle = torch.nn.ModuleList([ResidualBlock(ch, ch, emb, groups), SelfAttention(ch, heads, groups), ResidualBlock(ch, ch, emb, groups)])
        self.up_blocks, self.up_attention, self.upsamples = torch.nn.ModuleList(), torch.nn.ModuleList(), torch.nn.ModuleList()
        for level in reversed(range(len(mult))):
            for _ in range(blocks + 1):
                self.up_blocks.append(ResidualBlock(ch + skips.pop(), base * mult[level], emb, groups))
                ch = base * mult[level]
                if level == len(mult) - 1:
                    self.up_attention.append(SelfAttention(ch, heads, groups))
            if level != 0:
                self.upsamples.append(torch.nn.Conv2d(ch, ch, 3, padding=1))
        self.output_norm = torch.nn.GroupNorm(groups, ch)
        self.output = torch.nn.Conv2d(ch, in_channels, 3, padding=1)

    def forward(self, x, t, labels):
        b = x.shape[0]
        h = x.reshape(b, self.c, self.s, self.s)
        args = t.reshape(-1, 1).expand(b, 1) * 1000.0 * self.frequencies[None]
        e = self.time_output(F.silu(self.time_hidden(torch.cat([torch.sin(args), torch.cos(args)], 1))))
        e = e + self.class_embedding(torch.where(labels < 0, torch.full_like(labels, self.classes), labels))
        h = self.input(h)
        skips, block, att = [h], 0, 0
        for level in range(self.levels):
            for _ in range(self.blocks):
                h = self.down_blocks[block](h, e)
                block += 1
                if level == self.levels - 1:
                    h = self.down_attention[att](h)
                    att += 1
                skips.append(h)
            if level != self.levels - 1:
                h = self.downsamples[level](h)
                skips.append(h)
        h = self.middle[2](self.middle[1](self.middle[0](h, e)), e)
        block, att, up = 0, 0, 0
        for level in reversed(range(self.levels)):
            for _ in range(self.blocks + 1):
                h = self.up_blocks[block](torch.cat([h, skips.pop()], 1), e)
                block += 1
                if level == self.levels - 1:
                    h = self.up_attention[att](h)
                    att += 1
            if level != 0:
                h = self.upsamples[up](F.interpolate(h, scale_factor=2, mode="nearest"))
                up += 1
        return self.output(F.silu(self.output_norm(h))).reshape(x.shape)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True, help="flowmatch bench --case unet-twin --save-weights FILE")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--autocast", default="off", choices=["off", "bf16"],
                   help="training: the forward pass and loss under torch.autocast to bfloat16 (flowmatch bench --autocast-bf16)")
    p.add_argument("--read-loss", action="store_true",
                   help="training: read each step's loss back to the host (loss.item()), as flowmatch's trainer does")
    p.add_argument("--device", default="cpu", help="cpu or cuda (flowmatch bench --device cuda --case unet-train --case unet-sample)")
    a = p.parse_args()
    device = torch.device(a.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    saved = torch.load(a.weights, weights_only=False)  # a file we wrote; 2.6+ defaults to True
    net = UNet()
    state = {k[len("state_dict."):]: v for k, v in saved.items() if k.startswith("state_dict.")}
    net.load_state_dict(state, strict=True)  # every name and shape as flowmatch's
    net.to(device)
    with torch.no_grad():
        v = net(saved["x"].to(device), saved["t"].to(device), saved["labels"].to(device)).cpu()
    difference = (v - saved["v"]).abs().max().item()
    scale = saved["v"].abs().max().item()
    if not difference <= 1e-4 * max(1.0, scale):
        raise SystemExit(f"the twin's output differs from flowmatch's by {difference} (largest output {scale}): no timings")

    # Training: as flowmatch's unet-train case.
    # The data on the CPU and each batch moved to the device, as flowmatch's trainer does.
    images = torch.randint(0, 256, (512, 1, 28, 28), dtype=torch.uint8)
    image_labels = torch.arange(512) % 10
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)
    ema = [q.detach().clone() for q in net.parameters()]
    batch = 64

    def step():
        index = torch.randint(0, 512, (batch,))
        x1 = ((images[index].float() + torch.rand(batch, 1, 28, 28)) / 128 - 1).reshape(batch, -1)
        labels = torch.where(torch.rand(batch) < 0.1, torch.full((batch,), -1), image_labels[index])
        x0 = torch.randn(batch, 784)
        t = torch.rand(batch)
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        xt, t, labels, target = xt.to(device), t.to(device), labels.to(device), (x1 - x0).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.autocast == "bf16"):
            loss = (net(xt, t, labels) - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if a.read_loss:
            loss.item()  # a sync with the device, as flowmatch's trainer checks every step's loss
        optimizer.step()
        with torch.no_grad():
            params = [q.detach() for q in net.parameters()]
            torch._foreach_mul_(ema, 0.999)
            torch._foreach_add_(ema, params, alpha=0.001)

    for _ in range(3):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(a.train_steps):
        step()
    sync()
    train_seconds = time.perf_counter() - start

    # Sampling: guided w = 2, midpoint 10 steps, batch 500, best of `repeats`.
    with torch.no_grad():
        for q in net.parameters():
            q.normal_(0, 0.05)
    n, steps, w = 500, 10, 2.0
    labels = (torch.arange(n) // (n // 10)).long()
    both = torch.cat([labels, torch.full((n,), -1)]).to(device)

    def field(x, t):
        out = net(torch.cat([x, x]), torch.full((1,), t, device=device), both)
        return (1 + w) * out[:n] - w * out[n:]

    best = float("inf")
    with torch.inference_mode():
        x0 = torch.randn(n, 784).to(device)
        field(x0, 0.0)  # warm-up
        for _ in range(a.repeats):
            sync()
            start = time.perf_counter()
            x, h = x0, 1.0 / steps
            for k in range(steps):
                t = k * h
                x = x + h * field(x + 0.5 * h * field(x, t), t + 0.5 * h)
            x.cpu()  # the result here, as flowmatch's timing ends
            best = min(best, time.perf_counter() - start)
    print(json.dumps({
        "implementation": "pytorch eager " + torch.__version__,
        "threads": a.threads,
        "device": str(device),
        "max_abs_output_difference": difference,
        "parameters": sum(q.numel() for q in net.parameters()),
        "train_batch": batch, "train_steps": a.train_steps, "autocast": a.autocast, "read_loss": a.read_loss,
        "train_images_per_s": a.train_steps * batch / train_seconds,
        "sample_batch": n, "solver": "midpoint", "steps": steps, "nfe": 2 * steps, "guidance": w,
        "sample_images_per_s": n / best,
        "network_images_per_s": n * 2 * steps * 2 / best,
    }))


if __name__ == "__main__":
    main()
