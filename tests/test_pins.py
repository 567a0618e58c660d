"""The three dependency lists (pyproject, environment.yml, requirements.lock) agree."""

import re
import tomllib

import yaml


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s;]+)\s*", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_pins_agree(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    assert all("==" in d for d in declared), "every dependency is pinned exactly"
    pyproject = _pins(declared)
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = _pins(pip_section)
    lock = _pins((root / "requirements.lock").read_text().splitlines())
    assert conda == pyproject
    for name, version in pyproject.items():
        assert lock.get(name) == version, f"{name}: lock has {lock.get(name)}, pyproject {version}"
    assert all("==" in line for line in (root / "requirements.lock").read_text().splitlines() if line.strip())
