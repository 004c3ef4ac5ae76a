"""One progress display for every long command: a Rich bar on a terminal, plain lines in logs.

On a terminal the bar redraws in place. Anywhere else (piped, redirected, CI) a bar would show
nothing until the end, so a plain line (``distill stage1: step 40/400 loss 0.1234 lr 1.00e-03
5120 tok/s elapsed 0:00:31 ETA 0:04:38``) is printed when work starts, every ``interval`` seconds
after that (``MMMAMBA_PROGRESS_INTERVAL``, default 10), and when it ends; a heartbeat keeps the
interval steady even when a single step takes longer.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

DEFAULT_INTERVAL_S = 10.0


def is_terminal() -> bool:
    return sys.stdout.isatty()


def make_console(stderr: bool = False) -> Console:
    """A console that wraps at the terminal's width, and never hard-wraps lines in a log file."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, soft_wrap=True, width=int(os.environ.get("COLUMNS", 0) or 200))


console = make_console()  # the CLI's consoles (cli/common re-exports them)
err_console = make_console(stderr=True)
_DEFAULT_CONSOLE = console  # step_progress's parameter of the same name shadows it


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get("MMMAMBA_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class step_progress:
    """Context manager fed by the library's callbacks.

    Call it with a distillation ``StepReport`` (stage, step, steps, loss, lr, tokens_per_s, eta_s);
    ``count(name, done, total)`` reports other work (eval items, calibration batches);
    ``log(message)`` prints a message above the bar (or as a line).
    """

    def __init__(self, console: Console | None = None, terminal: bool | None = None, every: float | None = None):
        self.console = console or _DEFAULT_CONSOLE
        self.terminal = is_terminal() if terminal is None else terminal
        self.every = interval_s() if every is None else every
        self.lock = threading.Lock()
        self.state: dict[str, tuple[int, int, str, float]] = {}  # name -> (done, total, fields, started)
        self.current: str | None = None
        self.last_line = 0.0
        self.stop = threading.Event()

    # ---- context -------------------------------------------------------------------------
    def __enter__(self):
        if self.terminal:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                                TextColumn("{task.completed}/{task.total}  {task.fields[text]}"),
                                console=self.console, transient=False)
            self.tasks: dict[str, int] = {}
            self.bar.__enter__()
        elif self.every > 0:
            self.thread = threading.Thread(target=self._heartbeat, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.terminal:
            return self.bar.__exit__(*exc)
        return False

    # ---- feeding -------------------------------------------------------------------------
    def __call__(self, r) -> None:
        """A distillation step report."""
        text = f"loss {r.loss:.4g} lr {r.lr:.2e} {r.tokens_per_s:.0f} tok/s ETA {clock(r.eta_s)}"
        self.update(f"distill {r.stage}", r.step, r.steps, text, step_word="step ")

    def count(self, name: str, done: int, total: int, text: str = "") -> None:
        """Generic work: ``done`` of ``total`` units; the ETA is extrapolated from the rate so far."""
        with self.lock:
            started = self.state.get(name, (0, 0, "", time.time()))[3]
        elapsed = time.time() - started
        eta = elapsed / done * (total - done) if done else 0.0
        rate = f"{done / elapsed:.1f}/s " if elapsed > 0 and done else ""
        self.update(name, done, total, f"{text + ' ' if text else ''}{rate}ETA {clock(eta)}".strip())

    def update(self, name: str, done: int, total: int, text: str, step_word: str = "") -> None:
        with self.lock:
            prev_done, _, _, started = self.state.get(name, (0, 0, "", time.time()))
            first = name not in self.state or done < prev_done  # a new run under the same name restarts
            if first:
                started = time.time()
            self.state[name] = (done, total, f"{step_word}|{text}", started)
            self.current = name
        if self.terminal:
            if name not in self.tasks:
                self.tasks[name] = self.bar.add_task(name, total=total, text=text)
            self.bar.update(self.tasks[name], completed=done, total=total, text=text)
            return
        if first or done >= total or (self.every > 0 and time.time() - self.last_line >= self.every):
            self._line(name)
        if total and done >= total:
            with self.lock:  # finished: the heartbeat has nothing to repeat
                if self.current == name:
                    self.current = None

    def phase(self, name: str) -> None:
        """Work without a count (benchmark cells, calibration): lines say it is running, and the
        last message logged."""
        with self.lock:
            self.state[name] = (0, 0, "|", time.time())
            self.current = name

    def log(self, message: str) -> None:
        with self.lock:
            if self.current is not None and self.state[self.current][1] == 0:  # a phase: remember the message
                done, total, _, started = self.state[self.current]
                self.state[self.current] = (done, total, "|" + message, started)
        if self.terminal:
            self.bar.console.print(f"[dim]{message}", highlight=False, markup=False)
        else:
            self.console.print(message, highlight=False, markup=False)

    # ---- plain lines ---------------------------------------------------------------------
    def _line(self, name: str) -> None:
        with self.lock:
            done, total, packed, started = self.state[name]
            self.last_line = time.time()
        step_word, text = packed.split("|", 1)
        if not total:
            self.console.print(f"{name}: running, elapsed {clock(time.time() - started)}"
                               + (f" (last: {text})" if text else ""), highlight=False, markup=False)
            return
        self.console.print(f"{name}: {step_word}{done}/{total} {text} elapsed {clock(time.time() - started)}",
                           highlight=False, markup=False)

    def _heartbeat(self) -> None:
        while not self.stop.wait(min(1.0, self.every)):
            if self.current is not None and time.time() - self.last_line >= self.every:
                self._line(self.current)
