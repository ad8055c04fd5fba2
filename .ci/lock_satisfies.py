"""Fail when the installed packages (from requirements-dev.lock) miss one that pyproject.toml
asks for, with the dev extra, or have it at a version outside its range: the lock is stale.
`pip check` alone would not see the dev extra."""

import sys
from importlib.metadata import PackageNotFoundError, requires, version

from packaging.requirements import Requirement

stale = []
for line in requires("coalition") or []:
    req = Requirement(line)
    if req.marker and not req.marker.evaluate({"extra": "dev"}):
        continue
    try:
        have = version(req.name)
    except PackageNotFoundError:
        stale.append(f"{req}: not in the lock")
        continue
    if not req.specifier.contains(have, prereleases=True):
        stale.append(f"{req}: the lock has {have}")
if stale:
    sys.exit(
        "requirements-dev.lock does not satisfy pyproject.toml (run: make lock)\n  "
        + "\n  ".join(stale)
    )
