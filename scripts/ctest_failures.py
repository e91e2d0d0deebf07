#!/usr/bin/env python3
"""Sorts a ctest run's failed tests by cause: what the machine lacks, or a fault of flowmatch's.

    python3 scripts/ctest_failures.py build/Testing/Temporary/LastTest.log ctest-output.log

The first file is ctest's LastTest.log (every test's output), the second what ctest printed (its list of
failed tests). A ctest test of the GoogleTest binary runs a group of tests (tests/ctest_groups.cmake): each
failed GoogleTest test in it is sorted on its own output, named as GROUP: Suite.Test. gpu-check.sh runs it after the suite on the GPU machine, which has no Debian data packages,
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


def gtest_failures(name, text):
    """The GoogleTest tests that failed in one ctest test's output, each with its own part of it: those gtest
    marks FAILED, or the one that was running when the process died. Other tests: the whole output."""
    sections = {}
    for m in re.finditer(r"^\[ RUN      \] (\S+)\n(.*?)(?=^\[ RUN      \] |\Z)", text, re.M | re.S):
        sections[m.group(1)] = m.group(2)
    failed = [(f"{name}: {test}", part) for test, part in sections.items()
              if re.search(r"^\[  FAILED  \] " + re.escape(test) + r" \(", part, re.M)]
    if not failed and sections:
        last = list(sections)[-1]
        if not re.search(r"^\[       OK \] " + re.escape(last) + r" \(", sections[last], re.M):
            failed = [(f"{name}: {last} (died while it ran)", sections[last])]
    return failed or [(name, text)]


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
    failed = [each for group in failed for each in gtest_failures(group, blocks.get(group, ""))]
    for name, text in failed:
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
