"""Output directories: the final rename never replaces anything without --force, so of two
concurrent writers exactly one wins, and a directory that appears mid-write survives."""
from __future__ import annotations

import threading

import pytest
import torch

from mmmamba_cli.errors import UserError
from mmmamba_cli.io.files import atomic_dir, rename_noreplace

torch.set_num_threads(1)


def tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_concurrent_writers_exactly_one_wins(tmp_path):
    out = tmp_path / "seed"
    both_written = threading.Barrier(2)
    results: dict[str, str] = {}

    def writer(name: str) -> None:
        try:
            with atomic_dir(out) as tmp:
                (tmp / "who.txt").write_text(name)
                (tmp / "weights.bin").write_bytes(name.encode() * 1000)
                both_written.wait(timeout=30)  # both passed the early check; both are about to rename
            results[name] = "ok"
        except UserError as e:
            results[name] = f"error: {e}"

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(v == "ok" for v in results.values()) == [False, True], results
    winner = next(k for k, v in results.items() if v == "ok")
    loser = next(v for v in results.values() if v != "ok")
    assert "appeared while writing" in loser and "\n" not in loser
    assert tree(out) == {"who.txt": winner.encode(), "weights.bin": winner.encode() * 1000}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed"]  # the loser's temporary is gone


def test_directory_created_mid_write_survives(tmp_path):
    out = tmp_path / "stage1"
    with pytest.raises(UserError, match="appeared while writing"):
        with atomic_dir(out) as tmp:
            (tmp / "config.json").write_text("{}")
            out.mkdir()  # a user (or another process) creates the output meanwhile, even empty
            (out / "mine.txt").write_text("keep me")
    assert tree(out) == {"mine.txt": b"keep me"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage1"]


def test_empty_directory_is_not_replaced_by_rename(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    (tmp_path / "dst").mkdir()  # plain os.rename would silently replace an empty directory
    assert not rename_noreplace(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "src" / "f").exists() and not any((tmp_path / "dst").iterdir())


def test_force_replaces_and_a_failed_write_keeps_the_old(tmp_path):
    out = tmp_path / "o"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, force=True) as tmp:
            (tmp / "v").write_text("2")
            raise RuntimeError("boom")
    assert tree(out) == {"v": b"1"}
    with atomic_dir(out, force=True) as tmp:
        (tmp / "v").write_text("3")
    assert tree(out) == {"v": b"3"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


@pytest.mark.slow
def test_two_seed_processes_to_one_output(tmp_path):
    """Two real `mmmamba seed` processes at once: one succeeds, the other exits 2, the result loads."""
    import os
    import subprocess
    import sys

    from mmmamba_cli.io.load import load_model

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-c", "from mmmamba_cli.cli.main import main; main()", "seed", "-o", str(tmp_path / "s")]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert len(loser.strip().splitlines()) == 1 and "Traceback" not in loser
    load_model(tmp_path / "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_read_only_location_fails_before_any_work(tmp_path, monkeypatch):
    """Root ignores mode bits, so a read-only file system is simulated where the probe runs."""
    import errno
    import tempfile

    from mmmamba_cli.io.files import check_output_dir

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(UserError, match="Read-only file system") as e:
        check_output_dir(tmp_path / "a" / "b", force=False)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "a").exists()
