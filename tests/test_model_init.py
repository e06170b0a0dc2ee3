"""The model's records keep a dataclass's constructor exactly, with their cheaper ``__init__``
(``tokentop.model.stored_by_slots``): same parameters and defaults, every field stored, still
frozen, and ``dataclasses.replace``, pickling and ``typing.get_type_hints`` work."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import typing

import pytest

from tokentop import model

RECORDS = [
    value
    for value in vars(model).values()
    if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == model.__name__
]


def test_every_record_has_the_cheaper_init() -> None:
    assert len(RECORDS) >= 14
    for record in RECORDS:
        assert record.__init__.__code__.co_filename == "<string>", record.__name__  # type: ignore[misc]


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: record.__name__)
def test_same_parameters_defaults_and_values(record: type) -> None:
    fields = dataclasses.fields(record)
    parameters = list(inspect.signature(record.__init__).parameters.values())[1:]  # type: ignore[misc]
    assert [p.name for p in parameters] == [f.name for f in fields]
    assert record.__init__.__module__ == model.__name__  # type: ignore[misc]
    assert typing.get_type_hints(record.__init__) == {**typing.get_type_hints(record), "return": type(None)}  # type: ignore[misc]
    for parameter, f in zip(parameters, fields, strict=True):
        assert parameter.default is (inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)

    values = {f.name: f"value of {f.name}" for f in fields}
    by_name = record(**values)
    by_position = record(*values.values())
    assert by_name == by_position
    assert {f.name: getattr(by_name, f.name) for f in fields} == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(by_name, fields[0].name, "changed")
    changed = dataclasses.replace(by_name, **{fields[-1].name: "changed"})
    assert getattr(changed, fields[-1].name) == "changed" and getattr(by_name, fields[-1].name) != "changed"
    assert pickle.loads(pickle.dumps(by_name)) == by_name
    assert hash(by_name) == hash(by_position)


def test_defaults_are_taken_when_left_out() -> None:
    sample = model.GpuSample(uuid="GPU-1", index=0, name="NVIDIA H200")
    assert sample.status == "ok" and sample.mig == () and sample.power_w is None
    assert model.Totals() == model.Totals(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None)
    with pytest.raises(TypeError):
        model.GpuSample(uuid="GPU-1", index=0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        model.Window(1.0, 0.0, 0.0, 0.0, None, 0.0, None, None, "one too many")  # type: ignore[call-arg]
