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
