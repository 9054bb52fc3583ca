"""The CRD's schema as the API server applies it: pruning, defaulting, structural validation (jsonschema), the
x-kubernetes-validations CEL rules (cel-python), and unknown fields for fieldValidation=Strict."""

from __future__ import annotations

import copy
import json

import celpy
import jsonschema


def apply_defaults(obj, schema: dict):
    """Structural defaulting as the API server does it: fill absent properties that have a default."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        for name, sub in (schema.get("properties") or {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                apply_defaults(obj[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in obj:
                apply_defaults(obj[key], extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])
    return obj


def prune(obj, schema: dict):
    """Drop fields the schema does not know (a structural schema prunes them; kubectl --validate=false)."""
    if isinstance(obj, dict) and schema.get("type") == "object" and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return obj
        for key in list(obj):
            if key in schema["properties"]:
                prune(obj[key], schema["properties"][key])
            elif key not in ("apiVersion", "kind", "metadata"):
                del obj[key]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            prune(item, schema["items"])
    return obj


def unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """The paths of fields the schema does not know: what a real server refuses under fieldValidation=Strict
    (kubectl's default) with `strict decoding error: unknown field "spec.stepz"`, and prunes otherwise."""
    found = []
    if isinstance(obj, dict) and schema.get("type") == "object" and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return found
        for key, value in obj.items():
            if key in schema["properties"]:
                found += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
            elif not (path == "" and key in ("apiVersion", "kind", "metadata")):
                found.append(f"{path}.{key}".lstrip("."))
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in obj.items():
            found += unknown_fields(value, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def cel_errors(obj, schema: dict, path: str, env: celpy.Environment) -> list[tuple[str, str]]:
    errors = []
    for rule in schema.get("x-kubernetes-validations") or []:
        prog = env.program(env.compile(rule["rule"]))
        try:
            ok = prog.evaluate({"self": celpy.json_to_cel(obj)})
        except Exception as e:  # an evaluation error is a failed rule on a real server too
            ok = False
            rule = {**rule, "message": f"{rule.get('message', rule['rule'])} ({e})"}
        if not bool(ok):
            errors.append((path + rule.get("fieldPath", ""), rule.get("message") or f"failed rule: {rule['rule']}"))
    if isinstance(obj, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in obj:
                errors += cel_errors(obj[name], sub, f"{path}.{name}", env)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errors += cel_errors(item, schema["items"], f"{path}[{i}]", env)
    return errors


def set_errors(obj, schema: dict, path: str = "") -> list[tuple[str, str]]:
    """Duplicates in lists declared `x-kubernetes-list-type: set`: the API server names the second occurrence
    (`spec.matrix.seqLens[1]: Duplicate value: 128`)."""
    errors = []
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        if schema.get("x-kubernetes-list-type") == "set":
            for i, item in enumerate(obj):
                if item in obj[:i]:
                    errors.append((f"{path}[{i}]", f"Duplicate value: {json.dumps(item)}"))
        for i, item in enumerate(obj):
            errors += set_errors(item, schema["items"], f"{path}[{i}]")
    elif isinstance(obj, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in obj:
                errors += set_errors(obj[name], sub, f"{path}.{name}")
    return errors


class SchemaValidator:
    """Validate and default objects of one CRD version like the API server (schema, then CEL)."""

    def __init__(self, crd: dict):
        version = crd["spec"]["versions"][0]
        self.crd = crd
        self.schema = version["schema"]["openAPIV3Schema"]
        # OpenAPI v3.0 `exclusiveMinimum: true` is draft-4 syntax
        self.validator = jsonschema.Draft4Validator(self.schema)
        self.env = celpy.Environment()
        self.kind = crd["spec"]["names"]["kind"]
        self.group = crd["spec"]["group"]

    def unknown_fields(self, obj: dict) -> list[tuple[str, str]]:
        """[(field path, message)] of the fields a Strict request is refused for (empty: none)."""
        return [(path, f'unknown field "{path}"') for path in unknown_fields(obj, self.schema)]

    def admit(self, obj: dict) -> list[tuple[str, str]]:
        """Prune + default `obj` in place; return [(field path, message)] (empty: admitted)."""
        prune(obj, self.schema)
        apply_defaults(obj, self.schema)
        errors = []
        for err in sorted(self.validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
            if err.validator == "required":  # the API server names the missing field itself
                missing = err.message.split("'")[1]
                errors.append((f"{path}.{missing}".lstrip("."), f"Required value: {err.message}"))
                continue
            errors.append((path, f"Invalid value: {json.dumps(err.instance)[:80]}: {err.message}"))
        errors += [(p.lstrip("."), m) for p, m in set_errors(obj, self.schema)]
        if not errors:
            errors = [(p.lstrip("."), m) for p, m in cel_errors(obj, self.schema, "", self.env)]
        return errors
