"""``glmm-steps``: run or check a config, reading it as data.

Snakemake reads a YAML config file with YTE templating: a file that says
``__use_yte__: true`` has its ``?expression`` values evaluated as Python, before any
workflow code can look at it. A config someone sends you is data, so the documented
way to run one is this launcher:

    glmm-steps run [CONFIG] [snakemake options ...]   # CONFIG: config/config.yaml
    glmm-steps check [CONFIG]

``run`` reads CONFIG with the project's own YAML reader (plain data only, bounded;
glmm_steps.config.read_yaml), checks it as a run would, writes it as JSON inside its
results folder (``.glmm-steps/config-<hash>.json``: Snakemake reads a file that parses
as JSON as JSON, with no templating; see snakemake.common.configfile) and runs the
``snakemake`` next to this Python on it, with ``--cores all`` unless given. ``check``
makes every check a run makes before its first job and writes nothing. Every problem
is one line on stderr and exit status 1.

This module does not import Snakemake: it runs it as a program.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from glmm_steps import integrity, study
from glmm_steps.errors import GlmmError

DEFAULT_CONFIG = "config/config.yaml"
SNAKEFILE = Path(__file__).resolve().parent.parent / "Snakefile"
# The workflow's own profile: Snakemake applies it by itself, and then prints a notice on
# every run (a plain print in its command line, before any logging that could hide it).
# The launcher passes the same settings itself, with the workflow profile turned off.
PROFILE = SNAKEFILE.parent / "profiles" / "default" / "config.yaml"
# Options that would change which config, Snakefile or working directory Snakemake uses,
# and so bypass what this launcher checked.
_OWN = {"--configfile", "--configfiles", "--config", "-C", "--snakefile", "-s", "--directory", "-d"}
USAGE = (
    "usage: glmm-steps run [CONFIG] [snakemake options ...]\n"
    "       glmm-steps check [CONFIG]\n"
    f"CONFIG defaults to {DEFAULT_CONFIG}; run passes --cores all to Snakemake unless given."
)


def check(path: str, locked: bool = True):
    """Read and check the config file ``path`` as a run does before its first job: the
    config and the data files it names, and (``locked``) that no other run holds its
    results folder. Returns (the config as read, the checked glmm_steps.config.Plan).
    Writes nothing; raises a one-line GlmmError."""
    from glmm_steps.config import check_config, read_yaml

    raw = read_yaml(path)
    plan = check_config(raw)
    if locked and integrity.is_locked(plan.results):
        raise GlmmError(
            f"another run is using the results folder {plan.results}; wait for it to end "
            "(or give this run another results_dir)"
        )
    return raw, plan


def config_json(raw: dict, results: str) -> Path:
    """Write the config ``raw`` as JSON to ``<results>/.glmm-steps/config-<hash>.json``
    (atomically; the same config gives the same file, so a run never changes the file
    another run's jobs read). Returns its absolute path."""
    try:
        text = json.dumps(raw, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise GlmmError(f"config error: a value cannot be passed on as JSON ({e})") from None
    folder = Path(results) / ".glmm-steps"
    target = folder / f"config-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, target)
    return target.resolve()


def check_options(options: list[str]) -> None:
    """Refuse (GlmmError) a Snakemake option that would change which config, Snakefile
    or working directory Snakemake uses, bypassing what this launcher checked."""
    for option in options:
        name = option.split("=", 1)[0]
        if name in _OWN or (name[:2] in ("-C", "-s", "-d") and not name.startswith("--")):
            raise GlmmError(
                f"glmm-steps run: {option} is not allowed here; give the config as CONFIG "
                "(glmm-steps run CONFIG ...) and run from the folder its paths are relative to"
            )


def profile_options(options: list[str]) -> list[str]:
    """profiles/default's settings as command-line options, after ``--workflow-profile
    none`` (so Snakemake prints no notice that it applied it); with a ``--profile`` of
    the user's only ``--workflow-profile none``, and nothing with a ``--workflow-profile``. ``key: true`` is ``--key``, ``false`` is left
    out, a value or a one-item list is ``--key=value`` (so a target after it is never
    read as its value)."""
    import yaml

    names = {o.split("=", 1)[0] for o in options}
    if "--workflow-profile" in names:
        return []
    if "--profile" in names:
        # a profile of its own (profiles/slurm) carries every setting; profiles/default's
        # progress display would hide a failed SLURM job group
        return ["--workflow-profile", "none"]
    args = ["--workflow-profile", "none"]
    for key, value in (yaml.safe_load(PROFILE.read_text(encoding="utf-8")) or {}).items():
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if value is True:
            args.append(f"--{key}")
        elif isinstance(value, (str, int, float)) and value is not False:
            args.append(f"--{key}={value}")
        elif value not in (False, None):
            raise GlmmError(f"glmm-steps: {PROFILE}: cannot pass {key}: {value!r} on the command line")
    return args


def snakemake_command(config_file: Path, options: list[str]) -> list[str]:
    """The Snakemake command line that runs the workflow on ``config_file`` with the
    user's ``options`` (``--cores all`` added unless they give the cores), and
    profiles/default's settings (:func:`profile_options`)."""
    exe = Path(sys.executable).with_name("snakemake")
    if not exe.exists():
        raise GlmmError(f"glmm-steps: no snakemake next to {sys.executable}; install the project's dependencies")
    if not SNAKEFILE.is_file():
        raise GlmmError(
            f"glmm-steps: the workflow's Snakefile is not at {SNAKEFILE}; install the project "
            "from its folder (pip install -e .)"
        )
    cores = any(
        o in ("-c", "--cores") or o.startswith("--cores=") or (o[:2] == "-c" and o[2:].isdigit()) for o in options
    )
    return [
        str(exe),
        "-s",
        str(SNAKEFILE),
        "--configfile",
        str(config_file),
        *profile_options(options),
        *([] if cores else ["--cores", "all"]),
        *options,
    ]


def main(argv: list[str] | None = None) -> int:
    """The ``glmm-steps`` command; returns its exit status (``run`` replaces this
    process with Snakemake once the config is checked)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in ("run", "check"):
        print(USAGE, file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        return 0 if args and args[0] in ("-h", "--help") else 2
    command, rest = args[0], args[1:]
    path = rest.pop(0) if rest and not rest[0].startswith("-") else DEFAULT_CONFIG
    try:
        if command == "check":
            if rest:
                raise GlmmError(f"glmm-steps check takes only CONFIG, not {rest[0]}")
            _, plan = check(path)
            print(f"{path}: config ok, {plan.job_count:,} jobs for a fresh run, results in {plan.results}")
            return 0
        check_options(rest)
        raw, plan = check(path, locked=integrity.is_run(rest))  # a dry run may look while a run works
        study.check_targets(plan, rest)
        command_line = snakemake_command(config_json(raw, plan.results), rest)
    except GlmmError as error:
        print(error, file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command_line[0], command_line)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
