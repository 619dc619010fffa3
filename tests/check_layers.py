#!/usr/bin/env python3
"""Keeps the engine layered: every file of lib/ and preload/ has a layer (docs/ARCHITECTURE.md,
"Layers"), and each symbol a file's object leaves undefined, when another engine or preload
object defines it, must come from a file of the same or a lower layer. One named exception is
allowed. The symbols are read from the built objects with nm, so the check sees what the
compiler kept (inlined helpers that vanish do not count; macros never did).

Usage: check_layers.py [--nm NM] [--doc FILE] SOURCE_DIR BUILD_DIR
       check_layers.py --self-test [--nm NM] SOURCE_DIR BUILD_DIR
Exits 0 only when the table parses, names every source file and nothing else, every source file
has an object, and no reference goes up; otherwise prints each problem and exits 1. --self-test
runs the check on doctored copies of the table and verifies that it catches what it should.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

BEGIN = "<!-- layers:begin -->"
END = "<!-- layers:end -->"
# The object directories CMake gives the engine (an object library) and the shared library
# (whose own sources are preload/*.c); the sanitized copy of the engine is deliberately not here.
TARGET_DIRS = ("memlimits_engine.dir", "memlimits.dir")
SOURCE_GLOBS = ("lib", "preload")
# One edge between two files, naming every symbol it may carry.
EXCEPTION_RE = re.compile(
    r"^Allowed upward reference: (`[^`]+`(?:\s*,\s*`[^`]+`)*) \(from `([^`]+)` to `([^`]+)`\): *(.*)$")
FILES_RE = re.compile(r"^`[^`]+`(\s*,\s*`[^`]+`)*$")
# nm's letters: undefined (U; w and v are undefined weak references) and defined global ones.
UNDEFINED = set("Uwv")
DEFINED = set("ABCDGRSTVWu")


class Table:
    def __init__(self):
        self.layer = {}  # file -> layer number
        self.exception = None  # (symbols, from file, to file)
        self.problems = []


def parse_doc(text):
    """The layer table and the exception, from the lines between the markers."""
    t = Table()
    lines = text.splitlines()
    begins = [i for i, ln in enumerate(lines) if ln.strip() == BEGIN]
    ends = [i for i, ln in enumerate(lines) if ln.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        t.problems.append("the document needs one '%s' line and, after it, one '%s' line"
                          % (BEGIN, END))
        return t
    seen_row = False
    exceptions = 0
    for line in lines[begins[0] + 1:ends[0]]:
        s = line.strip()
        if s.startswith("Allowed upward reference"):
            exceptions += 1
            m = EXCEPTION_RE.match(s)
            if not m or not m.group(4).strip():
                t.problems.append("malformed exception line (want: Allowed upward reference: "
                                  "`SYMBOL`[, `SYMBOL`...] (from `FILE` to `FILE`): reason): " + s)
            elif exceptions == 1:
                symbols = tuple(sorted(re.findall(r"`([^`]+)`", m.group(1))))
                t.exception = (symbols, m.group(2), m.group(3))
            continue
        if not s.startswith("|"):
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if re.fullmatch(r"\d+", cells[0]):
            seen_row = True
            if len(cells) < 2 or not FILES_RE.match(cells[1]):
                t.problems.append("malformed row (want: | N | `file`, `file` | what |): " + s)
                continue
            for f in re.findall(r"`([^`]+)`", cells[1]):
                if f in t.layer:
                    t.problems.append("%s is in layers %d and %s" % (f, t.layer[f], cells[0]))
                else:
                    t.layer[f] = int(cells[0])
        elif all(re.fullmatch(r":?-+:?", c) for c in cells) or not seen_row:
            continue  # the header and its separator
        else:
            t.problems.append("malformed row (the first column must be a layer number): " + s)
    if exceptions > 1:
        t.problems.append("%d exception lines: one upward reference may be allowed, not more"
                          % exceptions)
    if not t.layer:
        t.problems.append("no layer rows between the markers")
    return t


def source_files(src):
    """lib/*.c and preload/*.c, relative to the source tree."""
    out = []
    for d in SOURCE_GLOBS:
        path = os.path.join(src, d)
        if os.path.isdir(path):
            out += ["%s/%s" % (d, f) for f in os.listdir(path) if f.endswith(".c")]
    return sorted(out)


def target_dirs(build):
    """CMake's object directories of the two targets: at the top of the build tree, or (when the
    project is a subdirectory of another build) wherever they are."""
    found = [os.path.join(build, "CMakeFiles", d) for d in TARGET_DIRS]
    found = [d for d in found if os.path.isdir(d)]
    if found:
        return found
    for root, dirs, _ in os.walk(build):
        for d in [d for d in dirs if d in TARGET_DIRS]:
            found.append(os.path.join(root, d))
            dirs.remove(d)
    return found


def find_objects(build, sources):
    """Maps each source file to its object: CMake names it <target>.dir/[config/]<path>.o. With
    several candidates (more than one configuration built), the newest wins. Objects of sources
    that no longer exist are stale and ignored."""
    objects, notes = {}, []
    for tdir in target_dirs(build):
        for root, _, files in os.walk(tdir):
            for f in files:
                if not (f.endswith(".c.o") or f.endswith(".c.obj")):
                    continue
                path = os.path.join(root, f)
                rel = os.path.relpath(path, tdir).replace(os.sep, "/").rsplit(".", 1)[0]
                match = [s for s in sources if rel == s or rel.endswith("/" + s)]
                if not match:
                    if re.search(r"(^|/)(lib|preload)/[^/]+\.c$", rel):
                        notes.append("ignoring %s: its source no longer exists" % path)
                    continue
                s = match[0]
                if s not in objects or os.path.getmtime(path) > os.path.getmtime(objects[s]):
                    objects[s] = path
    return objects, notes


def read_symbols(nm, obj):
    """(defined global symbols, undefined symbols) of one object, from nm's portable format."""
    r = subprocess.run([nm, "-P", obj], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if r.returncode != 0:
        raise RuntimeError("%s -P %s failed: %s" % (nm, obj, r.stderr.strip()))
    defined, undefined = set(), set()
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind in UNDEFINED:
            undefined.add(name)
        elif kind in DEFINED:
            defined.add(name)
    return defined, undefined


def references(nm, objects):
    """Every (from file, symbol, to file) where `from` leaves `symbol` undefined and `to` defines
    it, and the symbols defined by more than one file."""
    syms = {f: read_symbols(nm, o) for f, o in objects.items()}
    definer = {}
    for f, (defined, _) in syms.items():
        for s in defined:
            definer.setdefault(s, []).append(f)
    refs = set()
    for f, (_, undefined) in syms.items():
        for s in undefined:
            for to in definer.get(s, []):
                if to != f:
                    refs.add((f, s, to))
    dups = {s: sorted(fs) for s, fs in definer.items() if len(fs) > 1}
    return refs, dups


def check(src, build, doc, nm):
    """Runs the check; returns (output lines, ok)."""
    out = []
    problems = []
    try:
        with open(doc, encoding="utf-8") as fh:
            table = parse_doc(fh.read())
    except OSError as e:
        return ["layers: cannot read %s: %s" % (doc, e)], False
    problems += table.problems
    sources = source_files(src)
    if not sources:
        problems.append("no lib/*.c or preload/*.c under %s" % src)
    for f in sources:
        if f not in table.layer:
            problems.append("%s is in no layer of %s" % (f, doc))
    for f in sorted(table.layer):
        if not os.path.isfile(os.path.join(src, f)):
            problems.append("%s is in the table but does not exist" % f)

    objects, notes = find_objects(build, sources)
    out += ["layers: " + n for n in notes]
    if not objects:
        problems.append("no objects of %s under %s: build first"
                        % (" or ".join(t[:-4] for t in TARGET_DIRS), build))
    for f in sources:
        if objects and f not in objects:
            problems.append("%s has no object under %s (not built, or not in a target)"
                            % (f, build))
    try:
        refs, dups = references(nm, objects)
    except (OSError, RuntimeError) as e:
        return out + ["layers: %s" % e], False
    for s, fs in sorted(dups.items()):
        problems.append("%s is defined by %s" % (s, " and ".join(fs)))
    if objects and not refs:
        problems.append("no references between the objects: nothing was checked")

    upward, allowed, seen_allowed = [], 0, set()
    for f, s, to in refs:
        if f not in table.layer or to not in table.layer:
            continue  # reported above as a file in no layer
        if table.layer[to] <= table.layer[f]:
            continue
        if table.exception and s in table.exception[0] and (f, to) == table.exception[1:]:
            allowed += 1
            seen_allowed.add(s)
        else:
            upward.append((table.layer[f], f, to, s))
    if table.exception:
        for s in table.exception[0]:
            if s not in seen_allowed:
                problems.append("the allowed upward reference %s (from %s to %s) is not an "
                                "upward reference of the built objects: remove it or correct it"
                                % (s, table.exception[1], table.exception[2]))

    out += ["layers: " + p for p in problems]
    for lf, f, to, s in sorted(upward):
        out.append("%s -> %s: %s (layer %d -> %d)" % (f, to, s, lf, table.layer[to]))
    summary = "layers: %d files, %d internal references, %d upward" % (
        len(objects), len(refs), len(upward))
    if allowed:
        summary += " (%d allowed)" % allowed
    if problems:
        summary += ", %d other problem%s" % (len(problems), "" if len(problems) == 1 else "s")
    out.append(summary)
    return out, not problems and not upward


def self_test(src, build, nm):
    """Runs the check, as a program, on doctored copies of the document and an empty build tree,
    and verifies the outcome of each. Tables are built from the real sources and objects, so the
    self-test does not depend on whether today's code is layered."""
    script = os.path.abspath(__file__)
    doc_path = os.path.join(src, "docs", "ARCHITECTURE.md")
    with open(doc_path, encoding="utf-8") as fh:
        doc = fh.read()
    sources = source_files(src)
    objects, _ = find_objects(build, sources)
    if not objects:
        print("layers_selftest: no objects under %s: build first" % build)
        return 1
    refs, _ = references(nm, objects)
    if not refs:
        print("layers_selftest: no references between the objects")
        return 1
    a, sym, b = sorted(refs)[0]

    def region(rows, extra=()):
        body = ["| layer | files | holds |", "| --- | --- | --- |"]
        for n, files in rows:
            body.append("| %d | %s | test |" % (n, ", ".join("`%s`" % f for f in files)))
        return "\n".join([BEGIN] + body + [""] + list(extra) + [END])

    def with_region(r):
        lines = doc.splitlines()
        i = [k for k, ln in enumerate(lines) if ln.strip() == BEGIN]
        j = [k for k, ln in enumerate(lines) if ln.strip() == END]
        if len(i) == 1 and len(j) == 1:
            return "\n".join(lines[:i[0]] + [r] + lines[j[0] + 1:]) + "\n"
        return doc + "\n## Layers\n\n" + r + "\n"

    def exception(s, f, to):
        return "Allowed upward reference: `%s` (from `%s` to `%s`): a test." % (s, f, to)

    others = [f for f in sources if f != a]
    a_low = region([(0, [a]), (1, others)])
    cases = [
        # (name, document, build tree, exit code (None: 0 or 1), must contain, must not contain)
        ("one flat layer is clean", with_region(region([(0, sources)])), "real", 0,
         [" 0 upward"], ["layers: lib", "layers: preload"]),
        ("a reference to a higher layer is caught", with_region(a_low), "real", 1,
         ["%s -> %s: %s (layer 0 -> 1)" % (a, b, sym)], []),
        ("the named exception allows exactly that reference",
         with_region(region([(0, [a]), (1, others)], [exception(sym, a, b)])), "real", None,
         ["(1 allowed)"], ["%s -> %s: %s (layer" % (a, b, sym)]),
        ("an exception that is not an upward reference is stale",
         with_region(region([(0, sources)], [exception(sym, a, b)])), "real", 1,
         ["is not an upward reference"], []),
        ("two exception lines are refused",
         with_region(region([(0, sources)], [exception(sym, a, b), exception(sym, a, b)])),
         "real", 1, ["2 exception lines"], []),
        ("a source file missing from the table is caught",
         with_region(region([(0, others)])), "real", 1, ["%s is in no layer" % a], []),
        ("a table file that does not exist is caught",
         with_region(region([(0, sources + ["lib/no_such_file.c"])])), "real", 1,
         ["lib/no_such_file.c is in the table but does not exist"], []),
        ("a file in two layers is caught",
         with_region(region([(0, sources), (1, [a])])), "real", 1, ["%s is in layers" % a], []),
        ("a malformed row is caught",
         with_region(region([(0, sources)], ["| 1 | lib/bare.c | no backquotes |"])), "real",
         1, ["malformed row"], []),
        ("a document without the markers is refused", doc.replace(BEGIN, "").replace(END, "")
         + "\n" + region([(0, sources)]).replace(BEGIN, "").replace(END, ""), "real", 1,
         ["needs one"], []),
        ("a build tree without objects never passes", with_region(region([(0, sources)])),
         "empty", 1, ["no objects"], []),
        ("a source file without an object is caught", with_region(region([(0, sources)])),
         "missing", 1, ["%s has no object" % a], []),
        ("the object of a removed source file is ignored", with_region(region([(0, sources)])),
         "stale", 0, ["ignoring", " 0 upward"], ["is defined by"]),
    ]
    failed = 0
    counts = {}
    with tempfile.TemporaryDirectory(prefix="layers_selftest.") as tmp:
        # Build trees: the real one; an empty one; copies of the objects without a's; and with a
        # copy of a's object left behind by a source file that no longer exists.
        trees = {"real": build}
        for kind in ("empty", "missing", "stale"):
            trees[kind] = os.path.join(tmp, kind + "-build")
            os.mkdir(trees[kind])
            for f, obj in objects.items():
                if kind == "empty" or (kind == "missing" and f == a):
                    continue
                names = [f] + (["lib/removed_file.c"] if kind == "stale" and f == a else [])
                for name in names:
                    target = TARGET_DIRS[0] if name.startswith("lib/") else TARGET_DIRS[1]
                    dest = os.path.join(trees[kind], "CMakeFiles", target, name + ".o")
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    shutil.copy(obj, dest)
        for k, (name, text, bdir, code, want, unwanted) in enumerate(cases):
            path = os.path.join(tmp, "ARCHITECTURE-%d.md" % k)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            r = subprocess.run([sys.executable, script, "--nm", nm, "--doc", path, src,
                                trees[bdir]], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
            upward = re.search(r" (\d+) upward", r.stdout)
            counts[k] = int(upward.group(1)) if upward else None
            why = []
            if code is not None and r.returncode != code:
                why.append("exit %d, expected %d" % (r.returncode, code))
            if code is None and r.returncode not in (0, 1):
                why.append("exit %d" % r.returncode)
            why += ["no '%s'" % w for w in want if w not in r.stdout]
            why += ["unexpected '%s'" % w for w in unwanted if w in r.stdout]
            if k == 2:
                # One reference fewer than without the exception, and a clean exit iff none is
                # left.
                if counts[2] is None or counts[1] is None or counts[2] != counts[1] - 1:
                    why.append("upward %s with the exception, %s without"
                               % (counts[2], counts[1]))
                elif r.returncode != (0 if counts[2] == 0 else 1):
                    why.append("exit %d with %d upward" % (r.returncode, counts[2]))
            print("%s: %s" % ("FAIL" if why else "ok", name))
            if why:
                failed += 1
                print("  " + "; ".join(why))
                print("  " + r.stdout.strip().replace("\n", "\n  "))
    print("layers_selftest: %d cases, %d failed" % (len(cases), failed))
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nm", default="nm", help="the nm program (default: nm)")
    p.add_argument("--doc", help="the document with the table (default: "
                   "SOURCE_DIR/docs/ARCHITECTURE.md)")
    p.add_argument("--self-test", action="store_true", help="test this checker")
    p.add_argument("source_dir")
    p.add_argument("build_dir")
    args = p.parse_args()
    if args.self_test:
        return self_test(args.source_dir, args.build_dir, args.nm)
    doc = args.doc or os.path.join(args.source_dir, "docs", "ARCHITECTURE.md")
    out, ok = check(args.source_dir, args.build_dir, doc, args.nm)
    print("\n".join(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
