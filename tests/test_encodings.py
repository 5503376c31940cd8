"""Closed-form encodings, spherical harmonics, triplanes, composites, configs, masking."""

import math

import pytest
import torch

import fields.nn as tcnn
from fields import _ext
from fields.nn import (
    CoarseToFine,
    Composite,
    Frequency,
    Identity,
    OneBlob,
    RandomFourierFeatures,
    SphericalHarmonics,
    TriangleWave,
    Triplane,
    encoding_from_config,
)
from fields.nn.spherical_harmonics import spherical_harmonics


def test_frequency_layout_and_values():
    enc = Frequency(2, n_frequencies=3)
    assert enc.n_output_dims == 12
    x = torch.tensor([[0.3, 0.7]])
    y = enc(x)[0]
    want = []
    for d in range(2):
        for k in range(3):
            t = 2**k * math.pi * x[0, d].item()
            want += [math.sin(t), math.cos(t)]
    torch.testing.assert_close(y, torch.tensor(want))


def test_triangle_wave_values():
    enc = TriangleWave(1, n_frequencies=2)
    x = torch.tensor([[0.0], [0.25], [0.5], [0.125]])
    want = torch.tensor([[-1.0, -1.0], [0.0, 1.0], [1.0, -1.0], [-0.5, 0.0]])
    torch.testing.assert_close(enc(x), want)


def test_one_blob_is_a_gaussian_mass_per_bin():
    enc = OneBlob(1, n_bins=8)
    y = enc(torch.tensor([[0.5], [0.06]]))
    assert y.shape == (2, 8)
    assert y[0].argmax() in (3, 4) and y[1].argmax() == 0
    torch.testing.assert_close(y[0, 3], y[0, 4])  # symmetric about the centre
    assert 0.95 < y[0].sum() < 1.0  # the mass inside [0, 1] (tails cut)


def test_identity_scale_offset():
    enc = Identity(3, scale=2.0, offset=-1.0)
    x = torch.rand(4, 3)
    torch.testing.assert_close(enc(x), 2 * x - 1)


def test_random_fourier_features_are_seeded():
    a = RandomFourierFeatures(2, n_frequencies=16, scale=5.0, seed=3)
    b = RandomFourierFeatures(2, n_frequencies=16, scale=5.0, seed=3)
    c = RandomFourierFeatures(2, n_frequencies=16, scale=5.0, seed=4)
    x = torch.rand(10, 2)
    assert a(x).shape == (10, 32)
    torch.testing.assert_close(a(x), b(x))
    assert not torch.allclose(a(x), c(x))
    assert 3.0 < a.B.std().item() < 7.0


