"""JobSets checked against JobSet's own API schema: the pydantic models that the `kubeflow-trainer-api` package
(Kubeflow Trainer's Python API) generates from the jobset.x-k8s.io/v1alpha2 OpenAPI, `JobsetV1alpha2JobSet` and
the models under it (down to the batch/v1 Job template and the core/v1 pod spec), through the generated
`from_dict` (strict types: "1" is no integer). Those models ignore unknown fields (pydantic's default), so
`jobset_errors` also walks the object beside the models and reports every key that no model defines (what a
strict API server or `kubectl --validate=strict` refuses)."""

from __future__ import annotations

import types
import typing

from kubeflow_trainer_api.models import JobsetV1alpha2JobSet
from pydantic import BaseModel, ValidationError


def _model_of(annotation) -> tuple[type[BaseModel] | None, bool]:
    """The pydantic model an annotation holds (through Optional, Annotated, List, Dict) and whether it is the
    value type of a map (Dict[str, Model]); (None, False) for plain values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict:
        model, _ = _model_of(args[1])
        return model, model is not None
    if origin is typing.Annotated:
        return _model_of(args[0])
    if origin in (list, typing.Union, types.UnionType):
        for a in args:
            model, is_map = _model_of(a)
            if model is not None:
                return model, is_map
    return None, False


def unknown_fields(model: type[BaseModel], data, path: str = "") -> list[str]:
    """Paths of the keys in `data` that `model` (and the models under it) does not define."""
    if isinstance(data, list):
        return [e for i, item in enumerate(data) for e in unknown_fields(model, item, f"{path}[{i}]")]
    if not isinstance(data, dict):
        return []
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    errors = []
    for key, value in data.items():
        if key not in fields:
            errors.append(f"{path}.{key}")
            continue
        sub, is_map = _model_of(fields[key].annotation)
        if sub is not None and "actual_instance" in sub.model_fields:
            continue  # a oneOf of scalars (Quantity, IntOrString): a string or number on the wire, checked by from_dict
        if sub is not None and is_map and isinstance(value, dict):
            errors += [e for k, v in value.items() for e in unknown_fields(sub, v, f"{path}.{key}[{k}]")]
        elif sub is not None:
            errors += unknown_fields(sub, value, f"{path}.{key}")
    return errors


def jobset_errors(obj: dict) -> list[str]:
    """Everything wrong with `obj` as a JobSet: the models' validation errors (strict types) and unknown keys."""
    errors = []
    if obj.get("apiVersion") != "jobset.x-k8s.io/v1alpha2" or obj.get("kind") != "JobSet":
        errors.append(f"not a jobset.x-k8s.io/v1alpha2 JobSet: {obj.get('apiVersion')} {obj.get('kind')}")
    try:  # from_dict: the generated path (it resolves the oneOf wrappers); the fields' types are Strict*
        JobsetV1alpha2JobSet.from_dict(obj)
    except ValidationError as e:
        errors += [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
    except ValueError as e:  # a oneOf wrapper that matched none of its schemas
        errors.append(str(e))
    errors += [f"{p}: unknown field" for p in unknown_fields(JobsetV1alpha2JobSet, obj)]
    # enums of JobSet's API that the generated models leave as plain strings
    operator = ((obj.get("spec") or {}).get("successPolicy") or {}).get("operator")
    if operator not in (None, "All", "Any"):
        errors.append(f"spec.successPolicy.operator: {operator!r} is not All or Any")
    return errors
