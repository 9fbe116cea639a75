"""The repository's promises about itself: dependency lists in sync, profiles valid."""

import re
from pathlib import Path

import pytest
import tomllib
import yaml

from dkolib.config import PROFILES, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def _expand(requirements: list[str], extras: dict[str, list[str]]) -> set[str]:
    """Distribution names of ``requirements``, a ``dkolib[extra, ...]`` replaced by its extras' requirements."""
    names = set()
    for r in requirements:
        if _name(r) == "dkolib":
            for extra in re.search(r"\[([^\]]*)\]", r).group(1).split(","):
                names |= _expand(extras[extra.strip()], extras)
        else:
            names.add(_name(r))
    return names


def test_environment_yml_matches_pyproject():
    """environment.yml = the core dependencies and the test extra (which pulls in the pipeline extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {_name(r) for r in project["dependencies"]} | _expand(extras["test"], extras)
    assert _expand(["dkolib[pipeline]"], extras) <= wanted  # the tests and notebooks need the whole pipeline
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r) for r in pip_section if not r.startswith("-e")}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_load(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile
    assert cfg.optics.n_cells % 2 == 1


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_round_trip_through_a_plain_dict(profile):
    # worker processes and checkpoints rebuild the config from asdict(); an empty list that a
    # profile leaves at its default (no baffle heights) must survive that
    from dataclasses import asdict

    from dkolib.config import from_dict

    cfg = load_config(profile)
    assert from_dict(asdict(cfg)) == cfg
    with pytest.raises(ConfigError, match="sensor.study_gaps_m"):
        from_dict({**asdict(cfg), "sensor": {**asdict(cfg.sensor), "study_gaps_m": []}})


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="optics.n_cell'"):
        load_config("smoke", {"optics.n_cell": 129})


def test_out_of_range_is_named():
    with pytest.raises(ConfigError, match="stage1.lr"):
        load_config("smoke", {"stage1.lr": -1.0})


def test_even_grid_rejected():
    with pytest.raises(ConfigError, match="n_cells"):
        load_config("smoke", {"optics.n_cells": 64})


def test_override_from_string():
    cfg = load_config("smoke", {"optics.n_cells": "129", "budget.seeds": "[1, 2]"})
    assert cfg.optics.n_cells == 129 and cfg.budget.seeds == (1, 2)
