#!/usr/bin/python3
"""Runs every `flowmatch ...` example of README.md and docs/*.md, so that the documentation stays true to
the command line (ctest: Docs.EveryExampleRuns).

Each example is taken from a code block (fenced, or indented by four spaces), continuation lines joined and
the trailing comment dropped, and run as written in a scratch folder, with three kinds of change, all
listed here and printed beside each command:
  * budgets: flags that set how much work a command does (steps, samples, pairs, epochs, NFE lists,
    repeats) are set to small values (replaced where the example gives them, added where it does not), so
    that the whole set runs in minutes; images read a 300-image cut of Debian's Fashion-MNIST (`--data-dir`);
  * placeholders that the docs write as capital letters (R, M, S, T, C) or shell variables ($tol) take
    a concrete value (a run folder, gaussian, moons, exact-ot, 1e-3);
  * inputs an example names without making (x0.npy, v.pt, a.npy, book.txt, ...) are made first, and run
    folders it reads that its document does not make (runs/gauss, runs/classifier, ...) when first read.
An example that cannot run on this machine (CUDA, several machines) is reported as not run; the test
fails when any example fails, or when an example is skipped for any other reason.

usage: run_examples.py FLOWMATCH_CLI REPO_ROOT [--keep DIR] [--only SUBSTRING]
"""
import gzip
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time

CLI, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
ARGS = sys.argv[3:]
KEEP = ARGS[ARGS.index("--keep") + 1] if "--keep" in ARGS else None
ONLY = ARGS[ARGS.index("--only") + 1] if "--only" in ARGS else None

PLACEHOLDERS = {"R": "runs/R", "R1": "runs/example", "M": "runs/example", "S": "gaussian", "T": "moons",
                "C": "exact-ot", "$tol": "1e-3", "d$tol.npy": "d1e-3.npy"}
NOT_HERE = [("--device cuda", "needs a CUDA device"), ("--nnodes", "needs several machines")]


def extract(path):
    """(line number, command) for every `flowmatch ...` line in the file's code blocks."""
    out, fenced, previous_blank = [], False, True
    lines = open(path, encoding="utf-8").read().split("\n")
    k = 0
    while k < len(lines):
        raw = lines[k]
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            k += 1
            previous_blank = False
            continue
        indented = not fenced and raw.startswith("    ") and previous_blank_or_code(lines, k)
        text = raw.strip()
        if text.startswith("$ "):
            text = text[2:]
        if (fenced or indented) and re.match(r"^flowmatch\s", text):
            start = k + 1
            while text.endswith("\\") and k + 1 < len(lines):
                k += 1
                text = text[:-1].rstrip() + " " + lines[k].strip()
            out.append((start, strip_comment(text)))
        previous_blank = not raw.strip()
        k += 1
    return out


def previous_blank_or_code(lines, k):
    """An indented line is code when the block it belongs to started after a blank line."""
    j = k
    while j > 0 and lines[j - 1].startswith("    "):
        j -= 1
    return j == 0 or not lines[j - 1].strip()


def strip_comment(text):
    quote = None
    for i, ch in enumerate(text):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or text[i - 1] == " "):
            return text[:i].rstrip()
        if ch == ";" and quote is None:  # `...; do`, a shell loop's head
            return text[:i].rstrip()
    return text


def set_flag(tokens, flag, value, only_if_present=False):
    if flag in tokens:
        i = tokens.index(flag)
        if value is None:
            return tokens
        return tokens[:i + 1] + [value] + tokens[i + 2:]
    if only_if_present:
        return tokens
    return tokens + [flag] + ([value] if value is not None else [])


def flag_value(tokens, flag):
    return tokens[tokens.index(flag) + 1] if flag in tokens and tokens.index(flag) + 1 < len(tokens) else None


def run_data(work, run_dir):
    """The data description of a run folder (its config.json's "data"), or {}."""
    import json
    try:
        with open(os.path.join(work, run_dir, "config.json")) as f:
            return json.load(f).get("data", {})
    except (OSError, ValueError):
        return {}


def run_domain(work, run_dir):
    """The domain of a run folder ("points", "images", "discrete", ...)."""
    return run_data(work, run_dir).get("domain", "")


