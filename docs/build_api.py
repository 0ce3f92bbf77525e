#!/usr/bin/env python
"""Builds keras_rso's API reference (HTML, with pdoc) from the docstrings.

Fails (exit status 1) on a broken cross-reference: a name in backticks in a
docstring that points into keras_rso (`keras_rso.x.y`, or `RSO.paper`-style
names that start with a public keras_rso name) but does not resolve, and on
any warning pdoc raises while reading the package (for example an
annotation it cannot resolve).

Example:
    python docs/build_api.py --output docs/api   # then open docs/api/index.html
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pathlib
import pkgutil
import re
import sys
import warnings
from typing import Dict, Iterator, List, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Imports of TensorFlow may run a subprocess (`uname -p`); pdoc blocks that
# unless told it is fine.
os.environ.setdefault("PDOC_ALLOW_EXEC", "1")

import keras_rso

# `name`, `name(...)`, `a.b.c`: a reference-shaped span between backticks.
REFERENCE = re.compile(r"`([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)(?:\([^`]*\))?`")


def public_modules() -> List[str]:
    """keras_rso and its submodules whose names do not start with `_`."""
    names = ["keras_rso"]
    for info in pkgutil.iter_modules(keras_rso.__path__):
        if not info.name.startswith("_"):
            names.append(f"keras_rso.{info.name}")
    return names


def pdoc_specs(modules: List[str]) -> List[str]:
    """The modules to hand to pdoc: those the package's `__all__` exports
    are documented with it, and naming them again would repeat them."""
    exported = {f"keras_rso.{name}" for name in keras_rso.__all__}
    return [m for m in modules if m not in exported]


def docstrings(module_names: List[str]) -> Iterator[Tuple[str, str]]:
    """`(qualified name, docstring)` of every module, class, function and
    method defined in the given modules."""
    for name in module_names:
        module = importlib.import_module(name)
        yield name, inspect.getdoc(module) or ""
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) != name or attr.startswith("_"):
                continue
            yield f"{name}.{attr}", inspect.getdoc(obj) or ""
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    if member.startswith("_") and member != "__init__":
                        continue
                    doc = inspect.getdoc(value) if callable(value) or isinstance(
                        value, (property, classmethod, staticmethod)) else None
                    if doc:
                        yield f"{name}.{attr}.{member}", doc


def _resolves(dotted: str, roots: Dict[str, object]) -> bool:
    head, *rest = dotted.split(".")
    if head == "keras_rso":
        obj = keras_rso
    elif head in roots:
        obj = roots[head]
    else:
        return True  # not a keras_rso name: Keras, TensorFlow, an argument...
    for i, part in enumerate(rest):
        if not hasattr(obj, part):
            # `keras_rso.x` may be a submodule not imported by the package.
            try:
                obj = importlib.import_module(".".join([head] + rest[:i + 1]))
                continue
            except ImportError:
                return False
        obj = getattr(obj, part)
    return True


def broken_references(module_names: List[str]) -> List[str]:
    """Every reference in a docstring that names a keras_rso object that
    does not exist, as `"<where>: `<reference>`"`."""
    roots = {name: getattr(keras_rso, name) for name in keras_rso.__all__}
    for name in module_names:
        module = importlib.import_module(name)
        roots.update({k: v for k, v in vars(module).items()
                      if inspect.isclass(v) and getattr(v, "__module__", "").startswith("keras_rso")})
    broken = []
    for where, doc in docstrings(module_names):
        for match in REFERENCE.finditer(doc):
            dotted = match.group(1)
            if "." in dotted or dotted.startswith("keras_rso"):
                if not _resolves(dotted, roots):
                    broken.append(f"{where}: `{dotted}`")
    return broken


def build(output: pathlib.Path) -> List[str]:
    """Writes the HTML reference into `output`; returns the problems found."""
    import pdoc

    modules = public_modules()
    problems = broken_references(modules)
    pdoc.render.configure(docformat="google", search=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*pdoc_specs(modules), output_directory=output)
    problems += [f"pdoc: {w.message}" for w in caught
                 if w.category is UserWarning and "pdoc" in w.filename]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="docs/api", help="output directory")
    args = parser.parse_args(argv)
    problems = build(pathlib.Path(args.output))
    for problem in problems:
        print("broken:", problem, file=sys.stderr)
    if problems:
        return 1
    print(f"API reference written to {args.output}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
