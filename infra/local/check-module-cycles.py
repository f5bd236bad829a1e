#!/usr/bin/env python3
"""Fails when a crate's modules depend on each other in a cycle (DESIGN.md: no module cycles).

For every crate source directory given (default: every workspace crate's `src`), each module's
code outside `#[cfg(test)]` is read for `crate::` paths (and `super::` paths of sibling modules),
and the dependency graph is checked at two depths: between top-level modules (`engine`,
`lifecycle`, ...) and between the children of one module (`flow::options`, `flow::batch`, ...).
A cycle is printed with the modules in it, then the script exits 1.
"""

import os
import re
import sys


def modules(src):
    """Each .rs file under `src` with its module path (`lifecycle/waits.rs` -> lifecycle::waits)."""
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                parts = os.path.relpath(path, src)[:-3].split(os.sep)
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                found[path] = parts
    return found


def code_of(path):
    """The file's code before its `#[cfg(test)]` module, without comments."""
    text = open(path, encoding="utf-8").read()
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    return re.sub(r"//[^\n]*", "", text)


def braced(text, start):
    """The text inside the braces opening at `start`, and the top-level items in it."""
    depth, i = 0, start
    while True:
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                break
        i += 1
    inner, items, level, current = text[start + 1 : i], [], 0, ""
    for char in inner:
        if char == "," and level == 0:
            items.append(current.strip())
            current = ""
            continue
        level += char == "{"
        level -= char == "}"
        current += char
    items.append(current.strip())
    return [item for item in items if item]


def paths_in(code):
    """Every `crate::a::b` path in `code`, braces expanded one level (`crate::{a, b::c}`)."""
    paths = []
    for match in re.finditer(r"crate::((?:\w+::)*)(\w+|\{)", code):
        prefix = [p for p in match.group(1).split("::") if p]
        if match.group(2) == "{":
            for item in braced(code, match.end() - 1):
                paths.append(prefix + [p for p in re.split(r"::", item.split(" as ")[0]) if p and p != "{"])
        else:
            paths.append(prefix + [match.group(2)])
    return paths


def root_reexports(src, top_modules):
    """`pub use module::{A, b::C}` in the crate root: each re-exported name, and its module, so a
    `crate::A` path counts as a use of `module`."""
    owner = {}
    for root_file in ("lib.rs", "main.rs"):
        path = os.path.join(src, root_file)
        if not os.path.isfile(path):
            continue
        code = code_of(path)
        for match in re.finditer(r"pub use (\w+)::", code):
            module = match.group(1)
            if module not in top_modules:
                continue
            rest = code[match.end():]
            if rest.startswith("{"):
                items = braced(code, match.end())
            else:
                items = [re.match(r"[\w:]+", rest).group(0)]
            for item in items:
                for name in re.findall(r"(\w+)\s*(?:[,}]|$)", item.replace("{", ",").replace("}", ",")):
                    owner.setdefault(name, module)
    return owner


def graph(src, depth):
    edges = {}
    found = modules(src)
    top_modules = {parts[0] for parts in found.values() if parts}
    reexported = root_reexports(src, top_modules) if depth == 1 else {}
    for path, parts in found.items():
        if len(parts) < depth:
            continue
        me = tuple(parts[:depth])
        code = code_of(path)
        paths = [[reexported.get(p[0], p[0])] + p[1:] if p and p[0] not in top_modules else p for p in paths_in(code)]
        targets = [tuple(p[:depth]) for p in paths if len(p) > depth - 1 and tuple(p[: depth - 1]) == me[:-1]]
        if len(parts) == depth:  # `super::x` from a direct child of the parent module
            targets += [me[:-1] + (m.group(1),) for m in re.finditer(r"super::(\w+)", code)]
        for target in targets:
            if len(target) == depth and target != me:
                edges.setdefault(me, set()).add(target)
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted("::".join(m) for m in component))

    for node in sorted(set(edges) | {t for ts in edges.values() for t in ts}):
        if node not in index:
            visit(node)
    return found


def main(sources):
    failed = False
    for src in sources:
        for depth in (1, 2):
            for component in cycles(graph(src, depth)):
                print(f"{src}: module cycle: {' <-> '.join(component)}")
                failed = True
    if failed:
        print("Break each cycle: move what both sides need into the lower module (DESIGN.md: layout).")
        return 1
    print(f"no module cycles in {len(sources)} crates")
    return 0


if __name__ == "__main__":
    roots = sys.argv[1:] or sorted(
        os.path.dirname(manifest)
        for manifest in (os.path.join(d, "Cargo.toml") for d in
                         [os.path.join(top, sub) for top in ("shared", "functions", "infra") if os.path.isdir(top)
                          for sub in sorted(os.listdir(top))] + ["vercel", "tests"])
        if os.path.isfile(manifest)
    )
    sys.exit(main([os.path.join(root, "src") for root in roots if os.path.isdir(os.path.join(root, "src"))]))
