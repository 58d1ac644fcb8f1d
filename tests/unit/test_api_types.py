"""The typed Python model of the EdgeModel API and the CRD in crds/ describe the same API.

Walks the CRD's structural schema and the dataclasses of edgemodel_operator.api together:
every field exists on both sides under the same camelCase name, with the same required-ness,
default, enum, bounds and pattern. Any drift between the two fails here, before the
integration tests run against the real API server.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml

from edgemodel_operator import api

CRD = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "edgemodel.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _unwrap(hint: Any) -> Any:
    if get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        return inner
    return hint


def _pairs(
    cls: type, schema: dict[str, Any], path: str
) -> list[tuple[str, dataclasses.Field[Any], Any, dict[str, Any]]]:
    """(path, field, type hint, schema) for every field of `cls`, recursively."""
    hints = typing.get_type_hints(cls)
    out = []
    by_json = {f.metadata["json"]: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    assert set(by_json) == set(schema["properties"]), f"{path}: fields differ from the CRD"
    for name, fld in by_json.items():
        sub_schema = schema["properties"][name]
        hint = _unwrap(hints[fld.name])
        out.append((f"{path}.{name}", fld, hint, sub_schema))
        if dataclasses.is_dataclass(hint):
            out.extend(_pairs(hint, sub_schema, f"{path}.{name}"))  # type: ignore[arg-type]
        elif get_origin(hint) is list and dataclasses.is_dataclass(get_args(hint)[0]):
            out.extend(_pairs(get_args(hint)[0], sub_schema["items"], f"{path}.{name}[]"))
    return out


SPEC_FIELDS = _pairs(api.EdgeModelSpec, SCHEMA["properties"]["spec"], "spec")


def test_every_crd_field_has_a_typed_field() -> None:
    assert len(SPEC_FIELDS) >= 40


@pytest.mark.parametrize(
    ("path", "fld", "hint", "schema"), SPEC_FIELDS, ids=[p for p, *_ in SPEC_FIELDS]
)
def test_field_matches_the_crd(
    path: str, fld: dataclasses.Field[Any], hint: Any, schema: dict[str, Any]
) -> None:
    parent_required = _parent_required(path)
    has_default = (
        fld.default is not dataclasses.MISSING or fld.default_factory is not dataclasses.MISSING
    )
    assert (fld.metadata["json"] in parent_required) == (not has_default), (
        f"{path}: required-ness differs"
    )
    if "default" in schema:
        default = fld.default if fld.default is not dataclasses.MISSING else fld.default_factory()  # type: ignore[misc]
        expected = schema["default"]
        if dataclasses.is_dataclass(default):
            # `default: {}` in the CRD; the children's own defaults fill it in, on both sides.
            assert expected == {}, path
        else:
            assert default == expected, f"{path}: default {default!r} != CRD {expected!r}"
    elif has_default and fld.default is not None and not isinstance(fld.default, bool):
        default = fld.default if fld.default is not dataclasses.MISSING else fld.default_factory()  # type: ignore[misc]
        assert default in ({}, [], None) or dataclasses.is_dataclass(default), (
            f"{path}: default not in the CRD"
        )
    if "enum" in schema:
        assert get_origin(hint) is Literal and list(get_args(hint)) == schema["enum"], path
    if "maximum" in schema:
        assert fld.metadata.get("maximum") == schema["maximum"], f"{path}: maximum differs"
    if "minimum" in schema:
        bound = "exclusive_minimum" if schema.get("exclusiveMinimum") else "minimum"
        assert fld.metadata.get(bound) == schema["minimum"], f"{path}: {bound} differs"
    if "pattern" in schema and schema.get("type") == "string":
        assert fld.metadata["pattern"].pattern == schema["pattern"], f"{path}: pattern differs"
    expected_type = {
        "string": (str,),
        "integer": (int,),
        "number": (float,),
        "boolean": (bool,),
        "array": (list,),
        "object": (dict,),
    }[schema.get("type", "object")]
    actual = get_origin(hint) or hint
    if get_origin(hint) is Literal:
        actual = type(get_args(hint)[0])
    if dataclasses.is_dataclass(hint):
        actual = dict
    assert actual in expected_type, f"{path}: type {hint} vs CRD {schema.get('type')}"


def _parent_required(path: str) -> set[str]:
    node = SCHEMA["properties"]["spec"]
    for part in path.split(".")[1:-1]:
        if part.endswith("[]"):
            node = node["properties"][part[:-2]]["items"]
        else:
            node = node["properties"][part]
    return set(node.get("required", []))


def test_printer_columns_read_status_fields_that_exist() -> None:
    status = SCHEMA["properties"]["status"]["properties"]
    for column in CRD["spec"]["versions"][0]["additionalPrinterColumns"]:
        field = column["jsonPath"].split(".")
        if field[1] == "status":
            assert field[2] in status, column
    assert [c["name"] for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"]] == [
        "Phase",
        "Stable",
        "Ready",
        "P95ms",
        "Age",
    ]


def test_status_phases_are_the_contract() -> None:
    assert SCHEMA["properties"]["status"]["properties"]["phase"]["enum"] == [
        phase.value for phase in api.Phase
    ]


def test_to_dict_round_trips() -> None:
    raw = {
        "model": {"uri": "file:///m.onnx", "sha256": "0" * 64},
        "targets": [{"name": "a", "arch": "amd64", "replicas": {"min": 2, "max": 5}}],
        "slo": {"latencyP95Ms": 10},
    }
    spec = api.parse_spec(raw)
    assert api.parse_spec(api.to_dict(spec)) == spec
    assert spec.targets[0].replicas.upper == 5
    assert (
        api.parse_spec({**raw, "targets": [{"name": "a", "arch": "amd64"}]})
        .targets[0]
        .replicas.upper
        == 1
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "spec: expected an object"),
        (
            {"model": {"uri": "file:///m", "sha256": "0" * 64}, "targets": "x"},
            "spec.targets: expected a list",
        ),
        (
            {
                "model": {"uri": "file:///m", "sha256": "0" * 64},
                "targets": [{"name": "a", "arch": "amd64", "replicas": {"min": True}}],
            },
            "spec.targets[0].replicas.min: expected an integer",
        ),
        (
            {
                "model": {"uri": "file:///m", "sha256": "0" * 64},
                "targets": [{"name": "a", "arch": "amd64"}],
                "slo": {"latencyP95Ms": "fast"},
            },
            "spec.slo.latencyP95Ms: expected a number",
        ),
    ],
)
def test_parse_errors_name_the_field(raw: Any, message: str) -> None:
    with pytest.raises(api.SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        api.parse_spec(raw)
