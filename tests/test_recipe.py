"""The generic recipe loader: YAML -> typed dataclass, overrides, one-line errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from mmmamba_cli.errors import UserError
from mmmamba_cli.recipe import build, find_recipe, load_recipe, merge, parse_overrides


@dataclass
class Inner:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: Optional[str] = None
    steps: int = 10
    flag: bool = False
    inner: Inner = field(default_factory=Inner)

    def check(self):
        return [] if self.steps > 0 else [f"steps must be > 0, got {self.steps}"]


def test_defaults_yaml_and_dotted_overrides_layer_in_order(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("# comment\nsteps: 5\ninner:\n  lr: 1e-2\n  mode: b\n")
    r = load_recipe(Outer, path, ["inner.lr=5e-4", "name=x", "flag=true"], base={"steps": 7, "inner": {"mode": "a"}})
    assert (r.steps, r.name, r.flag) == (5, "x", True)
    assert r.inner == Inner(lr=5e-4, betas=[0.9, 0.99], mode="b")
    assert isinstance(r.inner.lr, float)  # "1e-2" / "5e-4" are strings to YAML 1.1


def test_every_error_is_reported_at_once_on_one_line():
    with pytest.raises(UserError) as e:
        build(Outer, {"stpes": 3, "flag": "yes", "inner": {"lr": "fast", "mode": "c", "extra": 1, "betas": 0.9}})
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("unknown key stpes (did you mean steps?)", "flag: expected true or false", "inner.lr: expected a number",
                 "inner.mode: 'c' is not one of 'a', 'b'", "unknown key inner.extra", "inner.betas: expected a list"):
        assert part in msg, part


def test_semantic_check_runs_with_type_errors_elsewhere():
    with pytest.raises(UserError, match="steps must be > 0"):
        build(Outer, {"steps": 0})
    with pytest.raises(UserError, match="steps: expected an integer"):
        build(Outer, {"steps": 1.5})
    with pytest.raises(UserError, match="flag: expected true or false, got 3; steps must be > 0"):
        build(Outer, {"steps": -1, "flag": 3})


def test_overrides_parse_yaml_scalars_and_reject_bad_items():
    assert parse_overrides(["a.b=3", "a.c=x", "d=null", "e=[1, 2]"]) == {"a": {"b": 3, "c": "x"}, "d": None, "e": [1, 2]}
    with pytest.raises(UserError, match="not key=value"):
        parse_overrides(["steps"])
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_find_recipe_by_name_candidates_or_path(tmp_path):
    assert find_recipe("tiny", ("tiny-stage2", "tiny")).name == "tiny-stage2.yaml"
    with pytest.raises(UserError, match="unknown recipe 'nope'"):
        find_recipe("nope")
    with pytest.raises(UserError, match="not found"):
        find_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(Outer, bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_recipe(Outer, bad)
