"""Stand-ins for the heavy commands README.md shows, for tests/test_readme.py.

The README's fenced shell blocks run in a real bash, in a folder laid out like the clone,
with this script first on PATH under the names below (one symlink each). Every stand-in

- records the command as bash expanded it (README_LOG, one JSON line each), so the test can
  parse the ``swift`` and ``data_tools`` ones afterwards with ms-swift's and the tools' own
  parsers, in one process;
- checks that every local path the command reads exists: a step that reads what no earlier
  step wrote (or the README does not say to fetch) fails here, naming the path;
- creates what the real command would write, in the places it would write them (a complete
  checkpoint folder under ``--output_dir/v0-<date>/``, a merged model folder, a registry YAML
  with the dataset name the tool gives, ...), so the next step finds them.

Recipes run for real with ``DRY_RUN=1`` (their own checks, the commands they print); the
``swift`` commands they print go through the same stand-in. ``python -m svp...`` and
``python -c`` run for real. Nothing here is imported by the package.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

LOG = Path(os.environ["SVP_README_LOG"])
REAL_PY = os.environ["SVP_README_PYTHON"]
REAL_BASH = "/bin/bash"
#: first folders of relative paths the README writes or reads; anything else with one slash
#: (``Qwen/Qwen2.5-VL-7B-Instruct``) is a hub id, fetched by ms-swift
LOCAL_ROOTS = ("data", "output", "runs", "ckpt", "models", "eval", "vis", "decoded",
               "covt_cache", "demo_out", "recipes", "plugins", "data_tools", "requirements")
HUB_ID = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
#: options whose value a command writes
OUTPUTS = {"--out", "--output", "--output_dir", "--output_json", "--result_path", "--cache",
           "--overlays", "--crops-dir", "--local_dir", "--local-dir"}
#: data tools cheap enough to run for real (they print the settings a user then copies)
REAL_TOOLS = {"configure_training.py", "plan_memory.py"}
#: a chain recipe's dry run names the checkpoint a stage will write with this
PLACEHOLDER = "vN-DATE/checkpoint-"
STEP = 100


def fail(message: str) -> None:
    print(f"README step failed: {message}", file=sys.stderr)
    sys.exit(3)


def record(kind: str, argv: list[str], **extra) -> None:
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("SVP_", "USE_HF", "MAX_PIXELS", "MIN_PIXELS", "NPROC_PER_NODE"))
           and not k.startswith("SVP_README")}
    with LOG.open("a") as f:
        f.write(json.dumps({"kind": kind, "argv": argv, "cwd": os.getcwd(), "env": env,
                            **extra}) + "\n")


def is_local(value: str) -> bool:
    if value.startswith(("/", "./", "../", "~")):
        return True
    first = value.split("/", 1)[0]
    return "/" in value and first in LOCAL_ROOTS or Path(first).is_dir() and "/" in value


def need(value: str, why: str) -> None:
    """A local path the command reads must be there (a glob: at least one match)."""
    path = value.split("%", 1)[0].split("#", 1)[0]
    if PLACEHOLDER in path:
        prefix = path.split(PLACEHOLDER)[0]
        if not glob.glob(f"{prefix}v*/checkpoint-*"):
            fail(f"{why} {value}: no checkpoint under {prefix} (no earlier step wrote one)")
        return
    if any(c in path for c in "*?["):
        if not glob.glob(path):
            fail(f"{why} {value}: nothing matches (no earlier step wrote it)")
        return
    if not Path(path).exists():
        fail(f"{why} {value}: not there (no earlier step wrote it, and the README does not "
             "say to fetch it)")


def options(words: list[str]) -> list[tuple[str, str]]:
    """(option, value) pairs; an option followed by several words (nargs='+') gives a pair
    for each, and ``--opt=value`` is split."""
    pairs, opt = [], None
    for w in words:
        if w.startswith("--"):
            opt, eq, val = w.partition("=")
            if eq:
                pairs.append((opt, val))
                opt = None
        elif opt is not None:
            pairs.append((opt, w))
    return pairs


def codec_path(value: str) -> str | None:
    kind, sep, path = value.partition(":")
    return path if sep and kind in ("builtin", "samtok") else None


def touch(path: Path, text: str = "stand-in\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text)


def make_output(value: str) -> Path:
    path = Path(value)
    if path.suffix:
        touch(path)
    else:
        path.mkdir(parents=True, exist_ok=True)
    return path


def registry_entry(folder: Path, name: str) -> None:
    """What tokenize_gres.py / tokenize_dam.py leave: NAME.jsonl and its entry in the
    folder's datasets.yaml (other names kept)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    touch(folder / f"{name}.jsonl", "{}\n")
    reg = folder / "datasets.yaml"
    doc = yaml.safe_load(reg.read_text()) if reg.exists() else None
    doc = doc or {"datasets": {}}
    doc["datasets"][name] = {"annotation_path": f"{name}.jsonl"}
    reg.write_text(yaml.safe_dump(doc))


