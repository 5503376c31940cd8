"""The kind registry, the one command-line grammar and `fields eval`."""

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fields import command
from fields.checkpoint import read_checkpoint, save_checkpoint
from fields.cli import app
from fields.kinds import (
    KIND_MODULES,
    Kind,
    checkpoint_kind,
    get_kind,
    kind_names,
    load_field,
)

FIT_COMMANDS = [["fit", k] for k in ("nerf", "sdf", "neus", "image", "audio", "volume", "video",
                                     "dynamic",
                                     "flow")] + [["solve"]]
COMMON = ("--output", "--max-seconds", "--steps", "--seed", "--config", "--resume", "--threads")


def test_every_registered_kind_loads_and_names_itself():
    assert kind_names() == ["nerf", "sdf", "inr", "flow", "pinn", "dynamic"]
    for name in KIND_MODULES:
        kind = get_kind(name)
        assert isinstance(kind, Kind) and kind.name == name and kind.summary
        assert callable(kind.evaluate) and callable(kind.view) and callable(kind.register_cli)
        assert callable(kind.load)
    assert get_kind("nerf").export is not None and get_kind("sdf").export is not None
    assert get_kind("inr").export is None and get_kind("flow").render is None
    with pytest.raises(ValueError, match="unknown field kind 'mystery'; known kinds: nerf"):
        get_kind("mystery")


def test_checkpoint_kind_names_the_file_and_field(tmp_path):
    save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(2, 2), extra={"kind": "mystery"})
    with pytest.raises(ValueError, match=r"m\.pt: field 'kind' is 'mystery'; expected one of"):
        checkpoint_kind(tmp_path / "m.pt")
    save_checkpoint(tmp_path / "s.pt", torch.nn.Linear(2, 2), extra={"kind": "sdf"})
    assert checkpoint_kind(tmp_path / "s.pt").name == "sdf"
    res = CliRunner().invoke(app, ["render", str(tmp_path / "m.pt")])
    assert res.exit_code == 2 and "field 'kind' is 'mystery'" in res.output
    res = CliRunner().invoke(app, ["export", "mesh", str(tmp_path / "nothing.pt")])
    assert res.exit_code == 2 and "no such checkpoint" in res.output


@pytest.mark.parametrize("cmd", FIT_COMMANDS, ids=lambda c: " ".join(c))
def test_every_fit_command_takes_the_common_options(cmd):
    res = CliRunner().invoke(app, [*cmd, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", res.output)
    missing = [o for o in COMMON if o not in text]
    assert not missing, f"fields {' '.join(cmd)} lacks {missing}"


def test_parse_config_inline_file_and_errors(tmp_path):
    assert command.parse_config(None, "X") == {}
    assert command.parse_config('{"lr": 0.5}', "X") == {"lr": 0.5}
    f = tmp_path / "c.json"
    f.write_text('{"steps": 3}')
    assert command.parse_config(str(f), "X") == {"steps": 3}
    f.write_text("{oops")
    with pytest.raises(ValueError, match=r"c\.json: not valid JSON"):
        command.parse_config(str(f), "X")
    f.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"c\.json: expected a JSON object of X fields, got list"):
        command.parse_config(str(f), "X")
    with pytest.raises(ValueError, match="no such file"):
        command.parse_config(str(tmp_path / "missing.json"), "X")
    with pytest.raises(ValueError, match="--config: not valid JSON"):
        command.parse_config("{1: 2}", "X")


def test_run_folder_and_options(tmp_path):
    assert command.run_folder(str(tmp_path / "x"), "a", "nerf") == tmp_path / "x"
    p = command.run_folder(None, "my scene/[1]", "sdf")
    assert p.parts[:3] == ("outputs", "my_scene__1_", "sdf")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d{6}", p.parts[3])
    monkey = tmp_path / "cwd"
    monkey.mkdir()
    import os

    old = os.getcwd()
    os.chdir(monkey)
    try:
        first = command.run_folder(None, "scene", "nerf")
        first.mkdir(parents=True)
        second = command.run_folder(None, "scene", "nerf")  # the same second: a new folder
        assert second != first and second.parent == first.parent
    finally:
        os.chdir(old)
    opts = command.RunOptions(None, 10.0, 5)
    opts.check()
    for bad in (command.RunOptions(None, 10.0, 0), command.RunOptions(None, float("nan"), 5),
                command.RunOptions(None, 1.0, 5, resume=str(tmp_path / "nope.pt"))):
        with pytest.raises(ValueError):
            bad.check()
    assert command.DEFAULT_SEED == 0


def test_alias_prints_one_deprecation_line(capsys):
    command._warned.discard("--old-spelling")
    assert command.alias(1, None, "--old-spelling", "--new") == 1
    assert command.alias(1, 7, "--old-spelling", "--new") == 7
    assert command.alias(1, 8, "--old-spelling", "--new") == 8
    out = capsys.readouterr().out
    assert out.count("--old-spelling is now --new") == 1


def test_errors_are_plain_text_never_markup(capsys):
    exc = command.error("expected [, ] with max > min in [/y]/file.json")
    out = capsys.readouterr().out
    assert "expected [, ] with max > min in [/y]/file.json" in out and exc.exit_code == 2


def test_write_json_is_strict(tmp_path):
    from fields.io import write_json

    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.5],
                                     "c": torch.tensor(2.0), "d": (1, 2)})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": 2.0, "d": [1, 2]}
    assert "NaN" not in text and "Infinity" not in text


