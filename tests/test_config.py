import pytest

from fields.nn import FusedMLP, from_config, to_config


def test_tcnn_defaults():
    net = from_config({"otype": "FullyFusedMLP"}, 3, 4)
    assert isinstance(net, FusedMLP)
    s = net.spec
    assert (s.width, s.depth, s.activation, s.output_activation, s.bias) == (
        128,
        5,
        "ReLU",
        "None",
        False,
    )
    assert (net.n_input_dims, net.n_output_dims) == (3, 4)


def test_issue_example_and_round_trip():
    cfg = {
        "otype": "FullyFusedMLP",
        "activation": "ReLU",
        "output_activation": "None",
        "n_neurons": 64,
        "n_hidden_layers": 4,
    }
    net = from_config(cfg, 32, 16)
    assert len(net.weights) == 5 and net.weights[0].shape == (64, 32)
    again = from_config(to_config(net), 32, 16)
    assert again.spec == net.spec


def test_activation_names_are_case_insensitive_and_cutlass_accepted():
    net = from_config({"otype": "CutlassMLP", "activation": "sine", "n_neurons": 48}, 2, 1)
    assert net.spec.activation == "Sine"


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (
            {"otype": "FullyFusedMLP", "n_neuron": 64},
            "unknown key 'n_neuron'.*did you mean 'n_neurons'",
        ),
        ({"otype": "ResNet"}, "unsupported otype 'ResNet'"),
        ({"activation": "ReLU"}, "missing 'otype'"),
        ({"otype": "FullyFusedMLP", "activation": "Gelu"}, "unknown activation 'Gelu'"),
        ({"otype": "FullyFusedMLP", "n_hidden_layers": 0}, "'n_hidden_layers' must be a positive"),
        ({"otype": "FullyFusedMLP", "feedback_alignment": True}, "feedback_alignment"),
    ],
)
def test_bad_configs_are_clear_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        from_config(cfg, 3, 1)


# -- one config-from-dict for every config (fields.config) --


def test_dataclass_from_dict_names_unknown_and_known_keys():
    from dataclasses import dataclass

    from fields.config import dataclass_from_dict

    @dataclass
    class Cfg:
        width: int
        lr: float = 1e-2

    assert dataclass_from_dict(Cfg, {"width": 3}) == Cfg(3, 1e-2)
    with pytest.raises(ValueError, match=r"^Cfg: unknown key 'widht' \(did you mean 'width'\?\); "
                                         r"known keys: width, lr$"):
        dataclass_from_dict(Cfg, {"widht": 3})
    with pytest.raises(ValueError, match=r"^run\.json: unknown keys 'a', 'b'; known keys"):
        dataclass_from_dict(Cfg, {"width": 1, "a": 1, "b": 2}, "run.json")
    with pytest.raises(ValueError, match="Cfg: missing key 'width'"):
        dataclass_from_dict(Cfg, {"lr": 1.0})
    with pytest.raises(ValueError, match="Cfg: expected a JSON object"):
        dataclass_from_dict(Cfg, [1, 2])  # type: ignore[arg-type]


def test_every_config_class_reports_unknown_keys_the_same_way():
    from fields.nerf import NerfConfig
    from fields.sdf.field import SDFConfig
    from fields.sdf.neus import NeusConfig

    for cls in (NerfConfig, SDFConfig, NeusConfig):
        with pytest.raises(ValueError, match=rf"^{cls.__name__}: unknown key 'lrr' "
                                             r"\(did you mean 'lr'\?\); known keys: "):
            cls.from_dict({"lrr": 1.0})
    with pytest.raises(ValueError, match=r"network config \(FullyFusedMLP\): unknown key "
                                         r"'n_neuron' \(did you mean 'n_neurons'\?\); known keys"):
        from_config({"otype": "FullyFusedMLP", "n_neuron": 64}, 3, 1)


# -- values of the wrong type name the field and the expected type (issue 21, A9) --