def registry_names() -> set[str]:
    import yaml

    names: set[str] = set()
    spec = os.environ.get("SVP_DATASET_REGISTRY") or ("datasets.yaml" if Path("datasets.yaml")
                                                      .exists() else "")
    for file in filter(None, spec.split(os.pathsep)):
        need(file, "the dataset registry")
        doc = yaml.safe_load(Path(file).read_text()) or {}
        names |= set(doc.get("datasets", doc))
    return names


# ------------------------------------------------------------------------------- tools
def data_tool(script: str, args: list[str]) -> None:
    name = Path(script).name
    if not (Path("data_tools") / name).is_file():
        fail(f"python {script}: no such tool")
    record("tool", [name, *args])
    pairs = options(args)
    for opt, value in pairs:
        if opt in OUTPUTS:
            continue
        path = codec_path(value)
        if path:
            need(path, f"{name} {opt}")
        elif is_local(value):
            need(value, f"{name} {opt}")
    if name in REAL_TOOLS:
        rc = subprocess.run([REAL_PY, script, *args]).returncode
        if rc != 0:
            fail(f"python {script} exited {rc}")
        return
    get = dict(pairs).get
    for opt, value in pairs:
        if opt in OUTPUTS:
            make_output(value)
    out = get("--out")
    if name == "tokenize_gres.py":
        registry_entry(Path(out), get("--name") or f"gres_{get('--split') or 'train'}")
    elif name == "tokenize_dam.py":
        registry_entry(Path(out), get("--name") or "dam")
    elif name == "train_mask_codec.py":
        touch(Path(out) / "codec.pt")
    elif name == "convert_vlmr3.py":
        touch(Path(get("--output")).with_suffix(".summary.json"), "{}\n")
    elif name in ("build_neo.py", "make_tiny_model.py", "add_special_tokens.py"):
        config = {"model_type": get("--arch") or ""}
        if name == "build_neo.py":  # the recipes read its architecture: NEO-2B's, bundled
            config = json.loads(Path("svp/common/model_configs/neo_2b.json").read_text())
        touch(Path(out) / "config.json", json.dumps(config) + "\n")
        touch(Path(out) / "model.safetensors")
    elif name == "covt_decode.py":
        touch(Path(out) / "decoded.json", "{}\n")


# ------------------------------------------------------------------------------- swift
def checkpoint(output_dir: str, full: bool, model: str | None) -> Path:
    """A complete checkpoint as ms-swift writes one (svp.common.checkpoints accepts it); a
    full-tuning one carries the model's config.json."""
    ckpt = Path(output_dir) / "v0-20261207-000000" / f"checkpoint-{STEP}"
    ckpt.mkdir(parents=True, exist_ok=True)
    touch(ckpt / ("model.safetensors" if full else "adapter_model.safetensors"))
    if full:
        config = Path(model or "") / "config.json"
        touch(ckpt / "config.json", config.read_text() if config.is_file() else "{}\n")
    else:
        touch(ckpt / "adapter_config.json", "{}\n")
    touch(ckpt / "args.json", "{}\n")
    touch(ckpt / "trainer_state.json", json.dumps({"global_step": STEP}) + "\n")
    return ckpt


def swift(argv: list[str], source: str = "README") -> None:
    if not argv:
        fail("swift without a subcommand")
    sub, args = argv[0], argv[1:]
    record("swift", argv, source=source)
    pairs = options(args)
    names = None
    for opt, value in pairs:
        if opt in OUTPUTS:
            continue
        if opt in ("--external_plugins", "--deepspeed") and value.endswith((".py", ".json")):
            need(value, f"swift {sub} {opt}")
        elif opt in ("--model", "--adapters", "--ckpt_dir", "--resume_from_checkpoint",
                     "--ref_model", "--reward_model"):
            if is_local(value) or PLACEHOLDER in value:
                need(value, f"swift {sub} {opt}")
            elif not HUB_ID.match(value):
                fail(f"swift {sub} {opt} {value}: neither a local folder nor a hub id")
        elif opt in ("--dataset", "--val_dataset"):
            base = re.split(r"[%#]", value, maxsplit=1)[0]
            if is_local(base) or base.endswith((".json", ".jsonl")):
                need(base, f"swift {sub} {opt}")
            elif not HUB_ID.match(base):
                names = registry_names() if names is None else names
                if base not in names:
                    reg = os.environ.get("SVP_DATASET_REGISTRY")
                    fail(f"swift {sub} {opt} {value}: '{base}' is no file and no dataset of "
                         f"the registry (SVP_DATASET_REGISTRY={reg})")
    get = dict(pairs).get
    if sub in ("sft", "pt", "rlhf") and get("--output_dir"):
        checkpoint(get("--output_dir"), get("--tuner_type") == "full", get("--model"))
    elif sub == "export" and get("--output_dir"):
        out = Path(get("--output_dir"))
        touch(out / "config.json", "{}\n")
        touch(out / "model.safetensors")
    elif sub == "infer" and get("--result_path"):
        touch(Path(get("--result_path")), "{}\n")