def budget(tokens, mini_fmnist, work="."):
    """The example with small budgets (tokens after `flowmatch`)."""
    if tokens[:1] == ["launch"] and "--" in tokens:
        cut = tokens.index("--")
        return tokens[:cut + 1] + budget(tokens[cut + 1:], mini_fmnist, work)
    command = tokens[0] if tokens else ""
    data = flag_value(tokens, "--data") or ""
    images = data.startswith("fashion-mnist")
    if command == "train":
        molecules = data.startswith("molecules") or "--system" in tokens
        steps = "3" if images else "5" if molecules else "40"
        if "--resume" in tokens:
            steps = "80"
        tokens = set_flag(tokens, "--steps", steps)
        if images:
            tokens = set_flag(tokens, "--batch", "8")
            tokens = set_flag(tokens, "--data-dir", mini_fmnist)
        elif molecules:
            tokens = set_flag(tokens, "--batch", "8")
        elif data in ("kjv",) or data.startswith("text:"):
            tokens = set_flag(tokens, "--batch", "8")
        else:
            tokens = set_flag(tokens, "--batch", "64", only_if_present=True)
    elif command == "sample":
        if "--initial" not in tokens:
            data = run_data(work, flag_value(tokens, "--run") or "")
            few = data.get("domain") in ("images", "discrete")
            every_caption = "captions" in data and "--prompt" not in tokens and "--class" not in tokens
            tokens = set_flag(tokens, "--n", "90" if every_caption else "20" if few else "200")
            if few:
                tokens = set_flag(tokens, "--steps", "4")
        if "--steps" in tokens and int(flag_value(tokens, "--steps")) > 100:
            tokens = set_flag(tokens, "--steps", "100")
    elif command == "eval":
        tokens = set_flag(tokens, "--n", "200", only_if_present="--samples" in tokens)
        if "--classifier" in tokens:
            for flag, value in (("--accuracy-n", "10"), ("--fd-n", "10"), ("--bpd-n", "2"), ("--bpd-steps", "2"),
                                ("--guidance-scales", "2"), ("--sample-steps", "2")):
                tokens = set_flag(tokens, flag, value)
    elif command == "likelihood":
        if "--data" not in tokens:
            few = run_domain(work, flag_value(tokens, "--run") or "") in ("images", "discrete")
            tokens = set_flag(tokens, "--n", "10" if few else "100")
    elif command in ("reflow", "distill"):
        tokens = set_flag(tokens, "--pairs", "300")
        tokens = set_flag(tokens, "--train-steps", "20")
    elif command == "compare":
        tokens = set_flag(tokens, "--steps", "3" if images else "40")
        tokens = set_flag(tokens, "--n", "10" if images else "100")
        tokens = set_flag(tokens, "--nfe", "1,2")
        tokens = set_flag(tokens, "--tolerances", "1e-2")
        if images:
            tokens = set_flag(tokens, "--data-dir", mini_fmnist)
            tokens = set_flag(tokens, "--batch", "8")
    elif command == "bench":
        tokens = set_flag(tokens, "--repeats", "1")
    elif tokens[:2] == ["classifier", "train"]:
        tokens = set_flag(tokens, "--epochs", "1")
        tokens = set_flag(tokens, "--data-dir", mini_fmnist)
    elif tokens[:2] == ["autoencoder", "train"]:
        tokens = set_flag(tokens, "--steps", "20")
        tokens = set_flag(tokens, "--batch", "8")
        tokens = set_flag(tokens, "--data-dir", mini_fmnist)
    return tokens


def mini_fashion_mnist(folder, train_n=300, test_n=100):
    """The first images of Debian's Fashion-MNIST, written in its own IDX format."""
    source = "/usr/share/datasets/fashion-mnist"
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", train_n), ("t10k", test_n)):
        with gzip.open(f"{source}/{split}-images-idx3-ubyte.gz") as f:
            magic, _, rows, cols = struct.unpack(">IIII", f.read(16))
            pixels = f.read(n * rows * cols)
        with gzip.open(f"{folder}/{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", magic, n, rows, cols) + pixels)
        with gzip.open(f"{source}/{split}-labels-idx1-ubyte.gz") as f:
            magic, _ = struct.unpack(">II", f.read(8))
            labels = f.read(n)
        with gzip.open(f"{folder}/{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", magic, n) + labels)


def run(tokens, cwd, env, timeout=600):
    start = time.time()
    p = subprocess.run([CLI] + tokens, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr, time.time() - start


def torchscript_fixtures(folder):
    """TorchScript models and their inputs (tests/python/make_torchscript_fixture.py), made once: a Python
    that imports torch takes seconds to start."""
    os.makedirs(folder)
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "python", "make_torchscript_fixture.py"), folder],
                   check=True, capture_output=True)
    return folder


def fixtures(work, env, mini, torchscript):
    """What the examples use without making it."""
    import numpy as np
    rng = np.random.default_rng(0)
    for name in ("x0.npy", "a.npy", "b.npy"):
        np.save(os.path.join(work, name), rng.standard_normal((300, 2)).astype(np.float32))
    for name in os.listdir(torchscript):
        shutil.copy(os.path.join(torchscript, name), os.path.join(work, name))
    shutil.copy(os.path.join(work, "velocity.pt"), os.path.join(work, "v.pt"))
    np.save(os.path.join(work, "x1.npy"), rng.standard_normal((100, 2)).astype(np.float32))
    os.symlink(os.path.join(ROOT, "configs"), os.path.join(work, "configs"))
    with open(os.path.join(work, "book.txt"), "w") as f:
        f.write("the cat sat on the mat and the dog sat on the log " * 200)
    points = rng.standard_normal((400, 3))
    np.save(os.path.join(work, "points.npy"), points / np.linalg.norm(points, axis=1, keepdims=True))
    np.save(os.path.join(work, "angles.npy"), rng.uniform(-np.pi, np.pi, (400, 2)))
    configurations = rng.standard_normal((400, 13, 3)) * 1.2
    configurations -= configurations.mean(axis=1, keepdims=True)
    np.save(os.path.join(work, "configurations.npy"), configurations.reshape(400, 39))


