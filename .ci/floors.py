#!/usr/bin/env python3
"""Checks that src/ keeps its floors: no module imports one that imports it back (directly or
through others), at most MAX_UP imports run from a lower floor up to a higher one, and the
rules src/lib.rs states beside the floors hold (providers, config/, std::env).

An edge is a `crate::a::b` or `super::b` path in a file's non-test code, resolved to the longest
module it names (a file). Floors are the ones `src/lib.rs` documents. Prints the figures, every
up-floor import and every cycle; exits 1 when a rule is broken.

    python3 .ci/floors.py [--max-up N] [SRC_DIR]
"""

import os
import re
import sys

# Highest floor first; a module takes the floor of its longest listed prefix. Keep in step with
# the `//!` of src/lib.rs.
FLOORS = {
    "main": 9,
    "lib": 8,  # the crate root: `crate::name` that is no module
    "commands": 8,
    "cli": 8,
    "preview": 7,
    "seed": 7,
    "verify": 7,
    "sweep": 7,
    "lifecycle": 7,
    "estate": 7,
    "demo": 7,
    "load": 7,  # the `atlas load` / `baseline` flows in load/mod.rs
    "gate": 7,
    "commit_data": 7,
    "action": 7,
    "provider": 6,
    "evidence": 6,
    "quota": 6,
    "load::gate": 6,  # the load engine below its flow
    "load::generator": 6,
    "load::proxy": 6,
    "load::stats": 6,
    "load::summary": 6,
    "load::wire": 6,
    "load::history": 6,
    "load::models": 6,
    "load::dashboard": 6,
    "load::alerts": 6,
    "load::store": 6,
    "contract": 5,
    "report": 5,
    "outputs": 5,
    "gha": 5,
    "http": 5,
    "http1": 5,
    "github_env": 5,
    "event": 4,
    "cost": 4,
    "data": 4,
    "config": 3,
    "secret": 1,
    "naming": 1,
    "text": 1,
    "trace": 1,
    "shell": 1,
    "error": 1,
}

PATH_RE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
BARE_RE = re.compile(r"(?<![:\w])([a-z_][a-z0-9_]*)::")
GROUP_RE = re.compile(r"\buse\s+crate::\{([^}]*)\}", re.S)
TEST_RE = re.compile(r"^\s*#\[cfg\(test\)\]\s*\n\s*(pub\s+)?mod\s+\w+\s*\{", re.M)


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"],):
                mods["lib"] = os.path.join(root, f)
                continue
            if parts[-1] == "tests":  # a `#[cfg(test)] mod tests;` file
                continue
            mods["::".join(parts)] = os.path.join(root, f)
    return mods


def floor(mod):
    parts = mod.split("::")
    for i in range(len(parts), 0, -1):
        key = "::".join(parts[:i])
        if key in FLOORS:
            return FLOORS[key]
    return None


def resolve(mods, path):
    parts = path.split("::")
    for i in range(len(parts), 0, -1):
        key = "::".join(parts[:i])
        if key in mods:
            return key
    return "lib"


def hide_inline_super(text):
    """`super::` inside an inline `mod x { ... }` names this very file: not an edge."""
    out, pos = [], 0
    for m in re.finditer(r"\bmod\s+\w+\s*\{", text):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append(text[pos : m.end()])
        out.append(text[m.end() : i].replace("super::", "inline_super_"))
        pos = i
    out.append(text[pos:])
    return "".join(out)


def edges(mods):
    out = {m: set() for m in mods}
    for mod, file in mods.items():
        text = open(file, encoding="utf-8").read()
        m = TEST_RE.search(text)
        if m:
            text = text[: m.start()]
        # Drop line comments and doc comments: a path named in prose is no import.
        text = re.sub(r"//[^\n]*", "", text)
        text = hide_inline_super(text)
        paths = []
        for kind, rest in PATH_RE.findall(text):
            rest = rest[2:]
            if kind == "crate":
                paths.append(rest)
            else:
                # `super` is the parent module, for a mod.rs and a plain file alike.
                base = mod.split("::")[:-1]
                paths.append("::".join(base + [rest]) if base else rest)
        # A bare `child::` path names a module declared below this one (or, from lib.rs, a
        # top-level module).
        prefix = "" if mod == "lib" else mod + "::"
        for name in BARE_RE.findall(text):
            if (prefix + name) in mods:
                paths.append(prefix + name)
        for group in GROUP_RE.findall(text):
            for item in group.split(","):
                item = item.strip().split(" as ")[0].split("::{")[0]
                if item:
                    paths.append(item)
        for p in paths:
            target = resolve(mods, p)
            if target and target != mod:
                out[mod].add(target)
    return out


def sccs(graph):
    index, low, stack, on, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                result.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def top(mod):
    return mod.split("::")[0]


def code_of(file):
    """A file's non-test code without comments (as `edges` reads it)."""
    text = open(file, encoding="utf-8").read()
    m = TEST_RE.search(text)
    if m:
        text = text[: m.start()]
    return re.sub(r"//[^\n]*", "", text)


def rule_breaks(mods, graph):
    """The rules of src/lib.rs beside the floors: a provider never imports a flow, `evidence`
    or `report`; `config/` imports only `secret` and `text`; nothing below `commands/` names
    `std::env` (except `shell`, which passes PATH and HOME to children)."""
    out = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if top(a) == "provider" and (top(b) in ("evidence", "report") or (floor(b) or 0) >= 7):
                out.append(f"provider {a} imports {b}")
            if top(a) == "config" and top(b) not in ("config", "secret", "text"):
                out.append(f"config {a} imports {b}")
    for mod, file in sorted(mods.items()):
        f = floor(mod)
        if f is not None and f < 8 and top(mod) != "shell" and re.search(r"\bstd::env\b|\buse std::\{[^}]*\benv\b", code_of(file)):
            out.append(f"{mod} (floor {f}) names std::env")
    return out


def main():
    args = sys.argv[1:]
    max_up = 4
    if args[:1] == ["--max-up"]:
        max_up = int(args[1])
        args = args[2:]
    src = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "src")
    mods = modules(src)
    graph = edges(mods)
    problems = 0
    unplaced = sorted(m for m in mods if floor(m) is None)
    for m in unplaced:
        print(f"no floor for module `{m}`: add it to .ci/floors.py and src/lib.rs")
        problems += 1
    up = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            fa, fb = floor(a), floor(b)
            if fa is not None and fb is not None and fb > fa:
                up.append((a, fa, b, fb))
    cycles = sccs(graph)
    rules = rule_breaks(mods, graph)
    n_edges = sum(len(v) for v in graph.values())
    print(f"modules: {len(mods)}  edges: {n_edges}  up-floor imports: {len(up)}  cycles: {len(cycles)}")
    for a, fa, b, fb in up:
        print(f"  up: {a} (floor {fa}) -> {b} (floor {fb})")
    for c in cycles:
        print("  cycle: " + " <-> ".join(c))
    for r in rules:
        print("  rule: " + r)
    if cycles:
        problems += 1
    problems += len(rules)
    if len(up) > max_up:
        print(f"more than {max_up} up-floor imports")
        problems += 1
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
