"""Bad input, as a careless user or an attacker would give it, to every command: exit code 2, one
line on stderr that names the problem, no traceback, and every file that existed before is
byte-identical afterwards (nothing half-written, nothing replaced)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


def cli(args, monkeypatch, capsys) -> tuple[int, str]:
    """The console script in-process (``run_app``): (exit code, stderr)."""
    from mmmamba_cli.cli.common import run_app
    from mmmamba_cli.cli.main import app

    monkeypatch.setattr(sys, "argv", ["mmmamba", *map(str, args)])
    monkeypatch.delenv("MMMAMBA_DEBUG", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_app(app)
    return e.value.code or 0, capsys.readouterr().err


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A teacher, a seeded student, a run dir, pre-existing outputs and a gallery of bad files."""
    from mmmamba_cli.assets import default_teacher
    from mmmamba_cli.seed import seed_directory
    from test_eval_support import png_bytes

    w = tmp_path_factory.mktemp("world")
    shutil.copytree(default_teacher(), w / "teacher")
    seed_directory(w / "teacher", w / "student")
    seed_directory(w / "teacher", w / "run" / "seed")
    (w / "existing").mkdir()
    (w / "existing" / "results.json").write_text('{"keep": true}\n')
    (w / "afile").write_text("not a directory\n")
    (w / "data").mkdir()
    (w / "red.png").write_bytes(png_bytes())
    (w / "truncated.png").write_bytes(png_bytes()[:40])
    (w / "task.jsonl").write_text(json.dumps({"question": "what color", "answer": "red", "image": "red.png"}) + "\n")
    (w / "badrec.jsonl").write_text('{"question": "what color", "answer": \n')
    (w / "ragged.tsv").write_text("index\tquestion\tanswer\n0\twhat color\tred\n1\tis it red\n")
    (w / "train3.yaml").write_text("train: 3\n")
    (w / "broken.yaml").write_text("train: [1, 2\n")
    (w / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (w / "badconfig").mkdir()
    (w / "badconfig" / "config.json").write_text('{"model_type": "mmmamba", "hidden_size": ')
    torch.save({"state_dict": {"w": torch.zeros(2)}, "junk": _Payload()}, w / "payload.pt")
    shutil.copytree(w / "teacher", w / "escape")
    (w / "escape" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../afile"}}))
    return w


class _Payload:
    """A pickled object that would run code if ever unpickled without weights_only."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


# (id, args with {w} for the world root, words the message must contain)
CASES = [
    # seed
    ("seed-missing-teacher", "seed {w}/nope -o {w}/o1", "nope"),
    ("seed-existing-out", "seed {w}/teacher -o {w}/existing", "already exists"),
    ("seed-out-is-file", "seed {w}/teacher -o {w}/afile", "is a file"),
    ("seed-out-under-file", "seed {w}/teacher -o {w}/afile/sub", "afile is a file"),
    ("seed-out-under-proc", "seed {w}/teacher -o /proc/mmmamba-out", "created in /proc"),
    ("seed-layer-out-of-range", "seed {w}/teacher -o {w}/o2 --attn-layers 99", "99"),
    ("seed-layer-not-a-number", "seed {w}/teacher -o {w}/o3 --attn-layers a,b", "attn-layers"),
    ("seed-corrupt-safetensors", "seed {w}/corrupt.safetensors -o {w}/o4", "corrupt.safetensors"),
    ("seed-corrupt-config", "seed {w}/badconfig -o {w}/o5", "config.json"),
    ("seed-pickled-code", "seed {w}/payload.pt -o {w}/o6", "pickled code is never run"),
    ("seed-index-escapes-folder", "seed {w}/escape -o {w}/o8", "same folder"),
    ("seed-missing-config", "seed {w}/teacher/model.safetensors --config {w}/nope.json -o {w}/o7", "nope.json"),
    # distill
    ("distill-bad-stage", "distill --stage 4 -r {w}/run", "--stage"),
    ("distill-missing-run", "distill --stage 1 -r {w}/norun --data {w}/task.jsonl", "does not exist"),
    ("distill-section-scalar", "distill --stage 1 -r {w}/run train=3", "train: expected a section"),
    ("distill-section-empty", "distill --stage 1 -r {w}/run train=", "train: expected a section"),
    ("distill-section-list", "distill --stage 1 -r {w}/run optim=[1,2]", "optim: expected a section"),
    ("distill-yaml-section-scalar", "distill --stage 1 -r {w}/run --recipe {w}/train3.yaml", "train: expected"),
    ("distill-broken-yaml", "distill --stage 1 -r {w}/run --recipe {w}/broken.yaml", "not valid YAML"),
    ("distill-unknown-recipe", "distill --stage 1 -r {w}/run --recipe nosuchrecipe", "unknown recipe"),
    ("distill-negative-lr", "distill --stage 1 -r {w}/run optim.lr=-1", "optim.lr must be > 0"),
    ("distill-unknown-key", "distill --stage 1 -r {w}/run train.stepz=3", "train.steps"),
    ("distill-not-key-value", "distill --stage 1 -r {w}/run optim.lr", "key=value"),
    ("distill-data-dir-without-data", "distill --stage 1 -r {w}/run --data {w}/data", "holds no *.jsonl or *.txt file"),
    ("distill-data-missing", "distill --stage 1 -r {w}/run --data {w}/nope.jsonl", "not found"),
    ("distill-no-previous-stage", "distill --stage 2 -r {w}/run --data {w}/task.jsonl", "stage 1"),
    # hybridize
    ("hybridize-existing-out", "hybridize {w}/student -o {w}/existing --every 2", "already exists"),
    ("hybridize-layer-out-of-range", "hybridize {w}/student -o {w}/h1 --attn-layers 99", "99"),
    ("hybridize-teacher-as-student", "hybridize {w}/teacher -o {w}/h2 --every 2", "STUDENT"),
    ("hybridize-missing-student", "hybridize {w}/nope -o {w}/h3 --every 2", "nope"),
    ("hybridize-out-under-file", "hybridize {w}/student -o {w}/afile/h --every 2", "afile is a file"),
    # eval
    ("eval-missing-task", "eval {w}/teacher --task {w}/nope.jsonl -o {w}/e1", "nope.jsonl"),
    ("eval-ragged-tsv", "eval {w}/teacher --task {w}/ragged.tsv -o {w}/e2", "row 3"),
    ("eval-malformed-record", "eval {w}/teacher --task {w}/badrec.jsonl -o {w}/e3", "line 1"),
    ("eval-existing-out", "eval {w}/teacher --task {w}/task.jsonl -o {w}/existing", "already exists"),
    ("eval-out-under-proc", "eval {w}/teacher --task {w}/task.jsonl -o /proc/mmmamba-eval", "created in /proc"),
    ("eval-out-under-file", "eval {w}/teacher --task {w}/task.jsonl -o {w}/afile/e", "afile is a file"),
    ("eval-missing-model", "eval {w}/nope --task {w}/task.jsonl -o {w}/e4", "nope"),
    ("eval-unknown-kind", "eval {w}/teacher --task {w}/task.jsonl --kind bogus -o {w}/e5", "bogus"),
    # generate
    ("generate-negative-tokens", "generate {w}/teacher -p hi --max-new-tokens -3", "--max-new-tokens"),
    ("generate-top-p-above-1", "generate {w}/teacher -p hi --top-p 5", "--top-p"),
    ("generate-top-p-zero", "generate {w}/teacher -p hi --top-p 0", "--top-p"),
    ("generate-negative-temperature", "generate {w}/teacher -p hi --temperature -1", "--temperature"),
    ("generate-missing-model", "generate {w}/nope -p hi", "nope"),
    ("generate-missing-image", "generate {w}/teacher -p hi --image {w}/nope.png", "nope.png"),
    ("generate-truncated-image", "generate {w}/teacher -p hi --image {w}/truncated.png", "truncated.png"),
    ("generate-no-prompt", "generate {w}/teacher", "--prompt"),
    # bench, info, usage
    ("bench-bad-tokens", "bench --tokens abc -o {w}/b1", "abc"),
    ("bench-bad-models", "bench --models foo -o {w}/b2", "foo"),
    ("bench-existing-out", "bench --tokens 64 -o {w}/existing", "already exists"),
    ("info-missing-model", "info {w}/nope", "nope"),
    ("info-not-a-model", "info {w}/afile", "not a model directory"),
    ("train-teacher-existing-out", "train-teacher -o {w}/existing", "already exists"),
    ("train-teacher-out-under-file", "train-teacher -o {w}/afile/t", "afile is a file"),
    ("train-teacher-unknown-key", "train-teacher -o {w}/t2 model.hidden_sise=3", "model.hidden_size"),
    ("train-teacher-compare-no-base", "train-teacher --recipe teacher-easyvqa-compare -o {w}/t3",
     "train.init_from is required"),
    ("train-teacher-base-missing", "train-teacher --recipe teacher-easyvqa-compare -o {w}/t4 train.init_from={w}/nope",
     "nope"),
    ("demo-existing-out", "demo -o {w}/existing", "already exists"),
    ("demo-out-under-file", "demo -o {w}/afile/d", "afile is a file"),
    ("unknown-command", "frobnicate", "frobnicate"),
    ("unknown-option", "seed --nope", "--nope"),
]


@pytest.mark.parametrize("args,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_touched(world, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(world)  # default output paths (runs/...) land in the world too
    before = tree(world)
    code, err = cli(args.format(w=world).split(), monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert tree(world) == before  # every file that existed is byte-identical, and none appeared


def test_at_least_forty_cases_across_all_commands():
    commands = {c[1].split()[0] for c in CASES}
    assert len(CASES) >= 40
    assert {"seed", "distill", "hybridize", "eval", "generate", "bench", "info", "train-teacher", "demo"} <= commands


def test_debug_variable_shows_the_traceback(world, monkeypatch):
    from mmmamba_cli.cli.common import run_app
    from mmmamba_cli.cli.main import app
    from mmmamba_cli.errors import UserError

    monkeypatch.setattr(sys, "argv", ["mmmamba", "info", str(world / "nope")])
    monkeypatch.setenv("MMMAMBA_DEBUG", "1")
    with pytest.raises(UserError):
        run_app(app)
