"""Atomic output directories and (sharded) safetensors reading/writing."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
try:
    from safetensors import SafetensorError as SafetensorsError
except ImportError:  # older safetensors
    SafetensorsError = Exception
from safetensors.torch import load_file, save_file

from ..errors import UserError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
DEFAULT_SHARD_BYTES = 2 * 1024 ** 3


def check_output_dir(out: Path, force: bool) -> None:
    """Fail before any work when ``out`` cannot be written: it exists (without ``force``), it is a
    file, or the nearest existing folder above it is not a writable directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is a file, not a directory")
    if out.exists() and not force:
        raise UserError(f"output directory {out} already exists (use --force to replace it)")
    check_writable_parent(out)


def check_writable_parent(out: Path) -> None:
    """The nearest existing ancestor of ``out`` must be a directory we can create entries in (probed)."""
    parent = Path(os.path.abspath(out)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {out}: {parent} is a file, not a directory")
    try:
        Path(tempfile.mkdtemp(prefix=".mmmamba-probe-", dir=parent)).rmdir()
    except OSError as e:
        raise UserError(f"cannot write {out}: nothing can be created in {parent} "
                        f"({e.strerror or type(e).__name__})") from None


@contextlib.contextmanager
def atomic_dir(out: str | Path, force: bool = False):
    """Yield a temporary directory next to ``out``; on success it becomes ``out`` at once.

    On any error the temporary directory is removed and an existing ``out`` is untouched. Without
    ``force`` the final rename never replaces anything: if ``out`` appeared while we wrote (another
    process, a user), it stays and this write fails with a UserError, so of two concurrent writers
    exactly one wins.
    """
    out = Path(out)
    check_output_dir(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    try:
        yield tmp
        _default_modes(tmp)
        if force:
            _replace(tmp, out)
        else:
            _claim(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _claim(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out`` only if nothing is there (one atomic step on Linux)."""
    if not rename_noreplace(tmp, out):
        raise UserError(f"output directory {out} appeared while writing it (another run?); it was left as it "
                        f"is and nothing was written (use --force to replace it)")


def _replace(tmp: Path, out: Path) -> None:
    """``--force``: move an existing ``out`` aside, put ``tmp`` in place, then delete the old one."""
    old = None
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UserError(f"output path {out} exists and is a file, not a directory")
        old = out.parent / f".{out.name}.old-{os.getpid()}-{tmp.name[-8:]}"
        out.rename(old)
    try:
        if not rename_noreplace(tmp, out):
            raise UserError(f"output directory {out} appeared again while replacing it (another run?)")
    except BaseException:
        if old is not None and not out.exists():
            old.rename(out)  # nothing lost: the previous output comes back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def rename_noreplace(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists; False if it does. Linux ``renameat2`` with
    RENAME_NOREPLACE where available, else an exclusive ``mkdir`` claim followed by the rename."""
    fn = _renameat2()
    if fn is not None:
        import ctypes

        if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    try:
        os.mkdir(dst)  # exclusive: only one writer creates it
    except FileExistsError:
        return False
    os.rename(src, dst)  # replaces only the empty directory claimed just above
    return True


_RENAMEAT2 = []


def _renameat2():
    if not _RENAMEAT2:
        fn = None
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
        except (AttributeError, OSError):
            fn = None
        _RENAMEAT2.append(fn)
    return _RENAMEAT2[0]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_modes(root: Path) -> None:
    """mkdtemp makes 0700 directories: give the result the usual umask-based modes."""
    umask = _umask()
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_json_atomic(path: str | Path, obj) -> None:
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)  # unique per writer
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=2, default=str) + "\n")
        os.chmod(name, 0o666 & ~_umask())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def save_safetensors(sd: dict[str, torch.Tensor], directory: Path, shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[str]:
    """Write ``model.safetensors`` or HF-style shards plus an index past ``shard_bytes``."""
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    seen = set()  # tied weights (lm_head = embed_tokens) share storage, which safetensors refuses: copy
    for k, t in sd.items():
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            sd[k] = t.clone()
        seen.add(ptr)
    total = sum(t.numel() * t.element_size() for t in sd.values())
    if total <= shard_bytes:
        save_file(sd, str(directory / SINGLE), metadata={"format": "pt"})
        return [SINGLE]
    shards, cur, size = [], {}, 0
    for k, t in sd.items():
        n = t.numel() * t.element_size()
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k], size = t, size + n
    shards.append(cur)
    names, weight_map = [], {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        names.append(name)
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return names + [INDEX]


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """One .safetensors file; unreadable or corrupt files are a one-line UserError."""
    return _load_st(Path(path))


def _load_st(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorsError, OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


def read_state_dir(directory: Path) -> dict[str, torch.Tensor]:
    """State dict of a directory holding an index + shards or a single model.safetensors."""
    directory = Path(directory)
    if (directory / INDEX).exists():
        try:
            index = json.loads((directory / INDEX).read_text())
            weight_map = index["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v and Path(v).name == v
                                                           for v in weight_map.values()):
                raise TypeError("weight_map must map tensor names to shard file names in the same folder")
        except json.JSONDecodeError as e:
            raise UserError(f"{directory / INDEX} is not valid JSON (line {e.lineno}: {e.msg})") from None
        except (KeyError, TypeError) as e:
            what = "it has no weight_map" if isinstance(e, KeyError) else str(e)
            raise UserError(f"{directory / INDEX} is not a valid safetensors index: {what}") from None
        sd = {}
        for shard in sorted(set(weight_map.values())):
            if not (directory / shard).exists():
                raise UserError(f"missing shard {shard} listed in {directory / INDEX}")
            part = _load_st(directory / shard)
            sd.update({k: v for k, v in part.items() if weight_map.get(k) == shard})
        missing = sorted(set(weight_map) - set(sd))
        if missing:
            raise UserError(f"tensor(s) listed in the index but absent from their shard: {', '.join(missing[:5])}")
        return sd
    if (directory / SINGLE).exists():
        return _load_st(directory / SINGLE)
    raise UserError(f"{directory} has no {INDEX} or {SINGLE}")


def load_pickle(path: Path):
    """``torch.load(weights_only=True)``: tensors and plain containers only, never pickled code; any
    refusal or corruption is one line (torch's advice to lower the guard is not repeated)."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise UserError(f"cannot read {path}: it holds Python objects besides tensors, and pickled code is "
                            "never run (save a plain state dict, or convert it to .safetensors)") from None
        raise UserError(f"cannot read {path}: not a readable checkpoint ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - any other unpickling failure is a corrupt file
        raise UserError(f"cannot read {path}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A single .safetensors / .pt / .ckpt / .bin state dict (nested 'state_dict'/'model' unwrapped)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _load_st(path)
    obj = load_pickle(path)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}
