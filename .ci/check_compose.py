"""Validate docker/compose.yaml against the Compose Specification's JSON schema (no Docker
engine needed), then check what the schema cannot: every service that runs the app's image
names a `coalition` command this CLI has.

The schema is vendored as docker/compose-spec.json, unchanged, from
https://github.com/compose-spec/compose-spec/blob/a08f8d51631b7127ddac3d2c65537db429d0f1d0/schema/compose-spec.json
(refresh: download the file at a newer commit and update this line).
"""

import json
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"
SCHEMA = ROOT / "docker" / "compose-spec.json"


def main() -> int:
    document = yaml.safe_load(COMPOSE.read_text())
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        print(f"{COMPOSE.relative_to(ROOT)}: {where}: {error.message}", file=sys.stderr)
    sys.path.insert(0, str(ROOT))
    from gateway.cli import app

    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    for name, service in (document.get("services") or {}).items():
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["coalition"]:
            if len(command) < 2 or command[1] not in commands:
                print(
                    f"{COMPOSE.relative_to(ROOT)}: services/{name}: no such command {command}",
                    file=sys.stderr,
                )
                errors.append(name)  # type: ignore[arg-type]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
