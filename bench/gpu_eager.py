#!/usr/bin/python3
"""The GPU halves of `flowmatch bench --device cuda --case sample-euler100 --case policy-latency`, in plain
PyTorch on the same GPU, eager and replayed as a CUDA graph (torch.cuda.CUDAGraph), for ratios from one
run (issue "Performance II"; run by scripts/gpu-check.sh):

    python3 bench/gpu_eager.py > gpu-eager.json

sample-euler100: Euler, 100 steps, of ref_cfm_2d.py's network (MLP 3x64 SELU with t as an input,
untrained: the time does not depend on the weights) from N(0, I) at batch 10 000 and 1 000 000; the
best of `repeats` solves, each ending with the samples on the CPU.
policy-latency: ref_policy_latency.py's policy (horizon 16 x 2 actions, observation 20, MLP 3 x 256
SiLU over [x, observation, t]), 10 Euler steps at batch 1; each sample copies the observation from the
CPU and brings the actions back; the median of 2000 after 200 untimed.
Prints one JSON object per line, with the keys of flowmatch's rows.
"""
import argparse, json, statistics, time

import torch


def mlp(sizes, activation):
    layers = []
    for k in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[k], sizes[k + 1]))
        if k + 2 < len(sizes):
            layers.append(activation())
    return torch.nn.Sequential(*layers)


def captured(fn, static_input):
    """fn(static_input) recorded as a CUDA graph after warm-up on a side stream; returns (graph, output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn(static_input)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static_input)
    return graph, out


def sample_euler100(device, repeats):
    torch.manual_seed(0)
    net = mlp([3, 64, 64, 64, 2], torch.nn.SELU).to(device)
    steps = 100

    def solve(x):
        h = 1.0 / steps
        for k in range(steps):
            t = torch.full((x.shape[0], 1), k * h, device=x.device)
            x = x + h * net(torch.cat([x, t], 1))
        return x

    rows = []
    for n in (10000, 1000000):
        x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(1)).to(device)
        with torch.inference_mode():
            solve(x0)  # warm-up
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                eager = solve(x0).cpu()
                best = min(best, time.perf_counter() - start)
        with torch.no_grad():
            static = x0.clone()
            graph, out = captured(solve, static)
            best_graph = float("inf")
            for r in range(repeats + 1):
                start = time.perf_counter()
                static.copy_(x0)
                graph.replay()
                replayed = out.cpu()
                if r > 0:
                    best_graph = min(best_graph, time.perf_counter() - start)
        rows.append({"case": "sample-euler100", "implementation": "pytorch eager " + torch.__version__, "device": str(device),
                     "batch": n, "nfe": steps, "seconds": best, "samples_per_s": n / best,
                     "seconds_cuda_graph": best_graph, "samples_per_s_cuda_graph": n / best_graph,
                     "cuda_graph_max_abs_difference": (replayed - eager).abs().max().item()})
    return rows


def policy_latency(device, repeats=2000):
    horizon, action_dim, obs_dim, width, depth, steps = 16, 2, 20, 256, 3, 10
    action = horizon * action_dim
    torch.manual_seed(0)
    net = mlp([action + obs_dim + 1] + [width] * depth + [action], torch.nn.SiLU).to(device)
    obs_cpu = torch.randn(1, obs_dim)
    noise = torch.randn(1, action).to(device)
    obs = obs_cpu.to(device)

    def solve(x):
        h = 1.0 / steps
        for k in range(steps):
            t = torch.full((1, 1), k * h, device=x.device)
            x = x + h * net(torch.cat([x, obs, t], 1))
        return x

    def median_us(fn):
        for _ in range(200):
            fn()
        ts = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - start) * 1e6)
        return statistics.median(ts)

    results = {}

    def eager_sample():
        obs.copy_(obs_cpu)
        results["eager"] = solve(noise).cpu()

    with torch.inference_mode():
        eager = median_us(eager_sample)
    with torch.no_grad():
        static = noise.clone()
        graph, out = captured(solve, static)

        def graph_sample():
            obs.copy_(obs_cpu)
            static.copy_(noise)
            graph.replay()
            results["graph"] = out.cpu()

        replay = median_us(graph_sample)
    return {"case": "policy-latency", "implementation": "pytorch eager " + torch.__version__, "device": str(device),
            "horizon": horizon, "action_dim": action_dim, "obs_dim": obs_dim, "width": width, "depth": depth, "steps": steps,
            "repeats": repeats, "latency_us_batch1_eager": eager, "latency_us_batch1_cuda_graph": replay,
            "cuda_graph_max_abs_difference": (results["graph"] - results["eager"]).abs().max().item()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    device = torch.device(a.device)
    for row in sample_euler100(device, a.repeats):
        print(json.dumps(row), flush=True)
    print(json.dumps(policy_latency(device)), flush=True)


if __name__ == "__main__":
    main()
