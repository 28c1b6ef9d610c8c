#!/usr/bin/env python3
"""check_dockerfile.py: check Dockerfiles without a Docker engine.

    python3 docker/check_dockerfile.py [--layer DIR] DOCKERFILE:CONTEXT ...

What a parse can tell (a linter is not at hand and no engine runs here):
instructions known, line continuations and JSON exec forms well formed, ARG
defaults resolving every ${VAR} of FROM, stage names unique, COPY --from
naming an earlier stage (or an image reference), COPY sources present in the
context and not excluded by its .dockerignore, WORKDIR absolute, ENV in
key=value form, apt-get packages known to apt-cache, and exec-form
ENTRYPOINTs under /opt/civis-agent present in the assembled layer (--layer).
run_build_stage() runs a stage's RUN commands (those without apt-get) on a
copy of the context, paths mapped into a scratch directory: the test of
docker/Dockerfile's build stage. Exit status 1 when any file has errors."""
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                "SHELL", "MAINTAINER"}
EXEC_FORM = {"CMD", "ENTRYPOINT", "SHELL"}


def parse(path):
    """[(lineno, INSTRUCTION, args)] with continuations joined, comments dropped."""
    out, cur, start = [], "", 0
    with open(path) as fh:
        lines = fh.read().split("\n")
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip()
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue   # comment lines inside a continuation are skipped by BuildKit
        if not cur:
            start = n
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        cur = ""
    if cur:
        out.append((start, "<EOF>", cur))
    return out


def dockerignore(dockerfile, context):
    """Patterns from <Dockerfile>.dockerignore (BuildKit), else <context>/.dockerignore."""
    for p in (dockerfile + ".dockerignore", os.path.join(context, ".dockerignore")):
        if os.path.exists(p):
            with open(p) as fh:
                return [ln.strip().rstrip("/") for ln in fh
                        if ln.strip() and not ln.lstrip().startswith("#")]
    return []


def ignored(rel, patterns):
    parts = rel.split("/")
    for pat in patterns:
        pat = pat.lstrip("/")
        if pat.startswith("**/"):
            if any(fnmatch.fnmatchcase(x, pat[3:]) for x in parts):
                return True
        for i in range(1, len(parts) + 1):   # a pattern excludes a directory's contents too
            if fnmatch.fnmatchcase("/".join(parts[:i]), pat):
                return True
    return False


def subst(s, args):
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), s)


def flags_and_words(args):
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        flags[k] = v
    return flags, words


