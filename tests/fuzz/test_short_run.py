"""The short fuzz run of ``make test``: every target, a bounded number of inputs.

Each target runs in its own process (atheris ends the process when it is
done) with a fixed seed, over the repo corpus first: the ``regress-*``
inputs there once broke an invariant, so a regression fails here at once.
The long run is ``python -m tests.fuzz TARGET --seconds N`` (README,
"Fuzzing").
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.__main__ import CORPUS, ROOT

# Inputs per target (the corpus included): about 5 s each on a 2-core VM.
RUNS = {"query": 60_000, "fastpath": 30_000, "slowpath": 15_000, "upstream": 1_000}
# A cap on each run's libFuzzer time (seconds) on slower machines; the
# corpus always runs in full (checked below).
MAX_SECONDS = 20
SEED = 1
# What libFuzzer prints when it stops by itself after -runs/-max_total_time.
DONE = re.compile(r"^Done (\d+) runs in", re.MULTILINE)


@pytest.mark.parametrize("target", sorted(RUNS))
def test_short_fuzz_run_finds_nothing(target: str, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "tests.fuzz", target, "--runs", str(RUNS[target]),
        "--seconds", str(MAX_SECONDS), "--seed", str(SEED), "--work", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    done = DONE.search(output)
    assert done is not None, output[-3000:]
    corpus_files = len(list((CORPUS / target).iterdir()))
    assert corpus_files > 0
    assert int(done.group(1)) >= corpus_files
    assert list((tmp_path / target / "crashes").iterdir()) == []