# ------------------------------------------------------------------------------- others
def recipe(argv: list[str]) -> None:
    """A recipe: its own dry run (its checks, the commands it prints), then the printed
    swift commands through the stand-in, in order."""
    script = argv[0]
    need(script, "bash")
    record("recipe", argv)
    env = {**os.environ, "DRY_RUN": "1", "SVP_README_INNER": "1"}
    proc = subprocess.run([REAL_BASH, *argv], env=env, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        fail(f"bash {script} (DRY_RUN=1) exited {proc.returncode}")
    for line in proc.stdout.splitlines():
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words[:1] == ["+"]:  # the CoVT chain prints its commands as "+ [env VAR=..] CMD"
            words = words[1:]
        if words[:1] == ["env"]:
            words = words[1:]
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words = words[1:]
        if words[:1] == ["swift"]:
            swift(words[1:], source=script)
        elif words[:2] == ["ln", "-sfn"]:  # a chain's full-tuning "merge": the checkpoint
            need(words[2], "ln")
            Path(words[3]).parent.mkdir(parents=True, exist_ok=True)
            if not Path(words[3]).exists():
                Path(words[3]).symlink_to(Path(words[2]).resolve())


def python(argv: list[str]) -> None:
    if os.environ.get("SVP_README_INNER"):  # inside a recipe's dry run: its own helpers
        os.execv(REAL_PY, [REAL_PY, *argv])
    if argv[:2] == ["-m", "venv"]:
        record("venv", argv)
        touch(Path(argv[2]) / "bin" / "activate", "")
        return
    if argv[:2] == ["-m", "svp.serve"]:  # a server: its arguments checked, not started
        return serve(argv[2:])
    if argv[:2] == ["-m", "svp.serve.page"]:  # the page, likewise
        record("page", argv)
        check = subprocess.run([REAL_PY, "-c", "import sys; from svp.serve.page import parse; "
                                "parse(sys.argv[1:])", *argv[2:]], capture_output=True,
                               text=True)
        if check.returncode:
            fail(f"python -m svp.serve.page: {check.stderr.strip()[-300:]}")
        return None
    if argv[:2] == ["-m", "svp.serve.swift_app"]:  # ms-swift's app: its own parser, not started
        return swift(["app", *argv[2:]], source="python -m svp.serve.swift_app")
    if argv[:3] == ["-m", "svp.evaluation", "run"]:  # asks a server: checked, not run
        return evaluation(argv[3:])
    if not argv or argv[0] in ("-c", "-") or (argv[0] == "-m" and argv[1].startswith("svp.")):
        os.execv(REAL_PY, [REAL_PY, *argv])
    if argv[0].startswith("data_tools/") and argv[0].endswith(".py"):
        return data_tool(argv[0], argv[1:])
    fail(f"python {shlex.join(argv)}: not a command the README test knows")


SERVE_FLAGS = {"--skill", "--codec", "--image_root", "--max_image_pixels", "--max_crops"}


def serve(args: list[str]) -> None:
    """``python -m svp.serve``: our flags through its own parser, the rest as the ``swift
    deploy`` command it builds (ms-swift's parser, model and adapter paths checked)."""
    check = subprocess.run([REAL_PY, "-c", "import sys; from svp.serve.swift_server import parse; "
                            "parse(sys.argv[1:])", *args], capture_output=True, text=True)
    if check.returncode:
        fail(f"python -m svp.serve {shlex.join(args)[:200]}: {check.stderr.strip()[-300:]}")
    rest, i = [], 0
    while i < len(args):
        if args[i] in SERVE_FLAGS:
            if args[i] == "--codec":
                need(codec_path(args[i + 1]) or args[i + 1], "python -m svp.serve --codec")
            i += 2
        elif args[i] == "--allow_remote_images":
            i += 1
        else:
            rest.append(args[i])
            i += 1
    swift(["deploy", *rest], source="python -m svp.serve")


def evaluation(args: list[str]) -> None:
    """``python -m svp.evaluation run``: its own parser, every benchmark name known, and the
    local data it reads there (a server is not started here, so nothing is asked)."""
    check = subprocess.run([REAL_PY, "-c", "import sys; from svp.evaluation.cli import _parser; "
                            "from svp.evaluation.benchmarks import get; "
                            "a = _parser().parse_args(['run', *sys.argv[1:]]); "
                            "[get(n) for n in a.benchmark.split(',')]", *args],
                           capture_output=True, text=True)
    if check.returncode:
        fail(f"python -m svp.evaluation run {shlex.join(args)[:200]}: "
             f"{check.stderr.strip()[-300:]}")
    for opt, value in options(args):
        if opt in ("--data", "--image_root"):
            need(value, f"python -m svp.evaluation {opt}")
    record("evaluation", args)


def pip(argv: list[str]) -> None:
    record("pip", argv)
    if argv[:1] != ["install"]:
        fail(f"pip {argv[:1]}: only pip install is shown")
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read("setup.cfg")
    extras = set(cfg["options.extras_require"])
    pins = {}
    for line in Path("requirements/constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)={2,3}(\S+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    words = argv[1:]
    for i, w in enumerate(words):
        if w in ("-c", "-r"):
            need(words[i + 1], f"pip {w}")
        m = re.match(r"^(?:-e\s*)?\.\[([^\]]+)\]$", w)
        if m:
            missing = set(m.group(1).split(",")) - extras
            if missing:
                fail(f"pip install {w}: no extra {sorted(missing)} in setup.cfg")
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", w)
        if m and pins.get(m.group(1).lower()) not in (None, m.group(2)):
            fail(f"pip install {w}: requirements/constraints.txt pins "
                 f"{m.group(1)}=={pins[m.group(1).lower()]}")


def make(argv: list[str]) -> None:
    record("make", argv)
    targets = set(re.findall(r"^([a-z][a-z-]*):", Path("Makefile").read_text(), re.M))
    for t in argv:
        if "=" not in t and not t.startswith("-") and t not in targets:
            fail(f"make {t}: no such target")


def download(tool: str, argv: list[str]) -> None:
    """modelscope / huggingface-cli / hf download ID [FILES] --local_dir DIR: the folder
    (and the files named) appear."""
    record("download", [tool, *argv])
    if argv[:1] != ["download"]:
        fail(f"{tool} {argv[:1]}: only download is shown")
    pairs = dict(options(argv))
    words = [w for w in argv[1:] if not w.startswith("-")]
    values = set(pairs.values())
    positional = [w for w in words if w not in values]
    repo = pairs.get("--model") or pairs.get("--dataset") or (positional[:1] or [""])[0]
    if not HUB_ID.match(repo):
        fail(f"{tool} download: {repo!r} is not a hub id org/name")
    target = pairs.get("--local_dir") or pairs.get("--local-dir")
    if not target:
        fail(f"{tool} download {repo}: no --local_dir, so the README cannot name the folder")
    folder = make_output(target)
    for f in positional[1:] + ([pairs["--include"]] if "--include" in pairs else []):
        if not any(c in f for c in "*?["):
            touch(folder / f)


def wget(argv: list[str]) -> None:
    record("download", ["wget", *argv])
    urls = [w for w in argv if w.startswith(("http://", "https://"))]
    out = None
    for i, w in enumerate(argv):
        if w in ("-O", "-P"):
            out = argv[i + 1] if w == "-O" else str(Path(argv[i + 1]) / urls[0].rsplit("/", 1)[1])
    touch(Path(out or urls[0].rsplit("/", 1)[1]))


def unzip(argv: list[str]) -> None:
    record("unzip", argv)
    archive = next(w for w in argv if w.endswith(".zip"))
    need(archive, "unzip")
    dest = argv[argv.index("-d") + 1] if "-d" in argv else "."
    Path(dest, Path(archive).stem).mkdir(parents=True, exist_ok=True)


def main() -> None:
    name, argv = sys.argv[1], sys.argv[2:]  # the wrapper passes the name it was called by
    if name == "bash":
        if not os.environ.get("SVP_README_INNER") and argv and argv[0].startswith("recipes/"):
            return recipe(argv)
        os.execv(REAL_BASH, [REAL_BASH, *argv])
    if name.startswith("python"):
        return python(argv)
    handlers = {"swift": swift, "pip": pip, "make": make, "wget": wget, "unzip": unzip}
    if name in handlers:
        return handlers[name](argv)
    if name in ("modelscope", "huggingface-cli", "hf"):
        return download(name, argv)
    fail(f"{name}: no stand-in")


if __name__ == "__main__":
    main()