def check(dockerfile, context, layer=None, apt=True):
    """Errors (strings) of one Dockerfile with its build context."""
    errs = []
    ins = parse(dockerfile)
    ign = dockerignore(dockerfile, context)
    global_args, stages, seen_from = {}, [], False
    stage_args = {}
    for n, word, args in ins:
        where = "%s:%d" % (dockerfile, n)
        if word not in INSTRUCTIONS:
            errs.append("%s: unknown instruction %s" % (where, word))
            continue
        if not seen_from and word not in ("ARG", "FROM"):
            errs.append("%s: %s before the first FROM" % (where, word))
        if word == "ARG":
            k, _, v = args.partition("=")
            (stage_args if seen_from else global_args)[k.strip()] = v.strip()
        elif word == "FROM":
            seen_from = True
            stage_args = {}
            _, words = flags_and_words(args)
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                errs.append("%s: FROM IMAGE [AS NAME], got %r" % (where, args))
                continue
            image = subst(words[0], global_args)
            if "$" in image or not image:
                errs.append("%s: FROM %s: no ARG default for it" % (where, words[0]))
            name = words[2].lower() if len(words) == 3 else None
            if name and name in [s["name"] for s in stages]:
                errs.append("%s: stage name %s used twice" % (where, name))
            stages.append({"name": name, "image": image, "line": n, "ins": []})
        if stages and word != "FROM":
            stages[-1]["ins"].append((n, word, args))
        if word in EXEC_FORM and args.startswith("["):
            try:
                v = json.loads(args)
                if not (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
                    raise ValueError("not a non-empty list of strings")
            except ValueError as e:
                errs.append("%s: %s exec form is not a JSON string list: %s" % (where, word, e))
                continue
            if word == "ENTRYPOINT" and layer and v[0].startswith("/opt/civis-agent/"):
                p = os.path.join(layer, v[0][len("/opt/civis-agent/"):])
                if not os.access(p, os.X_OK):
                    errs.append("%s: ENTRYPOINT %s is not in the layer (%s)" % (where, v[0], p))
        elif word in ("ENTRYPOINT", "CMD"):
            errs.append("%s: use the exec form (JSON) for %s: a shell form would make /bin/sh "
                        "PID 1 instead of the agent, and needs a shell in the image" % (where, word))
        if word == "WORKDIR" and not args.startswith("/"):
            errs.append("%s: WORKDIR should be absolute" % where)
        if word == "ENV":
            try:
                toks = shlex.split(args)
            except ValueError as e:
                errs.append("%s: ENV: %s" % (where, e))
                toks = []
            for t in toks:
                if "=" not in t or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", t):
                    errs.append("%s: ENV wants KEY=VALUE pairs, got %r" % (where, t))
        if word in ("COPY", "ADD"):
            flags, words = flags_and_words(args)
            if args.lstrip("-").startswith("[") or len(words) < 2:
                if len(words) < 2:
                    errs.append("%s: %s needs SRC... DEST" % (where, word))
                continue
            if "from" in flags:
                ref = flags["from"].lower()
                names = [s["name"] for s in stages[:-1]]
                later = [s["name"] for s in stages[-1:]]
                if ref in later:
                    errs.append("%s: COPY --from=%s names the stage itself" % (where, ref))
                elif ref not in names and not ref.isdigit() and not re.search(r"[:/]", ref):
                    errs.append("%s: COPY --from=%s: no earlier stage of that name (an image "
                                "would need a tag or a registry path)" % (where, ref))
                continue
            for src in words[:-1]:
                if src == ".":
                    continue
                rel = os.path.normpath(src).lstrip("/")
                if not os.path.exists(os.path.join(context, rel)):
                    errs.append("%s: %s source %s is not in the context %s"
                                % (where, word, src, context))
                elif ign and ignored(rel, ign):
                    errs.append("%s: %s source %s is excluded by .dockerignore" % (where, word, src))
        if word == "RUN" and apt and "apt-get install" in args:
            pkgs = [w for w in re.split(r"[\s\\]+", args.split("apt-get install", 1)[1].split("&&")[0])
                    if w and not w.startswith("-")]
            for p in pkgs:
                if subprocess.run(["apt-cache", "show", p], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode != 0:
                    errs.append("%s: apt package %s unknown to apt-cache" % (where, p))
    if not stages:
        errs.append("%s: no FROM" % dockerfile)
    return errs


def stages_of(dockerfile):
    out, cur = {}, None
    for n, word, args in parse(dockerfile):
        if word == "FROM":
            _, words = flags_and_words(args)
            cur = words[2].lower() if len(words) == 3 else str(len(out))
            out[cur] = []
        elif cur is not None:
            out[cur].append((n, word, args))
    return out


def run_build_stage(dockerfile, context, stage, scratch, timeout=900):
    """Run the stage's RUN commands (but the apt-get ones) as the image would:
    COPY . . of the context (minus .dockerignore) into <scratch>/src, and every
    absolute path the commands name under / mapped to <scratch>. Returns
    (ok, output, {absolute path in the image: path in scratch})."""
    ins = stages_of(dockerfile)[stage]
    ign = dockerignore(dockerfile, context)
    workdir = "/"
    for _, word, args in ins:
        if word == "WORKDIR":
            workdir = args
    src = os.path.join(scratch, workdir.strip("/"))
    for dirpath, dirnames, filenames in os.walk(context):
        rel_dir = os.path.relpath(dirpath, context)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [d for d in dirnames if not ignored(os.path.join(rel_dir, d), ign)]
        for f in filenames:
            rel = os.path.join(rel_dir, f)
            if ignored(rel, ign):
                continue
            dst = os.path.join(src, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(context, rel), dst, follow_symlinks=False)
    log, mapping = [], {}
    for n, word, args in ins:
        if word != "RUN" or "apt-get" in args:
            continue
        def to_scratch(m):
            mapping[m.group(1)] = os.path.join(scratch, m.group(1).lstrip("/"))
            return mapping[m.group(1)]
        cmd = re.sub(r"(?<![\w.$-])(/(?:out|src)\b[\w./-]*)", to_scratch, args)
        # a clean make: nothing of an outer make's command line (SAN=1...)
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
        r = subprocess.run(["/bin/sh", "-c", cmd], cwd=src, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, env=env)
        log.append("RUN (line %d) -> %d\n%s" % (n, r.returncode, r.stdout.decode("utf-8", "replace")))
        if r.returncode != 0:
            return False, "\n".join(log), mapping
    return True, "\n".join(log), mapping


def main(argv):
    layer = None
    if len(argv) >= 2 and argv[0] == "--layer":
        layer, argv = argv[1], argv[2:]
    if not argv:
        print(__doc__.strip())
        return 2
    bad = 0
    for spec in argv:
        df, _, ctx = spec.partition(":")
        errs = check(df, ctx or os.path.dirname(df) or ".", layer)
        for e in errs:
            print(e)
        print("%s: %s" % (df, "ok" if not errs else "%d errors" % len(errs)))
        bad += bool(errs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