def test_fit_sdf_common_files_resume_and_eval(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    cfg = tmp_path / "sdf.json"
    cfg.write_text(json.dumps({"finest_resolution": 64, "log2_hashmap_size": 12, "n_levels": 6,
                               "batch_near": 2048, "batch_uniform": 512}))
    res = runner.invoke(app, ["fit", "sdf", "--shape", "sphere", "--steps", "40", "--seed", "3",
                              "--resolution", "40", "--eval-every", "0", "--config", str(cfg),
                              "--output", str(out), "--max-seconds", "60"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "sdf" and config["input"] == "sphere"
    assert config["steps"] == 40 and config["seed"] == 3 and config["max_seconds"] == 60
    assert config["config"]["finest_resolution"] == 64  # the resolved config, from the file
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:3] == ["steps", "seconds", "wall_seconds"]
    assert metrics["steps"] == 40 and metrics["wall_seconds"] >= metrics["seconds"] > 0
    # resume continues the step count
    res = runner.invoke(app, ["fit", "sdf", "--shape", "sphere", "--steps", "50", "--seed", "3",
                              "--resolution", "40", "--eval-every", "0", "--config", str(cfg),
                              "--output", str(tmp_path / "run2"),
                              "--resume", str(out / "checkpoint.pt")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run2" / "metrics.json").read_text())["steps"] == 50
    # eval: the same surface metrics from the checkpoint alone
    res = runner.invoke(app, ["eval", str(out / "checkpoint.pt")])
    assert res.exit_code == 0, res.output
    ev = json.loads((out / "eval.json").read_text())
    assert ev["kind"] == "sdf" and ev["truth"] == "built-in shape sphere"
    assert ev["chamfer_l1"] == pytest.approx(metrics["chamfer_l1"], rel=0.2)
    # the field itself, through the registry: inside the sphere is negative, far out positive
    field = load_field(out / "checkpoint.pt")
    with torch.no_grad():
        d = field(torch.tensor([[0.0, 0.0, 0.0], [0.95, 0.95, 0.95]]))
    assert d.shape == (2,) and d[0] < 0 < d[1]
    # a capture transform in the checkpoint (NeuS on a processed capture): the mesh goes back
    # into the capture's coordinates; --normalised keeps the scene's
    from fields.mesh import load_mesh

    payload = read_checkpoint(out / "checkpoint.pt")
    payload["sdf"] = {**payload["sdf"], "transform": {
        "rotation": [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        "centre": [1.0, 2.0, 3.0], "scale": 0.5}}
    torch.save(payload, tmp_path / "cap.pt")
    for name, extra in (("m.ply", []), ("n.ply", ["--normalised"])):
        res = runner.invoke(app, ["export", "mesh", str(tmp_path / "cap.pt"), "--resolution",
                                  "24", "--output", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
    m, n = load_mesh(tmp_path / "m.ply")[0], load_mesh(tmp_path / "n.ply")[0]
    r = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(0.5 * (m - [1.0, 2.0, 3.0]) @ r.T, n, atol=1e-4)
    # a missing resume checkpoint is refused before anything runs
    res = runner.invoke(app, ["fit", "sdf", "--resume", str(tmp_path / "nope.pt")])
    assert res.exit_code == 2 and "nope.pt: no such checkpoint" in res.output
    # an SDF has a mesh to export, no cameras: said, with what it has
    res = runner.invoke(app, ["export", "cameras", str(out / "checkpoint.pt")])
    assert res.exit_code == 2 and "a sdf checkpoint has no cameras to export (it exports: " \
        "mesh)" in res.output


def test_eval_nerf_with_data_and_old_spellings(tiny_nerf, tiny_scene_dir, tmp_path):
    runner = CliRunner()
    target = tmp_path / "e.json"
    res = runner.invoke(app, ["eval", str(tiny_nerf), "--data", str(tiny_scene_dir),
                              "--output", str(target)])
    assert res.exit_code == 0, res.output
    ev = json.loads(target.read_text())
    assert ev["kind"] == "nerf" and ev["views"] == 2 and 5 < ev["psnr"] < 60
    assert len(ev["psnr_per_view"]) == 2 and 0 < ev["ssim"] <= 1
    nerf = load_field(tiny_nerf)
    assert nerf.info["config"] == nerf.config.to_dict() and not nerf.model.training
    # render's old --out still works and says it is now --output
    command._warned.discard("--out")
    res = runner.invoke(app, ["render", str(tiny_nerf), "--frames", "2", "--scale", "0.5",
                              "--out", str(tmp_path / "v.gif")])
    assert res.exit_code == 0, res.output
    assert "--out is now --output" in res.output and (tmp_path / "v.gif").stat().st_size > 0
    # export honours the suffix of --output
    res = runner.invoke(app, ["export", "mesh", str(tiny_nerf), "--resolution", "24",
                              "--output", str(tmp_path / "m.obj")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m.obj").read_text().lstrip().startswith(("v ", "#", "o ", "mtllib"))


def _with_transform(src, dst, transform):
    payload = read_checkpoint(src)
    payload["nerf"] = {**payload["nerf"], "transform": transform}
    torch.save(payload, dst)


def test_nerf_exports_cameras_points_and_meshes_in_the_capture_coordinates(
        tiny_nerf, tiny_scene_dir, tmp_path):
    """Issue 22: exports of a field fitted to a processed capture go back into the capture's
    own coordinates (the transform kept in the checkpoint); --normalised keeps the scene's."""
    from fields.data import load_scene
    from fields.data.pointclouds import read_points
    from fields.mesh import load_mesh

    runner = CliRunner()
    truth = load_scene(tiny_scene_dir).train.cameras.c2w.double().numpy()
    res = runner.invoke(app, ["export", "cameras", str(tiny_nerf), "--output",
                              str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    cams = json.loads((tmp_path / "c.json").read_text())
    assert cams["coordinates"] == "scene" and len(cams["cameras"]) == len(truth)
    np.testing.assert_allclose([c["c2w"] for c in cams["cameras"]], truth, atol=1e-6)
    # a capture transform: x_scene = s R (x_capture - c)
    a = 0.7
    r = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    t = {"rotation": r.tolist(), "centre": [3.0, -2.0, 1.0], "scale": 0.25}
    cap = tmp_path / "capture.pt"
    _with_transform(tiny_nerf, cap, t)
    res = runner.invoke(app, ["export", "cameras", str(cap), "--output", str(tmp_path / "k.json")])
    assert res.exit_code == 0, res.output
    back = np.asarray([c["c2w"] for c in json.loads((tmp_path / "k.json").read_text())["cameras"]])
    np.testing.assert_allclose(0.25 * (back[:, :, 3] - [3.0, -2.0, 1.0]) @ r.T, truth[:, :, 3],
                               atol=1e-5)
    np.testing.assert_allclose(r @ back[:, :, :3], truth[:, :, :3], atol=1e-6)
    res = runner.invoke(app, ["export", "cameras", str(cap), "--output", str(tmp_path / "k.ply")])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(read_points(tmp_path / "k.ply"), back[:, :, 3], atol=1e-4)
    # meshes: the default is the normalised mesh mapped back
    for name, extra in (("m.ply", []), ("n.ply", ["--normalised"])):
        res = runner.invoke(app, ["export", "mesh", str(cap), "--resolution", "24",
                                  "--threshold", "1", "--output", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
    m, n = load_mesh(tmp_path / "m.ply")[0], load_mesh(tmp_path / "n.ply")[0]
    np.testing.assert_allclose(0.25 * (m - [3.0, -2.0, 1.0]) @ r.T, n, atol=1e-4)
    # points: each training view's opaque pixels at their depth, coloured, inside the box
    res = runner.invoke(app, ["export", "pointcloud", str(tiny_nerf), "--output",
                              str(tmp_path / "p.ply")])
    assert res.exit_code == 0, res.output
    pts, fields = read_points(tmp_path / "p.ply", with_fields=True)
    assert (len(pts) > 100 and "colors" in fields) or {"red", "green", "blue"} <= set(fields)
    assert (np.abs(pts) <= 1.0 + 1e-3).all()
    res = runner.invoke(app, ["export", "bogus", str(tiny_nerf)])
    assert res.exit_code != 0


def test_readme_layout_names_paths_that_exist():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    paths = re.findall(r"^\| `([^`]+)`", layout, flags=re.M)
    assert len(paths) > 10
    for p in paths:
        assert (root / p).exists(), f"README layout names {p}, which does not exist"
    for folder in sorted(d.name for d in (root / "fields").iterdir()
                         if d.is_dir() and (d / "__init__.py").exists()):
        assert folder in layout, f"README layout does not mention fields/{folder}/"
