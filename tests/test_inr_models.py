"""INR models, signals (audio, volumes, video) and the INR command line."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fields import _ext
from fields.cli import app
from fields.data.signals import (
    builtin_image,
    grid_coords,
    read_audio,
    read_video,
    read_volume,
    synthetic_audio,
    write_audio,
)
from fields.inr import MODELS, CoordinateField, fit_signal, load_inr, render_signal
from fields.nn import FusedMLP
from fields.nn.activations import apply_activation
from fields.nn.inr_layers import (
    FANLayer,
    GaborNet,
    chebyshev_basis,
    gabor_wavelet,
)
from fields.nn.modules import count_parameters

needs_ext = pytest.mark.skipif(not _ext.available(), reason="fields._C not built")


# -- activations and initialisations --


@pytest.mark.parametrize("name", ["Gaussian", "Finer"])
def test_new_activations_values_and_derivatives(name):
    z = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64, requires_grad=True)
    w = 3.0
    a = apply_activation(name, z, w)
    (g,) = torch.autograd.grad(a.sum(), z)
    zd = z.detach()
    if name == "Gaussian":
        want, dwant = torch.exp(-(w * zd) ** 2), -2 * w * w * zd * torch.exp(-(w * zd) ** 2)
    else:
        want = torch.sin(w * (zd.abs() + 1) * zd)
        dwant = w * (2 * zd.abs() + 1) * torch.cos(w * (zd.abs() + 1) * zd)
    torch.testing.assert_close(a.detach(), want)
    torch.testing.assert_close(g, dwant)


@pytest.mark.parametrize("activation", ["Sine", "Finer"])
def test_siren_initialisation_keeps_activations_stable(activation):
    # SIREN's initialisation: hidden activations keep the arcsine distribution of std 1/sqrt(2)
    # through depth (FINER keeps SIREN's weights)
    torch.manual_seed(0)
    net = FusedMLP(2, 1, 256, 5, activation, bias=True, omega0=30.0, backend="torch")
    first = net.weights[0]
    assert first.abs().max() <= 1.0 / 2 + 1e-6  # uniform(+-1/fan_in), fan_in 2
    for w in net.weights[1:]:
        assert w.abs().max() <= math.sqrt(6.0 / w.shape[1]) / 30.0 + 1e-6
    h = torch.rand(20000, 2) * 2 - 1
    stds = []
    for w, b in zip(net.weights[:-1], net.biases[:-1], strict=True):
        h = apply_activation(activation, h @ w.T + b, 30.0)
        stds.append(float(h.std()))
    if activation == "Sine":
        assert all(0.6 < s < 0.8 for s in stds[1:]), stds
    else:
        assert all(0.4 < s < 0.9 for s in stds[1:]), stds


def test_gaussian_initialisation_is_linear_default():
    torch.manual_seed(0)
    net = FusedMLP(2, 3, 64, 2, "Gaussian", bias=True, omega0=10.0, backend="torch")
    for w in net.weights[:-1]:
        assert w.abs().max() <= 1.0 / math.sqrt(w.shape[1]) + 1e-6


# -- networks --


def test_gabor_wavelet_and_gabor_net():
    z = torch.tensor([0.0, 0.1, -0.2])
    got = gabor_wavelet(z, 20.0, 10.0)
    want = torch.exp(torch.complex(-(10 * z) ** 2, 20 * z))
    torch.testing.assert_close(got, want)
    net = GaborNet(2, 3, width=16, depth=3)
    x = torch.rand(10, 2) * 2 - 1
    y = net(x)
    assert y.shape == (10, 3) and not y.is_complex()
    # the real-arithmetic network equals the complex one, values and gradients (float64)
    net64 = GaborNet(2, 3, width=16, depth=3).double()
    xr = x.double().requires_grad_()
    ref = net64.reference(xr)
    torch.testing.assert_close(net64(xr), ref)
    (gx,) = torch.autograd.grad(net64(xr).sum(), xr)
    (gr,) = torch.autograd.grad(ref.sum(), xr)
    torch.testing.assert_close(gx, gr)
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()
               if p.numel())
    # complex parameters count twice
    real = sum(p.numel() for p in net.parameters() if not p.is_complex())
    cplx = sum(p.numel() for p in net.parameters() if p.is_complex())
    assert count_parameters(net) == real + 2 * cplx


def test_chebyshev_basis_matches_closed_form():
    x = torch.linspace(-0.99, 0.99, 50, dtype=torch.float64)
    basis = chebyshev_basis(x, 12)
    k = torch.arange(13, dtype=torch.float64)
    want = torch.cos(k * torch.arccos(x)[:, None])
    torch.testing.assert_close(basis, want)


def test_fan_layer_parts():
    layer = FANLayer(3, 16)
    h = torch.randn(5, 3)
    out = layer(h)
    p = h @ layer.periodic.weight.T
    assert out.shape == (5, 16)
    torch.testing.assert_close(out[:, :4], torch.cos(p))
    torch.testing.assert_close(out[:, 4:8], torch.sin(p))
    torch.testing.assert_close(out[:, 8:], torch.nn.functional.gelu(layer.gated(h)))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_learns(name):
    # a few steps on a tiny image lower the loss of every model
    img = builtin_image("camera", 24)
    coords, values = grid_coords(img.shape[:2]), img.reshape(-1, 1)
    before = CoordinateField(name, 2, 1, 24)
    with torch.no_grad():
        start = float((before(coords) - values).square().mean())
    fit = fit_signal(coords, values, name, finest=24, seconds=30.0, max_steps=60,
                     eval_every=1e9)
    end = float((fit.predict(coords) - values).square().mean())
    assert end < 0.7 * start, (name, start, end)


@needs_ext
def test_end_to_end_fit_beats_fixed_psnr():
    img = builtin_image("camera", 48)
    coords, values = grid_coords(img.shape[:2]), img.reshape(-1, 1)
    fit = fit_signal(coords, values, "siren", finest=48, seconds=60.0, max_steps=300,
                     batch=None)
    assert fit.psnr > 30.0, fit.history[-3:]
    fit = fit_signal(coords, values, "hash", finest=48, seconds=60.0, max_steps=300)
    assert fit.psnr > 30.0, fit.history[-3:]


def test_teaching_and_mask():
    img = builtin_image("camera", 16)
    coords, values = grid_coords(img.shape[:2]), img.reshape(-1, 1)
    mask = torch.zeros(256, dtype=torch.bool)
    mask[::3] = True
    fit = fit_signal(coords, values, "siren", finest=16, max_steps=20, mask=mask,
                     teaching=0.5, seconds=30.0)
    assert fit.steps == 20
    with pytest.raises(ValueError, match="teaching"):
        fit_signal(coords, values, "siren", teaching=1.5)
    with pytest.raises(ValueError, match="mask keeps no samples"):
        fit_signal(coords, values, "siren", mask=torch.zeros(256, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown INR model 'nope'"):
        fit_signal(coords, values, "nope")


def test_sape_progress_advances_and_round_trips(tmp_path):
    from fields.inr import save_inr_checkpoint

    img = builtin_image("camera", 16)
    coords, values = grid_coords(img.shape[:2]), img.reshape(-1, 1)
    fit = fit_signal(coords, values, "relu_pe", finest=16, max_steps=30, sape=4,
                     sape_rate=0.1, seconds=30.0)
    (prog,) = fit.field.progress
    assert prog.alpha.max() > 1.0 + 1e-6  # some cells revealed more levels
    assert prog.alpha.max() <= 1.0 + 30 * 0.1 + 1e-6
    save_inr_checkpoint(tmp_path / "c.pt", fit.field, {"kind": "image", "shape": [16, 16]})
    back, _ = load_inr(tmp_path / "c.pt")
    torch.testing.assert_close(back.progress[0].alpha, prog.alpha)
    torch.testing.assert_close(render_signal(back, (16, 16)), render_signal(fit.field, (16, 16)))
    with pytest.raises(ValueError, match="needs an encoding with levels"):
        fit_signal(coords, values, "siren", sape=4)


def test_render_signal_any_resolution():
    field = CoordinateField("siren", 2, 3, 8)
    img = render_signal(field, (8, 10), scale=2.5)
    assert img.shape == (20, 25, 3)
    with pytest.raises(ValueError, match="scale"):
        render_signal(field, (8, 8), scale=0)


# -- signals --


def test_grid_coords_order():
    c = grid_coords((2, 3))
    assert c.shape == (6, 2)
    torch.testing.assert_close(c[1], torch.tensor([0.5, 0.25]))  # x first, row-major
    assert grid_coords((4, 2, 2)).shape == (16, 3)


def test_builtin_image_and_errors():
    img = builtin_image("camera", 64)
    assert img.shape == (64, 64, 1) and 0 <= img.min() and img.max() <= 1
    assert builtin_image("coffee", 60).shape == (40, 60, 3)
    with pytest.raises(ValueError, match="unknown built-in image 'nope'"):
        builtin_image("nope")


def test_exr_image_is_read_as_float(tmp_path):
    import imageio.v3 as iio

    from fields.data.images import read_image

    arr = np.random.default_rng(2).random((6, 5, 3)).astype(np.float32)
    iio.imwrite(tmp_path / "a.exr", arr)
    np.testing.assert_allclose(read_image(tmp_path / "a.exr").numpy(), arr, atol=1e-6)


def test_audio_round_trip_and_errors(tmp_path):
    sig = synthetic_audio(0.25, 8000)
    write_audio(tmp_path / "a.wav", sig, 8000)
    back, rate = read_audio(tmp_path / "a.wav")
    assert rate == 8000 and back.shape == sig.shape
    assert (back - sig).abs().max() <= 1.0 / 32767 + 1e-6
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(ValueError, match=r"bad\.wav: not a readable WAV"):
        read_audio(tmp_path / "bad.wav")
    with pytest.raises(FileNotFoundError, match="no such audio file"):
        read_audio(tmp_path / "missing.wav")


def test_volume_round_trip_and_errors(tmp_path):
    vol = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32) * 3 + 1
    np.save(tmp_path / "v.npy", vol)
    got, (lo, hi) = read_volume(tmp_path / "v.npy")
    assert got.shape == (4, 5, 6, 1) and got.min() == 0 and got.max() == 1
    np.testing.assert_allclose(got[..., 0].numpy() * (hi - lo) + lo, vol, rtol=1e-5, atol=1e-5)
    np.save(tmp_path / "flat.npy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"flat\.npy: expected a volume of shape"):
        read_volume(tmp_path / "flat.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.npy: not a readable \.npy"):
        read_volume(tmp_path / "junk.npy")


def test_video_from_frames(tmp_path):
    from fields.data.images import write_image

    for k in range(3):
        write_image(tmp_path / f"f{k}.png", torch.full((6, 8, 3), k / 3))
    vid = read_video(tmp_path)
    assert vid.shape == (3, 6, 8, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image frames"):
        read_video(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such video"):
        read_video(tmp_path / "missing.mp4")


# -- the configuration and the task --


def test_inr_config_from_dict_names_unknown_and_bad_fields():
    from fields.inr import INRConfig

    cfg = INRConfig.from_dict({"model": "siren", "lr": 0.005})
    assert cfg.model == "siren" and cfg.lr == 0.005 and cfg.batch == 0
    assert INRConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"x\.json: unknown key 'lrr' \(did you mean 'lr'"):
        INRConfig.from_dict({"lrr": 1.0}, where="x.json")
    with pytest.raises(ValueError, match="INRConfig: teaching must be in"):
        INRConfig.from_dict({"teaching": 1.0})
    with pytest.raises(ValueError, match="unknown INR model 'nope'"):
        INRConfig.from_dict({"model": "nope"})
    with pytest.raises(ValueError, match="model 'custom' needs field 'encoding'"):
        INRConfig.from_dict({"model": "custom"})
    custom = INRConfig.from_dict({"model": "custom", "network": {"otype": "FullyFusedMLP"}})
    assert custom.custom == {"encoding": None, "network": {"otype": "FullyFusedMLP"}}


def test_signal_task_resolves_config_and_resumes_exactly(tmp_path):
    # the task on the training loop: resolved config, and a run split by a checkpoint equals
    # one run (generator, optimiser and teaching pool restored)
    from fields.inr import INRConfig, SignalTask
    from fields.train import TrainConfig, train

    img = builtin_image("camera", 16)
    coords, values = grid_coords(img.shape[:2]), img.reshape(-1, 1)
    # no learning-rate decay: the first part of the split run has its own, shorter budget
    cfg = INRConfig(model="siren", batch=64, lr_decay=1.0, teaching=0.5, teaching_every=3)

    def run(steps, resume=None):
        task = SignalTask(coords, values, cfg, finest=16, seed=3)
        train(task, TrainConfig(steps=steps, max_seconds=60.0, eval_every=0.0),
              checkpoint=tmp_path / "c.pt", resume=resume, show_progress=False)
        return task

    whole = run(8)
    assert whole.config.lr == MODELS["siren"].lr and whole.config.batch == 64
    run(4)
    split = run(8, resume=tmp_path / "c.pt")
    torch.testing.assert_close(split.predict(), whole.predict())


def test_fit_signal_is_deterministic_and_reports_the_final_evaluation():
    img = builtin_image("camera", 16)
    coords, values = grid_coords(img.shape[:2]), img.reshape(-1, 1)
    seen = []
    a = fit_signal(coords, values, "siren", finest=16, max_steps=12, on_eval=seen.append)
    b = fit_signal(coords, values, "siren", finest=16, max_steps=12)
    assert a.steps == b.steps == 12 and a.psnr == b.psnr
    assert a.history[-1]["step"] == 12 and a.history[-1]["psnr"] == a.psnr
    assert seen[-1] == a.history[-1] and set(seen[-1]) == {"step", "seconds", "loss", "psnr"}


# -- command line --


def _fit(args, **kw):
    r = CliRunner().invoke(app, ["fit", *args], **kw)
    assert r.exit_code == 0, r.output
    return r


@needs_ext
def test_cli_fit_image_builtin_and_render(tmp_path):
    out = tmp_path / "run"
    _fit(["image", "--builtin", "camera", "--size", "32", "--model", "siren", "--max-seconds",
          "30", "--steps", "20", "--output", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    assert list(m)[:3] == ["steps", "seconds", "wall_seconds"]
    for key in ("psnr", "ssim", "params", "height", "width", "channels", "history"):
        assert key in m
    assert m["model"] == "siren" and m["steps"] == 20 and m["params"] > 1000
    assert m["wall_seconds"] >= m["seconds"] > 0
    for name in ("target.png", "reconstruction.png", "error.png", "checkpoint.pt"):
        assert (out / name).is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "inr" and cfg["input"] == "camera" and cfg["seed"] == 0
    assert cfg["steps"] == 20 and cfg["max_seconds"] == 30 and cfg["resume"] is None
    assert cfg["source"] == {"kind": "image", "builtin": "camera", "size": 32}
    # the full resolved config: the model's learning rate and batch filled in
    assert cfg["config"]["model"] == "siren" and cfg["config"]["lr"] == MODELS["siren"].lr
    assert set(cfg["config"]) >= {"batch", "teaching", "sape", "encoding", "network"}
    _field, signal = load_inr(out / "checkpoint.pt")
    assert signal["kind"] == "image" and signal["shape"] == [32, 32]
    big = tmp_path / "big.png"
    r = CliRunner().invoke(app, ["render", str(out / "checkpoint.pt"), "--scale", "2",
                                 "--output", str(big)])
    assert r.exit_code == 0, r.output
    from fields.data.images import read_image

    assert read_image(big).shape == (64, 64, 1)


@needs_ext
def test_cli_default_output_folder_and_old_spellings(tmp_path, monkeypatch):
    # outputs/<input>/inr/<timestamp>/ (no overwriting of a previous run's folder); the old
    # --seconds / --max-steps / --out still work, each printing one deprecation line
    from fields import command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(command, "_warned", set())
    r = _fit(["image", "--builtin", "camera", "--size", "16", "--model", "siren",
              "--seconds", "30", "--max-steps", "5"])
    text = " ".join(r.output.split())
    assert "deprecated: --seconds is now --max-seconds" in text
    assert "deprecated: --max-steps is now --steps" in text
    (run,) = (tmp_path / "outputs" / "camera" / "inr").iterdir()
    assert run.name[:4].isdigit() and (run / "checkpoint.pt").is_file()
    m = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    assert m["steps"] == 5 and cfg["max_seconds"] == 30
    r = _fit(["image", "--builtin", "camera", "--size", "16", "--model", "siren",
              "--steps", "2", "--out", str(tmp_path / "old")])
    assert "deprecated: --out is now --output" in " ".join(r.output.split())
    assert (tmp_path / "old" / "metrics.json").is_file()


@needs_ext
def test_cli_config_json_inline_and_file(tmp_path):
    base = ["image", "--builtin", "camera", "--size", "16", "--steps", "3"]
    _fit([*base, "--config", '{"model": "siren", "lr": 0.004, "batch": -1}',
          "--output", str(tmp_path / "a")])
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())["config"]
    assert cfg["model"] == "siren" and cfg["lr"] == 0.004 and cfg["batch"] == -1
    (tmp_path / "c.json").write_text(json.dumps({"model": "siren", "lr": 0.004}))
    # a shorthand flag given on the command line wins over --config
    _fit([*base, "--config", str(tmp_path / "c.json"), "--lr", "0.003",
          "--output", str(tmp_path / "b")])
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert cfg["model"] == "siren" and cfg["lr"] == 0.003
    (tmp_path / "bad.json").write_text(json.dumps({"modle": "siren"}))
    r = CliRunner().invoke(app, ["fit", *base, "--config", str(tmp_path / "bad.json")])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "bad.json: unknown key 'modle'" in text
    assert "did you mean 'model'" in text


@needs_ext
def test_cli_resume_continues_steps_and_time(tmp_path):
    base = ["image", "--builtin", "camera", "--size", "16", "--model", "hash"]
    _fit([*base, "--max-seconds", "2", "--output", str(tmp_path / "a")])
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    _fit([*base, "--max-seconds", "4", "--resume", str(tmp_path / "a" / "checkpoint.pt"),
          "--output", str(tmp_path / "b")])
    second = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert second["steps"] > first["steps"] > 0
    assert second["seconds"] >= 4.0 > first["seconds"] >= 2.0
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["resume"] == str(tmp_path / "a" / "checkpoint.pt")
    r = CliRunner().invoke(app, ["fit", *base, "--resume", str(tmp_path / "nope.pt")])
    assert r.exit_code == 2 and "no such checkpoint" in " ".join(r.output.split())


@needs_ext
def test_cli_ctrl_c_writes_the_checkpoint_and_says_where(tmp_path, monkeypatch):
    from fields.inr import SignalTask

    step = SignalTask.train_step

    def interrupted(self, i, progress):
        if i == 3:
            raise KeyboardInterrupt
        return step(self, i, progress)

    monkeypatch.setattr(SignalTask, "train_step", interrupted)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["fit", "image", "--builtin", "camera", "--size", "16",
                                 "--model", "siren", "--output", str(out)])
    assert r.exit_code == 130, r.output
    squeezed = "".join(r.output.split())  # rich may wrap the line anywhere
    assert f"interrupted:checkpointwrittento{out / 'checkpoint.pt'}" in squeezed
    from fields.checkpoint import read_checkpoint

    assert read_checkpoint(out / "checkpoint.pt")["train_state"]["step"] == 3
    load_inr(out / "checkpoint.pt")  # an INR checkpoint: render / eval / resume read it


@needs_ext
def test_cli_eval_image_and_audio(tmp_path):
    from fields.data.images import write_image

    out = tmp_path / "im"
    _fit(["image", "--builtin", "camera", "--size", "24", "--model", "hash", "--steps", "15",
          "--output", str(out)])
    fitted = json.loads((out / "metrics.json").read_text())
    r = CliRunner().invoke(app, ["eval", str(out / "checkpoint.pt")])
    assert r.exit_code == 0, r.output
    ev = json.loads((out / "eval.json").read_text())
    assert ev["kind"] == "inr" and ev["signal"] == "image" and ev["source"] == "camera"
    assert ev["psnr"] == pytest.approx(fitted["psnr"]) and ev["ssim"] == pytest.approx(
        fitted["ssim"])
    # against a file: the field rendered at that file's resolution
    write_image(tmp_path / "big.png", builtin_image("camera", 48))
    r = CliRunner().invoke(app, ["eval", str(out / "checkpoint.pt"), "--data",
                                 str(tmp_path / "big.png"), "--output", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["height"] == 48 and 10 < ev["psnr"] < fitted["psnr"] + 5
    # a file of the wrong kind, and a checkpoint without its config.json: named errors
    write_image(tmp_path / "rgb.png", torch.rand(8, 8, 3))
    r = CliRunner().invoke(app, ["eval", str(out / "checkpoint.pt"), "--data",
                                 str(tmp_path / "rgb.png")])
    assert r.exit_code == 2 and "rgb.png" in r.output and "3 channel(s)" in r.output
    (out / "config.json").unlink()
    r = CliRunner().invoke(app, ["eval", str(out / "checkpoint.pt")])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "config.json: no field 'source'" in text and "--data" in text

    write_audio(tmp_path / "a.wav", synthetic_audio(0.1, 8000), 8000)
    _fit(["audio", str(tmp_path / "a.wav"), "--steps", "10", "--output", str(tmp_path / "au")])
    fitted = json.loads((tmp_path / "au" / "metrics.json").read_text())
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "au" / "checkpoint.pt")])
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "au" / "eval.json").read_text())
    assert ev["signal"] == "audio" and ev["samples"] == 800 and ev["rate"] == 8000
    assert ev["psnr"] == pytest.approx(fitted["psnr"]) and "snr_db" in ev
    # the built-in synthetic audio is regenerated from config.json
    _fit(["audio", "--steps", "2", "--output", str(tmp_path / "syn")])
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "syn" / "checkpoint.pt")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "syn" / "eval.json").read_text())["source"] == "synthetic"


@needs_ext
def test_cli_image_tasks(tmp_path):
    base = ["image", "--builtin", "camera", "--size", "32", "--model", "hash",
            "--max-seconds", "30", "--steps", "20"]
    _fit([*base, "--noise", "0.1", "--output", str(tmp_path / "d")])
    m = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert m["noise"] == 0.1 and "psnr_noisy_input" in m
    _fit([*base, "--keep", "0.3", "--output", str(tmp_path / "i")])
    assert "psnr_missing_pixels" in json.loads((tmp_path / "i" / "metrics.json").read_text())
    _fit([*base, "--downsample", "2", "--output", str(tmp_path / "s")])
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert m["height"] == 32 and "psnr_bicubic" in m
    assert json.loads((tmp_path / "s" / "config.json").read_text())["downsample"] == 2
    bad = CliRunner().invoke(app, ["fit", *base, "--model", "nope"])
    assert bad.exit_code == 2 and "unknown INR model 'nope'" in " ".join(bad.output.split())


@needs_ext
def test_cli_fit_audio_and_volume(tmp_path):
    write_audio(tmp_path / "a.wav", synthetic_audio(0.1, 8000), 8000)
    _fit(["audio", str(tmp_path / "a.wav"), "--max-seconds", "30", "--steps", "10",
          "--output", str(tmp_path / "au")])
    back, rate = read_audio(tmp_path / "au" / "reconstruction.wav")
    assert rate == 8000 and back.shape == (800, 1)
    assert (tmp_path / "au" / "waveform.png").is_file()
    m = json.loads((tmp_path / "au" / "metrics.json").read_text())
    assert m["model"] == "siren" and "snr_db" in m and m["steps"] == 10
    np.save(tmp_path / "v.npy", np.random.default_rng(1).random((8, 9, 10)))
    _fit(["volume", str(tmp_path / "v.npy"), "--max-seconds", "30", "--steps", "5",
          "--output", str(tmp_path / "vo")])
    assert np.load(tmp_path / "vo" / "reconstruction.npy").shape == (8, 9, 10, 1)
    assert (tmp_path / "vo" / "slices.png").is_file()
    assert json.loads((tmp_path / "vo" / "config.json").read_text())["source"]["file"] == str(
        tmp_path / "v.npy")
    r = CliRunner().invoke(app, ["render", str(tmp_path / "vo" / "checkpoint.pt"), "--scale",
                                 "2", "--output", str(tmp_path / "big.npy")])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "big.npy").shape == (16, 18, 20, 1)


@needs_ext
def test_cli_fit_video_folder(tmp_path):
    from fields.data.images import write_image

    frames = tmp_path / "frames"
    for k in range(4):
        write_image(frames / f"{k:02d}.png", torch.full((8, 10, 3), 0.2 + 0.15 * k))
    _fit(["video", str(frames), "--max-seconds", "30", "--steps", "15",
          "--output", str(tmp_path / "v")])
    m = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert m["frames"] == 4 and m["height"] == 8 and m["width"] == 10 and m["steps"] == 15
    assert (tmp_path / "v" / "frame_002.png").is_file()
    r = CliRunner().invoke(app, ["fit", "video", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such video" in " ".join(r.output.split())


@needs_ext
def test_cli_bench_inr(tmp_path):
    r = CliRunner().invoke(app, ["bench", "inr", "--size", "24", "--seconds", "0.5",
                                 "--model", "siren", "--model", "hash", "--out",
                                 str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert [row["model"] for row in rows] == ["siren", "hash"]
    assert (tmp_path / "psnr_vs_time.png").stat().st_size > 5000