def test_spherical_harmonics_match_published_constants():
    v = torch.tensor([0.3, -0.4, 0.866], dtype=torch.float64)
    v = v / v.norm()
    x, y, z = v.tolist()
    got = spherical_harmonics(v[None], 3)[0]
    want = [
        0.28209479177387814,
        -0.48860251190291987 * y,
        0.48860251190291987 * z,
        -0.48860251190291987 * x,
        1.0925484305920792 * x * y,
        -1.0925484305920792 * y * z,
        0.94617469575755997 * z * z - 0.31539156525251999,
        -1.0925484305920792 * x * z,
        0.54627421529603959 * (x * x - y * y),
    ]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_spherical_harmonics_are_orthonormal_up_to_degree_8():
    # Gauss-Legendre in cos(theta) x uniform in phi integrates these polynomials exactly
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(24)
    phi = torch.arange(48, dtype=torch.float64) * (2 * math.pi / 48)
    z = torch.tensor(nodes)[:, None].expand(-1, 48)
    r = torch.sqrt(1 - z**2)
    dirs = torch.stack((r * torch.cos(phi), r * torch.sin(phi), z), -1).reshape(-1, 3)
    w = (torch.tensor(weights)[:, None] * (2 * math.pi / 48)).expand(-1, 48).reshape(-1)
    enc = SphericalHarmonics(degree=8)
    y = enc((dirs + 1) / 2)
    gram = (y * w[:, None]).T @ y
    torch.testing.assert_close(gram, torch.eye(64, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "enc",
    [
        Frequency(2, n_frequencies=4),
        TriangleWave(2, n_frequencies=3),
        OneBlob(2, n_bins=5),
        RandomFourierFeatures(2, n_frequencies=6, scale=2.0),
        SphericalHarmonics(degree=5),
        Identity(2, scale=3.0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_closed_form_gradcheck(enc):
    x = torch.rand(6, enc.n_input_dims, dtype=torch.float64) * 0.8 + 0.1
    if isinstance(enc, TriangleWave):
        x = torch.tensor([[0.1, 0.3], [0.2, 0.05]], dtype=torch.float64)  # away from kinks
    enc = enc.double()
    x.requires_grad_()
    assert torch.autograd.gradcheck(enc, (x,))
    if not isinstance(enc, TriangleWave):  # piecewise linear: second derivative 0 / undefined
        assert torch.autograd.gradgradcheck(enc, (x,))


@pytest.mark.parametrize("reduce", ["sum", "product", "concat"])
def test_triplane(reduce):
    enc = Triplane(resolution=16, n_features=8, n_levels=2, reduce=reduce)
    assert enc.n_output_dims == (48 if reduce == "concat" else 16)
    x = torch.rand(100, 3, requires_grad=True)
    y = enc(x)
    assert y.shape == (100, enc.n_output_dims)
    torch.testing.assert_close(y, enc.reference(x), rtol=1e-5, atol=1e-6)
    xy = enc.planes[0](x[:, [0, 1]])
    xz = enc.planes[1](x[:, [0, 2]])
    yz = enc.planes[2](x[:, [1, 2]])
    want = {"sum": xy + xz + yz, "product": xy * xz * yz, "concat": torch.cat((xy, xz, yz), -1)}
    torch.testing.assert_close(y, want[reduce])
    g = torch.randn_like(y)
    a = torch.autograd.grad(y, [x, *enc.parameters()], g)
    b = torch.autograd.grad(enc.reference(x), [x, *enc.parameters()], g)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


def test_composite_splits_inputs():
    enc = Composite([Frequency(2, n_frequencies=2), Identity(1)])
    x = torch.rand(5, 3)
    y = enc(x)
    torch.testing.assert_close(y[:, :8], Frequency(2, n_frequencies=2)(x[:, :2]))
    torch.testing.assert_close(y[:, 8:], x[:, 2:])


CONFIGS = [
    {"otype": "Identity", "scale": 2.0, "offset": 0.5},
    {"otype": "Frequency", "n_frequencies": 6},
    {"otype": "TriangleWave", "n_frequencies": 5},
    {"otype": "OneBlob", "n_bins": 8},
    {"otype": "SphericalHarmonics", "degree": 3},
    {"otype": "HashGrid", "n_levels": 4, "log2_hashmap_size": 10, "per_level_scale": 1.5},
    {"otype": "Grid", "type": "Dense", "n_levels": 2, "base_resolution": 8},
    {"otype": "TiledGrid", "n_levels": 3, "interpolation": "Smoothstep"},
    {"otype": "RandomFourierFeatures", "n_frequencies": 8, "scale": 3.0},
    {"otype": "Triplane", "resolution": 16, "n_features": 4, "reduce": "concat"},
    {
        "otype": "Composite",
        "nested": [
            {"n_dims_to_encode": 2, "otype": "Frequency", "n_frequencies": 2},
            {"otype": "Identity"},
        ],
    },
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["otype"])
def test_config_round_trip(config):
    enc = encoding_from_config(3, config)
    cfg = enc.to_config()
    again = encoding_from_config(3, cfg)
    assert again.to_config() == cfg
    again.load_state_dict(enc.state_dict())
    x = torch.rand(20, 3)
    torch.testing.assert_close(again(x), enc(x))
    for key, value in config.items():
        if key not in ("otype", "nested"):
            assert cfg[key] == value


def test_tcnn_defaults():
    enc = encoding_from_config(3, {"otype": "HashGrid"})
    assert enc.to_config() == {
        "otype": "Grid",
        "type": "Hash",
        "n_levels": 16,
        "n_features_per_level": 2,
        "log2_hashmap_size": 19,
        "base_resolution": 16,
        "per_level_scale": 2.0,
        "interpolation": "Linear",
    }
    assert encoding_from_config(3, {"otype": "frequency"}).n_output_dims == 3 * 24
    assert encoding_from_config(3, {"otype": "SphericalHarmonics"}).n_output_dims == 16
    assert encoding_from_config(2, {"otype": "OneBlob"}).n_output_dims == 32


@pytest.mark.parametrize(
    ("n_in", "config", "match"),
    [
        (3, {"otype": "HashGird"}, "did you mean 'HashGrid'"),
        (3, {}, "missing 'otype'"),
        (3, {"otype": "HashGrid", "n_level": 4}, "did you mean 'n_levels'"),
        (3, {"otype": "SphericalHarmonics", "degree": 9}, "'degree' must be at most 8"),
        (2, {"otype": "SphericalHarmonics"}, "3-D directions"),
        (3, {"otype": "Frequency", "n_frequencies": 0}, "positive integer"),
        (3, {"otype": "Grid", "type": "Octree"}, "'type' must be one of Hash, Dense, Tiled"),
        (3, {"otype": "HashGrid", "n_features_per_level": 3}, "n_features_per_level"),
        (
            3,
            {"otype": "Composite", "nested": [{"otype": "Identity"}, {"otype": "Identity"}]},
            "nested\\[0\\].*n_dims_to_encode",
        ),
        (
            4,
            {"otype": "Composite", "nested": [{"n_dims_to_encode": 2, "otype": "Identity"},
                                              {"n_dims_to_encode": 1, "otype": "Identity"}]},
            "cover 3 dims, the input has 4",
        ),
        (3, {"otype": "Composite", "nested": []}, "non-empty list"),
        (3, "HashGrid", "must be a dict"),
    ],
)
def test_bad_configs(n_in, config, match):
    with pytest.raises(ValueError, match=match):
        encoding_from_config(n_in, config)


def test_progressive_schedule_masks_levels():
    enc = Frequency(1, n_frequencies=4)
    sched = CoarseToFine(start_step=0, end_step=100, start_levels=1)
    assert sched.alpha(0, 4) == 1.0
    assert sched.alpha(50, 4) == 2.5
    assert sched.alpha(100, 4) is None
    model = torch.nn.Sequential(enc)
    sched.apply(model, 0)
    y = enc(torch.rand(7, 1))
    assert torch.all(y[:, 2:] == 0) and torch.any(y[:, :2] != 0)  # only frequency 0
    sched.apply(model, 50)
    y = enc(torch.rand(7, 1))
    assert torch.any(y[:, 4:6] != 0) and torch.all(y[:, 6:] == 0)
    sched.apply(model, 100)
    assert enc.progress is None
    with pytest.raises(ValueError, match="end_step"):
        CoarseToFine(start_step=10, end_step=10)


def test_network_with_input_encoding_tcnn_api():
    enc_cfg = {
        "otype": "Composite",
        "nested": [
            {"n_dims_to_encode": 3, "otype": "HashGrid", "n_levels": 4, "log2_hashmap_size": 12},
            {"otype": "SphericalHarmonics", "degree": 4},
        ],
    }
    net_cfg = {"otype": "FullyFusedMLP", "n_neurons": 32, "n_hidden_layers": 2}
    a = tcnn.NetworkWithInputEncoding(6, 4, enc_cfg, net_cfg, seed=7)
    b = tcnn.NetworkWithInputEncoding(6, 4, enc_cfg, net_cfg, seed=7)
    x = torch.rand(100, 6)
    assert a(x).shape == (100, 4) and a.n_output_dims == 4
    torch.testing.assert_close(a(x), b(x))
    enc = tcnn.Encoding(3, {"otype": "Frequency", "n_frequencies": 2}, dtype=torch.float64)
    assert enc.n_output_dims == 12 and enc(torch.rand(2, 3, dtype=torch.float64)).shape == (2, 12)
    net = tcnn.Network(12, 2, net_cfg)
    assert net(enc(torch.rand(2, 3, dtype=torch.float64)).float()).shape == (2, 2)


@pytest.mark.skipif(not _ext.available(), reason="fields._C not built")
def test_hash_grid_network_trains_end_to_end():
    torch.manual_seed(0)
    model = tcnn.NetworkWithInputEncoding(
        2,
        1,
        {"otype": "HashGrid", "n_levels": 8, "log2_hashmap_size": 14, "per_level_scale": 1.5},
        {"otype": "FullyFusedMLP", "n_neurons": 32, "n_hidden_layers": 2},
    )
    x = torch.rand(8192, 2)
    target = ((x[:, :1] - 0.5).square() + (x[:, 1:] - 0.5).square() < 0.1).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        loss = (model(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_spatial_progress_masks_per_point():
    from fields.nn import SpatialProgress

    enc = Frequency(1, n_frequencies=4)
    prog = SpatialProgress(n_dims=1, n_levels=4, resolution=2, start_levels=1.0)
    enc.set_progress(prog)
    x = torch.tensor([[0.2], [0.7]])
    y = enc(x)
    assert torch.all(y[:, 2:] == 0)  # both cells: frequency 0 only
    # the right cell has a large error, the left a small one: only the right advances
    prog.update(torch.tensor([[0.1], [0.3], [0.8]]), torch.tensor([0.0, 0.01, 1.0]), 0.1, rate=2)
    torch.testing.assert_close(prog.alpha, torch.tensor([1.0, 3.0]))
    y = enc(x)
    assert torch.all(y[0, 2:] == 0) and torch.any(y[1, 2:6] != 0) and torch.all(y[1, 6:] == 0)
    assert "alpha" in dict(prog.named_buffers())
    with pytest.raises(ValueError, match="progress must be"):
        enc.set_progress("fine")


@pytest.mark.skipif(not _ext.available(), reason="fields._C not built")
def test_spatial_progress_on_the_cpu_grid():
    from fields.nn import HashGrid, SpatialProgress

    enc = HashGrid(2, n_levels=4, log2_hashmap_size=10, backend="cpu")
    prog = SpatialProgress(n_dims=2, n_levels=4, resolution=4, start_levels=2.0)
    enc.set_progress(prog)
    x = torch.rand(64, 2)
    y = enc(x)
    assert torch.all(y[:, 4:] == 0) and torch.any(y[:, :4] != 0)
    torch.testing.assert_close(y, enc.reference(x))
