import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# -- a small NeRF checkpoint, shared by the viewer's tests --


@pytest.fixture(scope="session")
def tiny_scene_dir(tmp_path_factory):
    from fields.scenes.tabletop import SceneSpec, ensure_scene

    return ensure_scene(SceneSpec(resolution=32, n_train=24, n_val=2, n_test=2),
                        root=tmp_path_factory.mktemp("scenes"))


def tiny_config():
    from fields.nerf import NerfConfig
    from fields.nn.encoding_config import hash_grid_config

    return NerfConfig(encoding=hash_grid_config(finest_resolution=128, log2_hashmap_size=15),
                      grid_resolution=32, render_steps=128, target_samples=2**14,
                      initial_rays=1024, occupancy_warmup=32)


@pytest.fixture(scope="session")
def tiny_nerf(tmp_path_factory, tiny_scene_dir):
    """A NeRF checkpoint of the 32-pixel tabletop after a few seconds of training."""
    from fields.data import load_scene
    from fields.nerf import NerfTask
    from fields.train import TrainConfig, seed_everything, train

    root = tmp_path_factory.mktemp("viewer")
    scene = load_scene(tiny_scene_dir)
    seed_everything(0)
    task = NerfTask(scene, tiny_config(), seed=0)
    train(task, TrainConfig(steps=120, max_seconds=600, eval_every=0, checkpoint_every=0),
          checkpoint=root / "nerf.pt", checkpoint_extra=task.checkpoint_extra(),
          show_progress=False)
    return root / "nerf.pt"


@pytest.fixture(autouse=True)
def _fresh_warnings():
    """Each test sees the once-per-process warnings afresh (tests that expect one must not
    depend on which test ran first)."""
    from fields.nn.backend import forget_warnings

    forget_warnings()
    yield
