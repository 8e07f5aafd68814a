"""Runs a fuzz target with atheris (coverage-guided, libFuzzer underneath).

    python -m tests.fuzz TARGET [--seconds N | --runs N] [--seed N] [--keep-going]
    python -m tests.fuzz all --seconds N          # every target in turn
    python -m tests.fuzz TARGET --merge           # new coverage from .fuzz/ into the corpus
    python -m tests.fuzz TARGET --replay FILE...  # run inputs once, no atheris
    python -m tests.fuzz TARGET --minimize FILE   # a smaller input with the same finding

Targets: query, fastpath, slowpath, upstream (see targets.py, upstream.py).
Run from the repository root. The repo corpus (tests/fuzz/corpus/TARGET/)
is read, never written, except by --merge; new inputs go to
.fuzz/TARGET/corpus/, crashing inputs to .fuzz/TARGET/crashes/. With
--keep-going a finding does not stop the run: the first input of each kind
(grouped by the invariant's message, or by exception and gateway line) is
written to .fuzz/TARGET/findings/ and the run goes on.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import re
import shlex
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
WORK = ROOT / ".fuzz"
# (module, class, the longest input libFuzzer makes): replies may be big.
TARGETS: dict[str, tuple[str, str, int]] = {
    "query": ("tests.fuzz.targets", "QueryTarget", 1024),
    "fastpath": ("tests.fuzz.targets", "FastPathTarget", 1024),
    "slowpath": ("tests.fuzz.targets", "SlowPathTarget", 1024),
    "upstream": ("tests.fuzz.upstream", "UpstreamTarget", 8192),
}
# The launcher's flag: the rest of the command line is libFuzzer's.
CHILD = "--libfuzzer-child"
# Attempts --minimize makes (each runs the target once).
MINIMIZE_BUDGET = 4000

Target = Callable[[bytes], None]


def load(name: str, *, instrument: bool) -> Target:
    """The target, its gateway modules instrumented for coverage when asked."""
    module_name, class_name, _ = TARGETS[name]
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["gateway"]):
            module = importlib.import_module(module_name)
    else:
        module = importlib.import_module(module_name)
    target: Target = getattr(module, class_name)()
    return target


def signature(exc: BaseException) -> str:
    """What kind of finding: the invariant's message, or the exception and where
    in the gateway it was raised."""
    from tests.fuzz.checks import Violation

    if isinstance(exc, Violation):
        return str(exc)
    where = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if "/gateway/" in frame.filename:
            where = f"{frame.filename.split('/gateway/')[-1]}:{frame.lineno}"
    return f"{type(exc).__name__} in gateway/{where}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


class KeepGoing:
    """Runs the target; records the first input of each kind of finding and goes on."""

    def __init__(self, target: Target, findings: Path) -> None:
        self._target = target
        self._findings = findings
        self._seen: set[str] = set()
        findings.mkdir(parents=True, exist_ok=True)

    def __call__(self, data: bytes) -> None:
        try:
            self._target(data)
        except Exception as exc:
            kind = signature(exc)
            if kind in self._seen:
                return
            self._seen.add(kind)
            path = self._findings / f"{slug(kind)}-{hashlib.sha1(data).hexdigest()[:12]}"
            path.write_bytes(data)
            print(f"FINDING {kind}: {path}", flush=True)


def replay(target: Target, files: Sequence[Path]) -> int:
    failed = 0
    for file in files:
        try:
            target(file.read_bytes())
        except Exception as exc:
            failed += 1
            print(f"{file}: {signature(exc)}")
            traceback.print_exception(exc, file=sys.stdout)
        else:
            print(f"{file}: ok")
    print(f"{len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0


def minimize(target: Target, data: bytes) -> bytes:
    """A shorter input with the same finding: drops chunks, halving their size."""

    def kind(candidate: bytes) -> str | None:
        try:
            target(candidate)
        except Exception as exc:
            return signature(exc)
        return None

    wanted = kind(data)
    if wanted is None:
        raise SystemExit("the input shows no finding")
    budget = MINIMIZE_BUDGET
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and budget > 0:
        at = 2  # the two control bytes stay
        while at < len(data) and budget > 0:
            candidate = data[:at] + data[at + chunk :]
            budget -= 1
            if kind(candidate) == wanted:
                data = candidate
            else:
                at += chunk
        chunk //= 2
    return data


def run_all(args: argparse.Namespace, rest: list[str]) -> int:
    worst = 0
    for name in TARGETS:
        command = [sys.executable, "-m", "tests.fuzz", name, *_passed_on(args), *rest]
        print("+", " ".join(command), flush=True)
        worst = max(worst, subprocess.call(command, cwd=ROOT))
    return worst


def _passed_on(args: argparse.Namespace) -> list[str]:
    out = []
    for flag, value in (("--seconds", args.seconds), ("--runs", args.runs), ("--seed", args.seed)):
        if value is not None:
            out += [flag, str(value)]
    if args.work is not None:
        out += ["--work", str(args.work)]
    if args.keep_going:
        out.append("--keep-going")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=int, help="stop after this long (libFuzzer time)")
    parser.add_argument("--runs", type=int, help="stop after this many inputs")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (default: random)")
    parser.add_argument("--work", type=Path, help="where new inputs and crashes go (.fuzz/)")
    parser.add_argument("--keep-going", action="store_true", help="record findings, go on")
    parser.add_argument("--merge", action="store_true", help="add new coverage to the corpus")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE")
    parser.add_argument("--minimize", type=Path, metavar="FILE")
    if len(argv) >= 2 and argv[1] == CHILD:  # started by libFuzzer (see launcher())
        fuzz(argv[0], [sys.argv[0], *argv[2:]], None)
    args, rest = parser.parse_known_args(argv)
    if args.target == "all":
        return run_all(args, rest)
    if args.replay or args.minimize:
        target = load(args.target, instrument=False)
        if args.minimize:
            small = minimize(target, args.minimize.read_bytes())
            out = args.minimize.with_name(args.minimize.name + ".min")
            out.write_bytes(small)
            print(f"{len(small)} bytes: {out}")
            return 0
        return replay(target, args.replay)
    work = (args.work or WORK) / args.target
    corpus = CORPUS / args.target
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    (work / "crashes").mkdir(parents=True, exist_ok=True)
    max_len = TARGETS[args.target][2]
    fuzzer_args = [
        str(launcher(work, args.target)),
        f"-max_len={max_len}",
        f"-artifact_prefix={work}/crashes/",
    ]
    if args.seconds is not None:
        fuzzer_args.append(f"-max_total_time={args.seconds}")
    if args.runs is not None:
        fuzzer_args.append(f"-runs={args.runs}")
    if args.seed is not None:
        fuzzer_args.append(f"-seed={args.seed}")
    fuzzer_args += rest
    if args.merge:
        fuzzer_args += ["-merge=1", str(corpus), str(work / "corpus")]
    else:
        fuzzer_args += [str(work / "corpus"), str(corpus)]
    fuzz(args.target, fuzzer_args, work / "findings" if args.keep_going else None)
    return 0


def fuzz(name: str, fuzzer_args: list[str], findings: Path | None) -> None:
    """Runs libFuzzer on the target in this process; does not return."""
    import atheris

    target = load(name, instrument=True)
    if findings is not None:
        target = KeepGoing(target, findings)
    atheris.Setup(fuzzer_args, target)
    atheris.Fuzz()


def launcher(work: Path, name: str) -> Path:
    """An executable that runs the target with libFuzzer's own arguments: libFuzzer
    starts its argv[0] again for -merge (and -fork, -minimize_crash)."""
    path = work / "run"
    command = [sys.executable, "-m", "tests.fuzz", name, CHILD]
    path.write_text(f'#!/bin/sh\ncd {shlex.quote(str(ROOT))} && exec {shlex.join(command)} "$@"\n')
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
