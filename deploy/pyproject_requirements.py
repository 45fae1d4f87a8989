"""Print requirements from pyproject.toml, one a line, for ``pip install -r /dev/stdin``.

The Docker build installs the dependencies in a layer of their own (rebuilt only when pyproject.toml changes, not on
every code change) and takes the GPU and torch pins from the same place as everyone else: pyproject.toml.
Standard library only: it runs before anything is installed.

    python deploy/pyproject_requirements.py                     # the service's dependencies
    python deploy/pyproject_requirements.py gpu                 # an extra
    python deploy/pyproject_requirements.py train --only torch  # one package of an extra
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

BASE = "base"


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (PEP 503: case and ``-_.`` runs do not matter)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, group: str, only: list[str] | None = None) -> list[str]:
    """The requirements of ``group`` ("base": the project's dependencies, else an optional extra), optionally
    only those of the named packages (each must be there)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    if group == BASE:
        lines = list(project.get("dependencies", []))
    elif group in extras:
        lines = list(extras[group])
    else:
        raise KeyError(f"{pyproject} has no extra {group!r} (extras: {', '.join(sorted(extras)) or 'none'})")
    if only is None:
        return lines
    wanted = {requirement_name(name) for name in only}
    found = [line for line in lines if requirement_name(line) in wanted]
    missing = wanted - {requirement_name(line) for line in found}
    if missing:
        raise KeyError(f"{group!r} has no requirement for {', '.join(sorted(missing))}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("group", nargs="?", default=BASE, help="'base' (the service) or an extra: train, gpu, dev.")
    parser.add_argument("--only", action="append", metavar="PACKAGE", help="Only this package (repeatable).")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"), help="The pyproject.toml to read.")
    args = parser.parse_args(argv)
    try:
        lines = requirements(args.pyproject, args.group, args.only)
    except (KeyError, ValueError, OSError) as exc:
        # KeyError quotes its message in str(); the others read well as they are.
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        sys.stderr.write(f"error: {message}\n")
        return 1
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
