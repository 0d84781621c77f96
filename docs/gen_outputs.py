"""Run the commands the docs show and write their output to docs/outputs/*.txt (included by the pages).

    python docs/gen_outputs.py                 # every snippet (about 10 minutes of CPU)
    python docs/gen_outputs.py quick resume    # only these snippets
    python docs/gen_outputs.py --work DIR export   # reuse DIR (its runs/quick) instead of rerunning quick

Commands run in a fresh temporary directory (so run directories and exports land there, never in
the tree) as ``python <repo>/train.py ...``; the snippets show them as ``python train.py ...``, with the
temporary directory and the interpreter's paths taken out, so every path is relative. The environment
sets ``OMP_NUM_THREADS=1`` (a shared machine). ``docs/outputs/about.md`` records the commit, machine and
date the snippets were produced on. README.md's tour shows shortened copies of some snippets: update it
by hand after a rerun.
"""
from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "outputs"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": str(REPO), "COLUMNS": "120"}


class Session:
    """One snippet: runs commands in the work directory and collects ``$ command`` + output."""

    def __init__(self, work: Path) -> None:
        self.work, self.lines = work, []

    def _program(self, shown: str) -> list[str]:
        """``python train.py a b`` -> the interpreter on the repository's train.py, run through bash."""
        real = re.sub(r"\bpython (train\.py|docs/examples/)", lambda m: f"{sys.executable} {REPO}/{m.group(1)}", shown)
        real = re.sub(r"\bpython -", f"{sys.executable} -", real)
        return ["bash", "-c", real]

    def run(self, shown: str, keep: tuple[int, int] | None = None, show_status: bool = False,
            select: Callable[[list[str]], list[str]] | None = None) -> str:
        """Run ``shown`` (as the docs show it) and record its merged stdout and stderr."""
        proc = subprocess.run(self._program(shown), cwd=self.work, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.record(shown, proc.stdout, keep, select)
        if show_status:
            self.lines.append(f"exit status {proc.returncode}")
        return proc.stdout

    def run_until(self, shown: str, marker: str) -> None:
        """Run ``shown`` and kill -9 it (its whole process group) once a line containing ``marker`` appears."""
        proc = subprocess.Popen(self._program(shown), cwd=self.work, env=ENV, text=True, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = []
        for line in proc.stdout:
            out.append(line)
            if marker in line:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait()
        self.record(shown, "".join(out))
        self.lines.append(f"# killed here with kill -9 (exit status {128 + signal.SIGKILL})")

    def record(self, shown: str, output: str, keep: tuple[int, int] | None = None,
               select: Callable[[list[str]], list[str]] | None = None) -> None:
        self.lines.append(f"$ {shown}")
        lines = clean(output).rstrip("\n").splitlines()
        if select:
            lines = select(lines)
        if keep and len(lines) > sum(keep) + 1:
            head, tail = keep
            lines = lines[:head] + [f"[... {len(lines) - head - tail} more lines ...]"] + lines[len(lines) - tail:]
        self.lines.extend(lines)


def clean(text: str) -> str:
    """Relative paths only: drop the work directory, the repository and the interpreter's prefixes."""
    for prefix, short in ((sysconfig.get_paths()["purelib"], "<site-packages>"), (str(REPO), "."),
                          (sys.prefix, "<venv>")):
        text = text.replace(prefix, short)
    text = re.sub(r"/[^\s:'\"]*/site-packages/", "<site-packages>/", text)  # also a base environment's
    text = re.sub(r"/tmp/cellsearch_docs_[^/\s]+/", "", text)
    return re.sub(r"/tmp/cellsearch_docs_[^/\s]+", ".", text)


# --- the snippets -----------------------------------------------------------------------------------------

def help_(s: Session) -> None:
    out = s.run("python train.py --help")
    # the composed config follows "== Config ==": long, and printed by --cfg job anyway
    cut = out.split("== Config ==")[0] + "== Config ==\n[... the composed configuration: python train.py --cfg job ...]"
    s.lines = [s.lines[0]] + clean(cut).rstrip("\n").splitlines()


def paper(s: Session) -> None:
    s.run("python train.py experiment=nasnet_paper --cfg job -p search")


def quick(s: Session) -> None:
    s.run("python train.py experiment=quick_cpu hydra.run.dir=runs/quick")
    s.run("ls runs/quick")


def resume(s: Session) -> None:
    cmd = "python train.py experiment=quick_cpu search=random search.budget=4 child.epochs=1 hydra.run.dir=runs/resume"
    s.run_until(cmd, "child 2/4")
    s.run(cmd)
    s.run("python train.py experiment=quick_cpu search=random search.budget=4 child.epochs=2 hydra.run.dir=runs/resume",
          show_status=True)
    s.run('sqlite3 -header -column runs/resume/trials.db "select trial_id, status, round(reward, 4) as reward, '
          'params, round(seconds, 1) as seconds from trials limit 3"')


def export(s: Session) -> None:
    s.run("python train.py task=export export.run=runs/quick export.name=quick_digits export.top_k=3 "
          "hydra.run.dir=runs/export")
    s.run("cat runs/export/quick_digits.yaml")
    s.run('python -c "\nimport timm, torch, cellsearch\n'
          "model = timm.create_model('cellnet_imagenet', genotype='runs/export/quick_digits.yaml')\n"
          "print(model.genotype.name, sum(p.numel() for p in model.parameters()), "
          "model(torch.randn(1, 3, 224, 224)).shape)\n"
          "cifar = timm.create_model('cellnet_cifar', genotype='runs/export/quick_digits_2.yaml', num_classes=10)\n"
          'print(sum(p.numel() for p in cifar.parameters()))\n"')


def retrain(s: Session) -> None:
    s.run("python train.py task=retrain cell=runs/export/quick_digits.yaml data=digits data.cutout=4 "
          "child.cells_per_stage=1 child.channels=8 child.epochs=2 child.enable_progress_bar=false "
          "hydra.run.dir=runs/retrain_quick")
    s.run('python -c "\nimport timm, torch, cellsearch\n'
          "model = timm.create_model('local-dir:runs/retrain_quick/weights', pretrained=True).eval()\n"
          "print(type(model).__name__, model.genotype.name, model.num_classes, model.pretrained_cfg['input_size'])\n"
          'print(model(torch.zeros(2, 1, 8, 8)).argmax(1))\n"')


def sweep(s: Session) -> None:
    s.run("python train.py -m experiment=quick_cpu search=random,evolution search.budget=1 "
          "hydra.sweep.dir=multirun/demo")
    s.run("ls multirun/demo")


def errors(s: Session) -> None:
    (s.work / "bad_cell.yaml").write_text(
        "normal:\n  blocks:\n    - {inputs: [5, 0], ops: [conv_3x3, identity], combine: add}\n  concat: [2]\n"
        "reduce:\n  blocks:\n    - {inputs: [0, 1], ops: [max_pool_3x3, identity], combine: add}\n  concat: [2]\n")
    for args in ("search=bayes", "child.width=32", "search.budget=0", "data=cifar10 data.download=false",
                 "task=retrain cell=bad_cell.yaml"):
        s.run(f"python train.py {args}", show_status=True)


def validation(s: Session) -> None:
    for args in ("child.lr=-0.1", "data.flip=maybe"):
        s.run(f"python train.py experiment=quick_cpu {args}", show_status=True)


def summary_only(lines: list[str]) -> list[str]:
    """The first two lines, the last child line and the summary, with the front cut to its last three rows."""
    done = next(i for i, line in enumerate(lines) if "search done" in line)
    front = next((i for i, line in enumerate(lines) if line.startswith("Pareto front")), len(lines))
    rows = [i for i in range(front + 1, len(lines)) if lines[i].startswith("  trial ")]
    cut = set(rows[:-3])
    kept = lines[:2] + [f"[... {done - 3} more child lines ...]", lines[done - 1]]
    for i in range(done, len(lines)):
        if i in cut:
            if i == rows[0]:
                kept.append(f"  [... {len(cut)} more trials on the front ...]")
            continue
        kept.append(lines[i])
    return kept


def table(s: Session) -> None:
    s.run("python train.py experiment=testbed_table search=evolution hydra.run.dir=runs/table", select=summary_only)


def curves(s: Session) -> None:
    s.run("python train.py experiment=testbed_curves scheduler=asha hydra.run.dir=runs/curves", select=summary_only)


def landscape(s: Session) -> None:
    s.run("python train.py evaluator=landscape evaluator.family=epistatic search.budget=300 "
          "hydra.run.dir=runs/landscape", keep=(2, 12))


def constrained(s: Session) -> None:
    s.run("python train.py experiment=quick_cpu search=random search.budget=4 child.epochs=1 "
          "objective=constrained objective.metric=params objective.target=20000 evaluator.latency=true "
          "hydra.run.dir=runs/c1", keep=(2, 30))
    s.run("python train.py resume=runs/c1 search.budget=5")
    s.run("sqlite3 -header -column runs/c1/trials.db 'select trial_id, round(reward,4) reward, "
          "round(val_accuracy,4) val_accuracy, params, mult_adds, round(latency_ms,2) latency_ms from trials'")
    s.run("cat runs/c1/device.txt")


def prejudge(s: Session) -> None:
    s.run("python train.py experiment=quick_cpu search=evolution search.budget=4 child.epochs=1 "
          "prejudge=naswot prejudge.candidates=3 prejudge.audit=2 hydra.run.dir=runs/a1")


def oneshot(s: Session) -> None:
    s.run("python train.py experiment=oneshot_quick_cpu search.budget=20 evaluator.warmup_epochs=2 "
          "evaluator.final_candidates=4 hydra.run.dir=runs/oneshot", keep=(4, 30))


def deploy(s: Session) -> None:
    s.run("python train.py task=export export.format=onnx export.run=runs/quick export.out=deployed")
    s.run('python -c "\nimport numpy as np, onnxruntime as ort\n'
          "session = ort.InferenceSession('deployed/best_cell.onnx', providers=['CPUExecutionProvider'])\n"
          "print([(i.name, i.shape) for i in session.get_inputs()], [(o.name, o.shape) for o in session.get_outputs()])\n"
          "shape = [4] + session.get_inputs()[0].shape[1:]                 # a batch of 4 at the network's input size\n"
          "images = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)\n"
          "logits = session.run(None, {'image': images})[0]\n"
          'print(logits.shape, logits.argmax(1))\n"')


def describe(s: Session) -> None:
    s.run("python -m cellsearch.describe nasnet_a --skeleton imagenet -N 4 -F 44")


def models(s: Session) -> None:
    s.run('python -c "import cellsearch, timm; print(timm.list_models([\'cellnet_*\', \'nasrl_*\', \'hierarchical_*\']))"')


def ask_tell(s: Session) -> None:
    s.run("python docs/examples/ask_tell.py")


def genotypes(s: Session) -> None:
    s.run("python docs/examples/genotypes.py")


def search_lines(lines: list[str]) -> list[str]:
    """The first two lines, the last child line and what follows "search done" up to the best cell's line."""
    done = next(i for i, line in enumerate(lines) if "search done" in line)
    best = next(i for i, line in enumerate(lines) if line.startswith("best cell:"))
    return lines[:2] + [f"[... {done - 3} more child lines ...]", lines[done - 1]] + lines[done:best + 1]


def spaces(s: Session) -> None:
    s.run("python train.py experiment=testbed_nasrl search.budget=20 export.name=nasrl_found hydra.run.dir=runs/nasrl",
          select=search_lines)
    s.run("cat runs/nasrl/nasrl_found.yaml")
    s.run("python train.py experiment=testbed_hierarchical search.budget=12 search.population_size=6 "
          "search.sample_size=2 export.name=hier_found hydra.run.dir=runs/hier", select=search_lines)
    s.run("python -m cellsearch.describe runs/hier/hier_found.yaml -N 1 -F 16")
    s.run('python -c "\nimport timm, torch, cellsearch\n'
          "for name, cell in [('nasrl_cifar', 'runs/nasrl/nasrl_found.yaml'), ('hierarchical_imagenet', "
          "'runs/hier/hier_found.yaml')]:\n"
          "    model = timm.create_model(name, genotype=cell)\n"
          "    size = model.pretrained_cfg['input_size']\n"
          "    print(name, sum(p.numel() for p in model.parameters()), model(torch.randn(1, *size)).shape)\n\"")


SNIPPETS: dict[str, Callable[[Session], None]] = {
    "help": help_, "paper": paper, "quick": quick, "table": table, "landscape": landscape, "models": models,
    "ask_tell": ask_tell, "genotypes": genotypes, "describe": describe, "export": export, "deploy": deploy,
    "errors": errors, "validation": validation, "resume": resume, "sweep": sweep, "retrain": retrain,
    "constrained": constrained, "prejudge": prejudge, "oneshot": oneshot, "curves": curves, "spaces": spaces,
}
NEEDS = {"export": ["quick"], "retrain": ["quick", "export"], "deploy": ["quick"]}
NEED_DIRS = {"quick": "runs/quick", "export": "runs/export/quick_digits.yaml"}


def about() -> str:
    """Where and from what the snippets come: commit, machine, versions, date."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                            capture_output=True).stdout.strip()
    model = next((line.split(":", 1)[1].strip() for line in
                  subprocess.run(["lscpu"], text=True, capture_output=True).stdout.splitlines()
                  if line.startswith("Model name")), platform.processor())
    import torch  # noqa: PLC0415  (only for the versions line)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return (f"Outputs produced by `python docs/gen_outputs.py` at commit `{commit}` on {date}, on a "
            f"{os.cpu_count()}-core {model} CPU (no GPU, shared with other jobs, so times vary), Python "
            f"{platform.python_version()}, torch {torch.__version__}, `OMP_NUM_THREADS=1` in the environment (the "
            f"search itself sets the threads its children train with). Run directories are relative to the "
            f"directory the commands ran in.\n")


def main(names: list[str]) -> None:
    work = None
    if names[:1] == ["--work"]:
        work, names = Path(names[1]), names[2:]
    unknown = sorted(set(names) - set(SNIPPETS))
    if unknown:
        raise SystemExit(f"unknown snippet(s) {unknown}; choose from {sorted(SNIPPETS)}")
    chosen = names or list(SNIPPETS)
    OUT.mkdir(parents=True, exist_ok=True)
    # with --work, prerequisites already run there (their run directories exist) are not run again
    done = {need for need in ("quick", "export") if work and (work / NEED_DIRS[need]).exists()}
    work = work or Path(tempfile.mkdtemp(prefix="cellsearch_docs_"))
    for name in chosen:
        for need in NEEDS.get(name, []) + [name]:
            if need in done:
                continue
            start = time.time()
            session = Session(work)
            SNIPPETS[need](session)
            if need in chosen:
                (OUT / f"{need}.txt").write_text("\n".join(session.lines) + "\n")
            done.add(need)
            print(f"{need}: {time.time() - start:.0f} s", flush=True)
    (OUT / "about.md").write_text(about())
    print(f"work directory: {work} (remove it when done)")


if __name__ == "__main__":
    main(sys.argv[1:])
