"""JSON Schemas of the spec files, for editors that validate YAML."""
from __future__ import annotations

import json
from pathlib import Path

from federation.spec import SCHEMAS


def schema_text(name: str) -> str:
    schema = SCHEMAS[name].model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"federation/v1/{name}.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMAS:
        path = directory / f"{name}.schema.json"
        path.write_text(schema_text(name))
        written.append(path)
    return written
