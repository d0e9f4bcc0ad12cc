"""The docs stay true (issue 25): README.md is the short path (at most 200 lines); every shell command in README.md
and docs/*.md is either run here, in the form it is written (those with --smoke-test, --dry-run or --help; their
--out / --output-dir / --storage-path / --work-dir go to tmp_path), or listed in ALLOWLIST with the reason it is not;
every relative link resolves to a file (and a #section to a heading in it).

The commands that start a local Ray are marked `ray` and their test ids begin with `starts_ray`: run the rest with
    python -m pytest -q tests/test_docs.py -m "not ray"
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

# A line in a ```bash / ```sh / ``` block is a command when its first word is one of these (or .venv/...).
COMMAND_WORDS = {"python", "python3", "ray", "bash", "sh", "pip", "pip3", "pytest", "aws", "export", "cd", "git",
                 "docker", "kubectl", "torchrun", "uv", "conda", "make", "curl", "wget", "source", "sudo", "apt-get"}
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
CHEAP_FLAGS = {"--smoke-test", "--dry-run", "--help"}
REDIRECTED_FLAGS = ("--out", "--output-dir", "--storage-path", "--work-dir")  # their values go to tmp_path

TRAINS = "trains for minutes; its --smoke-test form runs in the test suite"
SMOKE_RUN = "its --smoke-test form is run (docs/stages.md)"
USAGE = "a usage line with [optional] flags, not one command"
CLUSTER = "needs a Ray cluster made with `ray up cluster.yaml` (cloud account, bucket)"
BENCH = "a benchmark: it times minutes of work and prints numbers, it asserts nothing (docs/benchmarks.md)"
GPU_CHECK = "needs a CUDA GPU host and staged wheels (docs/benchmarks.md, GPU check)"
OWN_DATA = "the real sweep: needs your own images (its --dry-run form is run)"

# command text (comments dropped, whitespace collapsed) or a prefix matching exactly one command -> why it is not run.
# A key that is itself a command allows only that command, never the longer ones it begins.
ALLOWLIST: dict[str, str] = {
    # README.md
    'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python sweeps/augment_ratio.py':
        "installs packages, then runs the full demo sweep (15.6 minutes measured); its --smoke-test form is run",
    ".venv/bin/python -m pytest -q": "the whole test suite, which holds this test (.ci/run runs it)",
    "python sweeps/augment_ratio.py --data ~/my_images": OWN_DATA,
    "python sweeps/augment_ratio.py --config sweeps/configs/skin_lesion_64.yaml --data ~/isic":
        OWN_DATA + "; the shipped configs' smoke tests run in tests/test_sweep.py",
    # README.md and docs/cluster.md
    "ray get-auth-token --generate": "writes the user's ~/.ray/auth_token, the cluster's token",
    "ray up cluster.yaml": CLUSTER,
    "ray submit --tmux cluster.yaml": CLUSTER,
    "ray attach cluster.yaml": CLUSTER,
    "ray dashboard cluster.yaml": CLUSTER,
    # docs/stages.md
    "python -m data_prep --source demo --out runs/demo [": USAGE + "; `python -m data_prep --smoke-test` is run",
    "python -m trainables.gan --manifest runs/demo/manifest.parquet": TRAINS + " (tests/test_gan.py)",
    "python -m trainables.gan.sample --checkpoint runs/gan/": SMOKE_RUN + "; needs a trained GAN's checkpoint",
    "python -m trainables.gan.evaluate --checkpoint": "needs a trained GAN's checkpoint; its --smoke-test form runs "
                                                      "in tests/test_generative_metrics.py",
    "python -m trainables.gan --manifest M --out runs/cgan": USAGE + "; the conditional GAN's smoke test runs in "
                                                             "tests/test_gan_breadth.py",
    "python -m trainables.gan.sample --checkpoint runs/cgan/": SMOKE_RUN + "; needs a trained conditional GAN",
    "python -m trainables.classifier --manifest runs/demo/manifest.parquet":
        USAGE + "; needs a sampled synthetic set; " + TRAINS + " (tests/test_classifier_train.py)",
    "python -m trainables.classifier --config FILE.yaml": USAGE + "; needs a saved run config (tests/test_export.py "
                                                          "re-runs an exported one)",
    "python -m trainables.classifier --manifest M --out runs/clf_ctl": TRAINS + " (tests/test_controls.py); M is a "
                                                                       "placeholder for a manifest",
    "python -m trainables.classifier --manifest M --out runs/clf_mix": TRAINS + "; needs three sampled synthetic sets",
    "python -m trainables.classifier --manifest M --out runs/clf_cur": TRAINS + "; needs a sampled synthetic set "
                                                                       "(tests/test_curation.py runs curation)",
    "python sweeps/augment_ratio.py [--smoke-test]": USAGE + "; `python sweeps/augment_ratio.py --smoke-test` is run",
    "python -m analysis.report results/augment_ratio/results.parquet": "needs a finished sweep's results; its "
                                                                        "--smoke-test form is run",
    "python -m analysis.export results/augment_ratio/results.parquet": "needs a finished sweep's results; its "
                                                                        "--smoke-test form is run",
    # docs/sweep.md
    "python sweeps/augment_ratio.py": "the full demo sweep (7.9 minutes measured); its --smoke-test form is run",
    # docs/benchmarks.md
    "python bench/ingest.py": BENCH,
    "python bench/gan_step.py": BENCH + "; GPU (--cpu-small on CPU)",
    "python bench/fid.py": BENCH,
    "python bench/sweep.py": BENCH + "; starts Ray, GPU (--cpu-small on CPU)",
    "python bench/memory.py": BENCH,
    "python bench/results_scale.py": BENCH,
    "python bench/small_data_gan.py": BENCH + "; trains 12 GANs for a minute each",
    "python bench/sweep_time.py": BENCH + "; reads a finished sweep's results.parquet",
    "bash bench/gpu_check.sh --prepare": "stages Ray, Optuna and pytest wheels in .devwheels/ for a GPU host "
                                         "(../shared/gpu/stage-wheels.sh)",
    "bash bench/gpu_check.sh --only": GPU_CHECK,
}


def shell_commands(path: Path, root: Path = ROOT) -> list[tuple[str, str]]:
    """(command, file:line) for each command line in the file's shell blocks; backslash continuations joined,
    comments dropped, whitespace collapsed."""
    found, block, pending, start = [], None, "", 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if s.startswith("```"):
            block = None if block is not None else s[3:].strip().lower()
            continue
        if block not in SHELL_BLOCKS:
            continue
        s = re.sub(r"(^|\s)#.*$", "", s).strip()
        if not pending:
            start = n
        s = f"{pending} {s}".strip() if pending else s
        if s.endswith("\\"):
            pending = s[:-1].strip()
            continue
        pending = ""
        first = s.split(" ", 1)[0] if s else ""
        if first in COMMAND_WORDS or first.startswith(".venv/"):
            found.append((" ".join(s.split()), f"{path.relative_to(root)}:{start}"))
    return found


def all_commands() -> dict[str, list[str]]:
    """Each distinct command -> where it is written."""
    out: dict[str, list[str]] = {}
    for path in DOCS:
        for cmd, where in shell_commands(path):
            out.setdefault(cmd, []).append(where)
    return out


COMMANDS = all_commands()


def allowlisted(cmd: str) -> list[str]:
    """The ALLOWLIST entries naming cmd: its exact text, else the prefixes that are not commands themselves."""
    if cmd in ALLOWLIST:
        return [cmd]
    return [key for key in ALLOWLIST if key not in COMMANDS and cmd.startswith(key)]


def is_cheap(cmd: str) -> bool:
    return bool(CHEAP_FLAGS & set(cmd.split()))


def starts_ray(cmd: str) -> bool:
    """The sweep starts a local Ray unless it only prints (--help) or plans (--dry-run)."""
    return "sweeps/augment_ratio.py" in cmd and not {"--help", "--dry-run"} & set(cmd.split())


RUN = sorted(c for c in COMMANDS if not allowlisted(c))


def _slug(cmd: str) -> str:
    words = cmd.replace("python -m ", "").replace("python ", "").split()
    return ("starts_ray-" if starts_ray(cmd) else "") + "_".join(re.sub(r"[^\w.-]", "", w) for w in words)[:60]


def _argv(cmd: str, tmp_path: Path) -> list[str]:
    argv = shlex.split(cmd)
    assert argv[0] in ("python", "python3") or argv[0].endswith("/python"), f"only python commands run here: {cmd}"
    argv[0] = sys.executable
    for i, word in enumerate(argv[:-1]):
        if word in REDIRECTED_FLAGS:
            argv[i + 1] = str(tmp_path / (Path(argv[i + 1]).name or "out"))
    if starts_ray(cmd) and "--storage-path" not in argv:  # the sweep's results would land in ROOT/results
        argv += ["--storage-path", str(tmp_path / "results")]
    return argv


# ---------------------------------------------------------------- README length

def test_readme_is_the_short_path():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move reference material into docs/"


# ---------------------------------------------------------------- every command is run or allowlisted

def test_the_docs_hold_commands_and_each_one_is_run_or_allowlisted():
    assert len(COMMANDS) >= 10 and RUN, COMMANDS
    for cmd, where in COMMANDS.items():
        keys = allowlisted(cmd)
        assert len(keys) <= 1, f"{where}: {cmd!r} matches several ALLOWLIST entries: {keys}"
        if not keys:
            assert is_cheap(cmd), (f"{where}: {cmd!r} is neither run here (it has no --smoke-test, --dry-run or "
                                   "--help) nor in ALLOWLIST with the reason it is not")


def test_every_allowlist_entry_names_one_command_and_hides_no_cheap_one():
    for key, reason in ALLOWLIST.items():
        matched = [c for c in COMMANDS if key in allowlisted(c)]
        assert len(matched) == 1, f"ALLOWLIST {key!r} matches {len(matched)} commands: {matched}"
        assert reason.strip(), key
        cmd = matched[0]
        runnable = is_cheap(cmd) and "[" not in cmd
        assert not runnable, f"{cmd!r} ({COMMANDS[cmd]}) is cheap: run it instead of allowlisting it"


RAY_MARKS = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.parametrize("cmd", [pytest.param(c, id=_slug(c), marks=RAY_MARKS if starts_ray(c) else []) for c in RUN])
def test_documented_command_runs(cmd, tmp_path):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(_argv(cmd, tmp_path), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900 if starts_ray(cmd) else 300)
    assert proc.returncode == 0, (f"{cmd} ({COMMANDS[cmd]}) exit {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    assert proc.stdout.strip(), f"{cmd}: printed nothing"


def test_the_extractor_joins_continuations_and_drops_comments(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n```bash\n# a comment\npython a.py --x 1 \\\n   --y 2   # why\nls -l\n```\n"
                   "```python\npython not_shell.py\n```\n```\nray up c.yaml\n```\n")
    assert shell_commands(doc, tmp_path) == [("python a.py --x 1 --y 2", "x.md:4"), ("ray up c.yaml", "x.md:12")]


# ---------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](image)
FENCED = re.compile(r"^```.*?^```", re.M | re.S)


def _anchors(path: Path) -> set[str]:
    """GitHub's ids of a markdown file's headings (outside code blocks)."""
    out, in_code = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    targets = LINK.findall(FENCED.sub("", doc.read_text()))  # links, not code that looks like one
    assert targets or doc.name != "README.md"
    bad = []
    for target in targets:
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{doc.relative_to(ROOT)}: {bad}"


def test_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    for doc in DOCS[1:]:
        assert f"(docs/{doc.name}" in readme, f"README.md does not link docs/{doc.name}"