def test_pinn_strategy_wrong_type_names_field_and_expected_type():
    """`fields solve --config '{"n_collocation": "lots"}'` failed inside int()."""
    from fields.pinn.strategy import Strategy

    with pytest.raises(ValueError, match=r"^Strategy: field 'n_collocation': expected an int or "
                                         r"null, "
                                         r"got str 'lots'$"):
        Strategy.from_dict({"n_collocation": "lots"})
    with pytest.raises(ValueError, match=r"^Strategy: unknown key 'n_colocation' \(did you mean "
                                         r"'n_collocation'\?\); known keys: adam_steps, "):
        Strategy.from_dict({"n_colocation": 5})
    with pytest.raises(ValueError, match=r"field 'lr': expected a finite number, got float nan"):
        Strategy.from_dict({"lr": float("nan")})
    with pytest.raises(ValueError, match=r"field 'max_seconds': expected a finite number, got "
                                         "float inf"):
        Strategy.from_dict({"max_seconds": float("inf")})
    with pytest.raises(ValueError, match=r"field 'adam_steps': expected an int, got int 1000+ "
                                         r"\(integers are limited to 2\*\*63 - 1"):
        Strategy.from_dict({"adam_steps": 10**30})
    with pytest.raises(ValueError, match=r"field 'total_steps': expected an int or null, got "
                                         "float 2.5"):
        Strategy.from_dict({"total_steps": 2.5})
    with pytest.raises(ValueError, match=r"field 'hard': expected a bool \(true or false\), got "
                                         "int 1"):
        Strategy.from_dict({"hard": 1})
    with pytest.raises(ValueError, match=r"field 'resample': expected a string or null"):
        Strategy.from_dict({"resample": ["rad"]})
    # the dataclass's own range checks still run after the types
    with pytest.raises(ValueError, match=r"Strategy\.n_collocation = 0: expected None \(sized "
                                         r"by the problem's dimension\) or an integer >= 1"):
        Strategy.from_dict({"n_collocation": 0})
    # JSON writes whole numbers as floats at times (1e3): they are ints
    s = Strategy.from_dict({"adam_steps": 1e3, "lr": 1, "total_steps": None})
    assert s.adam_steps == 1000 and isinstance(s.adam_steps, int)
    assert s.lr == 1.0 and isinstance(s.lr, float)


@pytest.mark.parametrize("path", ["fields.nerf.NerfConfig", "fields.sdf.field.SDFConfig",
                                  "fields.sdf.neus.NeusConfig", "fields.flow.model.FlowConfig",
                                  "fields.inr.model.INRConfig", "fields.pinn.strategy.Strategy"])
def test_every_kind_config_checks_types_through_the_one_from_dict(path):
    import dataclasses
    import importlib
    import typing

    module, name = path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if hint is int or hint is float:
            with pytest.raises(ValueError, match=rf"^{name}: field '{f.name}': expected (an int|a "
                                                 r"finite number), got str 'x'"):
                cls.from_dict({f.name: "x"})
        elif hint is bool:
            with pytest.raises(ValueError, match=rf"field '{f.name}': expected a bool"):
                cls.from_dict({f.name: "yes"})
        elif hint is str:
            with pytest.raises(ValueError, match=rf"field '{f.name}': expected a string"):
                cls.from_dict({f.name: 3})


def test_check_value_understands_unions_literals_and_containers():
    from typing import Any, Literal

    from fields.config import check_value

    assert check_value("C", "a", float | None, None) is None
    assert check_value("C", "a", float | None, 2) == 2.0
    assert check_value("C", "a", Literal["x", "y"], "y") == "y"
    with pytest.raises(ValueError, match=r"^C: field 'a': expected one of 'x', 'y', got str 'z'"):
        check_value("C", "a", Literal["x", "y"], "z")
    assert check_value("C", "a", dict[str, Any], {"k": 1}) == {"k": 1}
    with pytest.raises(ValueError, match=r"field 'a': expected a JSON object \(dict\), got list"):
        check_value("C", "a", dict[str, Any], [1])
    assert check_value("C", "a", list[int], [1, 2]) == [1, 2]
    assert check_value("C", "a", Any, object) is object
    with pytest.raises(ValueError, match=r"field 'a': expected a finite number, got int 1000+"):
        check_value("C", "a", float, 10**400)


def test_numpy_scalars_count_as_the_numbers_they_hold():
    import numpy as np

    from fields.pinn.strategy import Strategy

    s = Strategy.from_dict({"adam_steps": np.int64(5), "lr": np.float32(0.5),
                            "hard": np.bool_(False), "max_seconds": 3})
    assert (s.adam_steps, s.lr, s.hard, s.max_seconds) == (5, 0.5, False, 3.0)
    assert type(s.adam_steps) is int and type(s.lr) is float and type(s.hard) is bool
    with pytest.raises(ValueError, match=r"field 'adam_steps': expected an int, got float64"):
        Strategy.from_dict({"adam_steps": np.float64("nan")})
