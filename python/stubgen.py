"""Writes the type stubs of the flowmatch package (flowmatch/__init__.pyi) from the compiled module.

pybind11 puts each function's signature on the first line of its docstring; this turns those into
stub declarations (C++ type names into Python ones, defaults into `...`) and keeps the docstrings.
The test suite regenerates the stubs and compares them with the committed file, so they cannot
drift from the module.

    PYTHONPATH=build/python /usr/bin/python3 python/stubgen.py > python/flowmatch/__init__.pyi
"""
import inspect
import os
import re
import sys

# The package to describe is the built one (PYTHONPATH), not the sources beside this script.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
import flowmatch  # noqa: E402
from flowmatch import _core  # noqa: E402

TYPES = [
    (r"\bat::Tensor\b", "torch.Tensor"),
    (r"\bflowmatch::(\w+)", r"\1"),
    (r"\bflowmatch\._core\.(\w+)", r"\1"),
    (r"\bList\[", "list["),
    (r"\bDict\[", "dict["),
    (r"\bTuple\[", "tuple["),
    (r"\bOptional\[", "Optional["),
    (r"\bobject\b", "Any"),
    (r"\bbool\b", "bool"),
]


def python_types(text):
    for pattern, replacement in TYPES:
        text = re.sub(pattern, replacement, text)
    return text


def split_arguments(text):
    """Splits 'a: int = 1, b: list[int] = [1, 2]' at the top-level commas."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def signature(first_line, name):
    """'name(a: T = v, ...) -> R' -> ('(a: T = ..., ...)', 'R')."""
    m = re.match(r"^\s*" + re.escape(name) + r"\((.*)\)\s*->\s*(.+)$", first_line)
    if not m:
        raise ValueError(f"{name}: no pybind11 signature in {first_line!r}")
    arguments = []
    for a in split_arguments(m.group(1)):
        if "=" in a:
            a = a.split("=", 1)[0].rstrip() + " = ..."
        arguments.append(python_types(a))
    return "(" + ", ".join(arguments) + ")", python_types(m.group(2).strip())


def docstring(doc, indent):
    lines = doc.split("\n")
    body = "\n".join(lines[1:]).strip()
    if not body:
        return ""
    body = body.replace('"""', "'''").replace("\\", "\\\\")
    pad = " " * indent
    return pad + '"""' + body.replace("\n", "\n" + pad) + '"""\n'


def function_stub(obj, name, indent=0, static=False):
    doc = obj.__doc__ or ""
    pad = " " * indent
    if doc.lstrip().startswith(name + "(*args, **kwargs)\nOverloaded function."):
        raise ValueError(f"{name}: overloads are not handled")
    first = doc.split("\n", 1)[0]
    args, result = signature(first, name)
    out = (pad + "@staticmethod\n") if static else ""
    out += f"{pad}def {name}{args} -> {result}:\n"
    body = docstring(doc, indent + 4)
    return out + (body + pad + "    ...\n" if body else pad + "    ...\n")


def class_stub(cls):
    bases = [b.__name__ for b in cls.__bases__ if b.__module__ == _core.__name__]
    out = f"class {cls.__name__}" + (f"({', '.join(bases)})" if bases else "") + ":\n"
    if cls.__doc__:
        out += '    """' + cls.__doc__.strip().replace("\\", "\\\\").replace("\n", "\n    ") + '"""\n'
    for name, member in cls.__dict__.items():
        if name.startswith("__") and name not in ("__init__", "__call__"):
            continue
        if isinstance(member, property):
            doc = member.fget.__doc__ or ""
            result = python_types(doc.split("->", 1)[1].split("\n", 1)[0].strip())
            out += f"    @property\n    def {name}(self) -> {result}:\n"
            body = docstring(doc, 8) or (docstring("\n" + member.__doc__, 8) if member.__doc__ else "")
            out += body + "        ...\n"
        elif isinstance(member, staticmethod):
            out += function_stub(member.__func__, name, 4, static=True)
        elif callable(member) and (member.__doc__ or "").startswith(name + "("):  # not pybind11's "no constructor" __init__
            out += function_stub(member, name, 4)
    return out + "\n"


def main():
    out = ['"""Type stubs of the flowmatch package, generated from the compiled module by python/stubgen.py."""',
           "from typing import Any, Optional", "", "import torch", "", '__version__: str', ""]
    names = sorted(n for n in dir(_core) if not n.startswith("_"))
    classes = [getattr(_core, n) for n in names if inspect.isclass(getattr(_core, n))]
    # Base classes first, so that every subclass names a class already declared.
    ordered = []
    while classes:
        ready = [c for c in classes if all(b in ordered or b.__module__ != _core.__name__ or b.__name__.startswith("_")
                                           for b in c.__bases__)]
        if not ready:
            raise ValueError(f"classes whose bases are not public: {[c.__name__ for c in classes]}")
        ordered.append(ready[0])
        classes.remove(ready[0])
    for cls in ordered:
        out.append(class_stub(cls))
    for n in names:
        obj = getattr(_core, n)
        if not inspect.isclass(obj):
            out.append(function_stub(obj, n))
    sys.stdout.write("\n".join(out).rstrip() + "\n")


if __name__ == "__main__":
    assert flowmatch.__version__
    main()
