#!/usr/bin/env python3
"""Sorts a ctest run's failed tests by cause: what the machine lacks, or a fault of flowmatch's.

    python3 scripts/ctest_failures.py build/Testing/Temporary/LastTest.log ctest-output.log

The first file is ctest's LastTest.log (every test's output), the second what ctest printed (its list of
failed tests). gpu-check.sh runs it after the suite on the GPU machine, which has no Debian data packages,
no ../shared/data, no numpy in its python3 and (in that build) no c10d: those failures say so in one
line each and are counted apart from the rest, which are listed with their first failure line.
"""
import re
import sys

# What a test's output says when the machine lacks something, and what that is.
MISSING = [
    ("Debian data package", re.compile(r"bible-kjv|dataset-fashion-mnist|theseus-examples is not installed")),
    ("../shared/data", re.compile(r"shared/data/\w+ \(docs/")),
    ("numpy or torch in python3", re.compile(r"No module named '(numpy|torch)'")),
    ("c10d (off in this build)", re.compile(r"built without c10d")),
]


def main():
    log = open(sys.argv[1], errors="replace").read()
    printed = open(sys.argv[2], errors="replace").read()
    # ctest's closing list: "  12 - Suite.Name (Failed)", or (SEGFAULT), (Timeout), (Not Run), (Child aborted), ...
    failed = re.findall(r"^\s*\d+ - (\S+) \(([^)]+)\)\s*$", printed, re.M)
    failed = [name for name, status in failed if status != "Skipped" and status != "Disabled"]
    if "Total Test" not in printed:
        print("ctest did not finish (stopped at its time limit?): its list of failures is missing or partial")
    # LastTest.log: one block per test, from its "Test: NAME" line to the next.
    blocks = {}
    for m in re.finditer(r"^\d+/\d+ Test: (\S+)\n(.*?)(?=^\d+/\d+ Testing: |\Z)", log, re.M | re.S):
        blocks[m.group(1)] = m.group(2)
    lacking, faults = {}, []
    for name in failed:
        text = blocks.get(name, "")
        cause = next((what for what, pattern in MISSING if pattern.search(text)), None)
        if cause:
            lacking.setdefault(cause, []).append(name)
        else:
            first = next((line for line in text.splitlines() if "Failure" in line or "Exception" in line or "what()" in line), "")
            faults.append(f"{name}: {first.strip()[:200]}")
    print(f"failed: {len(failed)}; for want of what this machine lacks: {sum(map(len, lacking.values()))}; otherwise: {len(faults)}")
    for cause, names in lacking.items():
        print(f"  lacks {cause}: {len(names)} ({', '.join(names)})")
    for line in faults:
        print(f"  FAULT {line}")


if __name__ == "__main__":
    main()
