"""Image fitting (`fit_image`), image I/O and checkpoints."""

import json

import pytest
import torch
from typer.testing import CliRunner

from fields import _ext
from fields.checkpoint import load_checkpoint, save_checkpoint
from fields.cli import app
from fields.data.images import procedural_image, psnr, read_image, write_image
from fields.data.signals import grid_coords
from fields.inr import fit_image, render_signal
from fields.nn import NetworkWithInputEncoding

needs_ext = pytest.mark.skipif(not _ext.available(), reason="fields._C not built")


def test_procedural_image_is_deterministic_and_detailed():
    a, b = procedural_image(64, seed=1), procedural_image(64, seed=1)
    assert a.shape == (64, 64, 3) and torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 1
    # detail: neighbouring pixels differ somewhere by a lot (edges), and mostly a little
    dx = (a[:, 1:] - a[:, :-1]).abs().amax(-1)
    assert dx.max() > 0.3 and dx.median() < 0.05
    assert not torch.equal(a, procedural_image(64, seed=2))


def test_pixel_centres():
    c = grid_coords((2, 4))
    assert c.shape == (8, 2)
    torch.testing.assert_close(c[0], torch.tensor([0.125, 0.25]))
    torch.testing.assert_close(c[-1], torch.tensor([0.875, 0.75]))


@needs_ext
def test_fit_small_image_reaches_30db():
    img = procedural_image(64)
    result = fit_image(img, seconds=60, max_steps=150)
    assert result.psnr >= 30.0, result.history[-1]
    assert result.steps == 150
    recon = render_signal(result.field, (64, 64))
    assert recon.shape == (64, 64, 3)
    assert abs(psnr(recon.clamp(0, 1), img) - result.psnr) < 0.5


def test_fit_image_rejects_bad_shapes():
    with pytest.raises(ValueError, match="H, W, 1\\|3\\|4"):
        fit_image(torch.rand(8, 8, 2))


def test_image_io_round_trip_and_errors(tmp_path):
    img = procedural_image(32)
    path = write_image(tmp_path / "a.png", img)
    back = read_image(path)
    assert back.shape == (32, 32, 3)
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    with pytest.raises(FileNotFoundError, match="no such image"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"bad\.png: not a readable image"):
        read_image(tmp_path / "bad.png")


def test_checkpoint_round_trip_and_errors(tmp_path):
    cfg = {"otype": "Frequency", "n_frequencies": 2}
    net = {"otype": "FullyFusedMLP", "n_neurons": 16, "n_hidden_layers": 1}
    a = NetworkWithInputEncoding(2, 3, cfg, net, seed=1)
    b = NetworkWithInputEncoding(2, 3, cfg, net, seed=2)
    save_checkpoint(tmp_path / "m.pt", a, extra={"note": "hi"})
    payload = load_checkpoint(tmp_path / "m.pt", b)
    assert payload["note"] == "hi"
    x = torch.rand(5, 2)
    torch.testing.assert_close(a(x), b(x))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not a fields checkpoint"):
        load_checkpoint(tmp_path / "other.pt", b)
    wrong = NetworkWithInputEncoding(2, 4, cfg, net)
    with pytest.raises(ValueError, match="'state_dict' does not match"):
        load_checkpoint(tmp_path / "m.pt", wrong)


@needs_ext
def test_cli_fit_image_writes_outputs(tmp_path):
    src = write_image(tmp_path / "in.png", procedural_image(48))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["fit", "image", str(src), "--output", str(out), "--max-seconds", "30",
              "--steps", "60"]
    )
    assert result.exit_code == 0, result.output
    for name in ("config.json", "target.png", "reconstruction.png", "error.png",
                 "metrics.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["height"] == 48 and metrics["steps"] == 60 and metrics["psnr"] > 15
    assert metrics["model"] == "hash"
    missing = CliRunner().invoke(app, ["fit", "image", str(tmp_path / "nope.png")])
    assert missing.exit_code == 2 and "no such image file" in " ".join(missing.output.split())
    bad_cfg = CliRunner().invoke(
        app, ["fit", "image", str(src), "--encoding", '{"otype": "HashGrid", "n_level": 3}']
    )
    assert bad_cfg.exit_code == 2
    assert "did you mean 'n_levels'" in " ".join(bad_cfg.output.split())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_cli_fit_image_on_a_device(tmp_path, device):
    """`fields fit image --device`: the field and the samples on the device, the generator and
    the outputs on the host; resumed on the same device; `fields eval` reads it on the CPU."""
    src = write_image(tmp_path / "in.png", procedural_image(48))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["fit", "image", str(src), "--output", str(out), "--max-seconds", "30",
              "--steps", "60", "--device", device, "--sape", "4"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["psnr"] > 15
    assert json.loads((out / "config.json").read_text())["device"] == device
    more = CliRunner().invoke(
        app, ["fit", "image", str(src), "--output", str(out), "--steps", "80", "--device",
              device, "--sape", "4", "--resume", str(out / "checkpoint.pt")])
    assert more.exit_code == 0, more.output
    assert json.loads((out / "metrics.json").read_text())["steps"] == 80
    scores = CliRunner().invoke(app, ["eval", str(out / "checkpoint.pt")])
    assert scores.exit_code == 0, scores.output


def test_one_ssim_matches_the_gaussian_ssim_inr_used():
    # fields.metrics.ssim replaced the INR's scikit-image SSIM (Gaussian window sigma 1.5,
    # population covariance): the two agree
    from skimage.metrics import structural_similarity

    from fields.metrics import ssim

    img = procedural_image(64)
    noisy = (img + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0)))
    noisy = noisy.clamp(0, 1)
    reference = structural_similarity(noisy.numpy(), img.numpy(), data_range=1.0,
                                      channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert abs(ssim(noisy, img) - reference) < 1e-5
    assert ssim(img, img) == pytest.approx(1.0)


def test_error_map_is_log_scaled():
    from fields.data.images import error_map

    target = torch.zeros(1, 4, 3)
    pred = torch.tensor([0.0, 1e-3, 1e-2, 1.0])[None, :, None].expand(1, 4, 3)
    m = error_map(pred, target)
    assert torch.all(m[0, 0] == 0) and torch.all(m[0, 3] == 1)  # black at 0, white at 1
    brightness = m[0].sum(-1)
    assert brightness[0] < brightness[1] < brightness[2] < brightness[3]