# Run folders that examples read without making them in the same document: made when first needed.
MADE_WHEN_READ = {
    "runs/gauss": ["train", "--out", "runs/gauss", "--source", "gaussian", "--target", "moons", "--steps", "40"],
    "runs/icfm": ["train", "--out", "runs/icfm", "--coupling", "independent", "--steps", "40"],
    "runs/demo": ["train", "--out", "runs/demo", "--config", "configs/demo.toml", "--steps", "40"],
    "runs/example": ["train", "--out", "runs/example", "--steps", "40"],
    "runs/vp": ["train", "--out", "runs/vp", "--path", "vp", "--sigma", "0", "--source", "gaussian", "--steps", "40"],
    "runs/classifier": ["classifier", "train", "--out", "runs/classifier", "--epochs", "1", "--data-dir", "MINI"],
    "runs/ae": ["autoencoder", "train", "--out", "runs/ae", "--steps", "20", "--batch", "8", "--data-dir", "MINI"],
}


def make_what_is_read(tokens, work, env, mini):
    for flag in ("--run", "--classifier", "--autoencoder"):
        name = flag_value(tokens, flag)
        if name in MADE_WHEN_READ and not os.path.exists(os.path.join(work, name)):
            recipe = [mini if t == "MINI" else t for t in MADE_WHEN_READ[name]]
            code, output, _ = run(recipe + ["--quiet", "--threads", "1"], work, env)
            if code != 0:
                raise SystemExit(f"making {name} failed: {output}")


def main():
    docs = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
    scratch = KEEP or tempfile.mkdtemp(prefix="flowmatch-docs-")
    os.makedirs(scratch, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("FLOWMATCH_DATA_DIR", os.path.join(os.path.dirname(ROOT), "shared", "data"))
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    if os.path.isdir(shared):  # `--data-dir ../shared/data` from a folder of the scratch space, as from the checkout
        os.symlink(shared, os.path.join(scratch, "shared"))
    subcommands = set(re.findall(r"^\s{2}([a-z][a-z-]*)\s", subprocess.run([CLI, "--help"], capture_output=True, text=True).stdout, re.M))
    mini = os.path.join(scratch, "fashion-mnist-300")
    mini_fashion_mnist(mini)
    torchscript = torchscript_fixtures(os.path.join(scratch, "torchscript-fixtures"))
    failures, not_run, ran = [], [], 0
    try:
        for doc in docs:
            examples = extract(os.path.join(ROOT, doc))
            if not examples:
                continue
            work = os.path.join(scratch, doc.replace("/", "_").replace(".md", ""))
            os.makedirs(work)
            fixtures(work, env, mini, torchscript)
            for line, text in examples:
                if ONLY and ONLY not in text:
                    continue
                word = text.split()[1]
                if word not in subcommands:
                    if re.match(r"^[a-z][a-z-]*$", word):  # reads as a command the CLI does not have: a stale example
                        failures.append(f"{doc}:{line}: '{word}' is not a flowmatch subcommand: {text}")
                    continue  # else prose that starts with the name (a diagram's label)
                reason = next((why for key, why in NOT_HERE if key in text), None)
                if reason:
                    not_run.append(f"{doc}:{line}: {text}  ({reason})")
                    continue
                tokens = [PLACEHOLDERS.get(t, t) for t in shlex.split(text)[1:]]
                tokens = budget(tokens, mini, work)
                if tokens[:1] not in (["launch"], ["bench"]):
                    tokens = set_flag(tokens, "--threads", "1", only_if_present=True)
                make_what_is_read(tokens, work, env, mini)
                code, output, seconds = run(tokens, work, env)
                ran += 1
                status = "ok" if code == 0 else f"EXIT {code}"
                print(f"{status:8} {seconds:6.1f} s  {doc}:{line}: flowmatch {' '.join(tokens)}", flush=True)
                if code != 0:
                    failures.append(f"{doc}:{line}: flowmatch {' '.join(tokens)}\n    as written: {text}\n    "
                                    + "\n    ".join(output.strip().split("\n")[-6:]))
    finally:
        if not KEEP:
            shutil.rmtree(scratch, ignore_errors=True)
    for n in not_run:
        print("not run here: " + n)
    for f in failures:
        print("FAILED: " + f)
    print(f"{ran - len(failures)} passed, {len(failures)} failed")
    return 1 if failures or ran == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
