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
