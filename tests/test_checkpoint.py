"""Tests for crossjax.checkpoint: round trip, preservation, resharding, damage, lock."""

import glob
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from crossjax.checkpoint import Checkpoints, WorkdirLock
from crossjax.errors import CrossjaxError

CONFIG = {"model": "mlp", "lr": 1e-3, "losses": [["cross_entropy", 1.0]]}


def make_state(seed: int = 0) -> dict:
    """A small train state: params, an Adam state and an int32 step."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"dense": {"w": jax.random.normal(k1, (4, 3)), "b": jax.random.normal(k2, (3,))}}
    return {"params": params, "opt": optax.adam(1e-3).init(params), "step": jnp.int32(seed)}


def abstract(state):
    """ShapeDtypeStructs with the arrays' shardings: the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def save_steps(ckpt: Checkpoints, steps, metrics=None) -> None:
    for s in steps:
        m = metrics(s) if metrics else None
        ckpt.save(s, state=make_state(s), data_state={"pos": s}, config=CONFIG, metrics=m)
    ckpt.wait_until_finished()


def test_round_trip(tmp_path):
    state = make_state(3)
    with Checkpoints(tmp_path, save_every=1) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(3, state=state, data_state={"epoch": 1, "index": 7}, config=CONFIG)
        ckpt.wait_until_finished()
        assert ckpt.steps() == [3]
    with Checkpoints(tmp_path, save_every=1) as ckpt:  # a fresh process-like reader
        restored = ckpt.restore(abstract(state))
        assert restored.step == 3
        chex.assert_trees_all_equal(restored.state, state)
        assert restored.data_state == {"epoch": 1, "index": 7}
        assert restored.config == CONFIG
        assert ckpt.read_config() == CONFIG
        assert ckpt.restore(abstract(state), step=3).step == 3


def test_replicated_arrays_are_saved_whole_on_cpu(tmp_path, caplog):
    """No per-device slice program is compiled to save an array replicated on 8 devices
    (Orbax's replica-parallel saving, which only costs compiles on CPU)."""
    replicated = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec())
    state = {"w": jax.device_put(jnp.arange(120.0).reshape(40, 3), replicated)}
    caplog.set_level(logging.WARNING)  # where jax.log_compiles reports
    with jax.log_compiles(True), Checkpoints(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, state=state, data_state={}, config=CONFIG)
        ckpt.wait_until_finished()
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not [m for m in compiled if "slice" in m], compiled
    with Checkpoints(tmp_path, save_every=1) as ckpt:
        chex.assert_trees_all_equal(ckpt.restore(abstract(state)).state, state)


def test_save_decision(tmp_path):
    with Checkpoints(tmp_path, save_every=5) as ckpt:
        assert ckpt.should_save(10) and not ckpt.should_save(7)
        kwargs = {"state": make_state(), "data_state": {}, "config": CONFIG}
        assert not ckpt.save(7, **kwargs)
        assert ckpt.save(10, **kwargs)
        assert ckpt.save(12, force=True, **kwargs)  # e.g. final step or SIGTERM
        assert not ckpt.save(12, force=True, **kwargs)  # already saved: no error
        ckpt.wait_until_finished()
        assert ckpt.steps() == [10, 12]
        with pytest.raises(CrossjaxError, match="newer checkpoints"):
            ckpt.save(11, force=True, **kwargs)
        with pytest.raises(CrossjaxError, match="JSON"):
            ckpt.save(15, state=make_state(), data_state={"x": object()}, config=CONFIG)


def test_keeps_latest_and_best(tmp_path):
    # Step 2 is best; steps 3 and 4 have no eval metrics at all.
    accuracy = {1: 0.5, 2: 0.9, 5: 0.6, 6: 0.7}
    with Checkpoints(tmp_path, save_every=1, keep=2, best_metric="accuracy") as ckpt:
        save_steps(
            ckpt, range(1, 7), lambda s: {"accuracy": accuracy[s]} if s in accuracy else None
        )
        assert ckpt.steps() == [2, 5, 6]
        assert ckpt.restore(abstract(make_state()), step="best").step == 2
    # The policy survives a restart (metrics are read back from disk).
    with Checkpoints(tmp_path, save_every=1, keep=2, best_metric="accuracy") as ckpt:
        save_steps(ckpt, [7, 8])
        assert ckpt.steps() == [2, 7, 8]
        restored = ckpt.restore(abstract(make_state()), step="best")
        assert restored.step == 2
        chex.assert_trees_all_equal(restored.state, make_state(2))


def test_best_min_mode_and_saves_without_metrics(tmp_path):
    with Checkpoints(tmp_path, save_every=1, keep=1, best_metric="loss", best_mode="min") as ckpt:
        save_steps(ckpt, [1, 2, 3])  # no metrics: only the latest is kept
        assert ckpt.steps() == [3]
        with pytest.raises(CrossjaxError, match="has metric 'loss'"):
            ckpt.restore(abstract(make_state()), step="best")
        losses = {4: 0.3, 5: 0.1, 6: float("nan"), 7: 0.2}
        save_steps(ckpt, [4, 5, 6, 7, 8], lambda s: {"loss": losses[s]} if s in losses else {})
        assert ckpt.steps() == [5, 8]
        assert ckpt.restore(abstract(make_state()), step="best").step == 5


def test_best_needs_best_metric(tmp_path):
    with Checkpoints(tmp_path, save_every=1) as ckpt:
        save_steps(ckpt, [1], lambda s: {"accuracy": 1.0})
        with pytest.raises(CrossjaxError, match="best_metric"):
            ckpt.restore(abstract(make_state()), step="best")


def test_restore_to_other_sharding(tmp_path):
    devices = jax.devices()
    assert len(devices) >= 8, "tests/conftest.py must provide 8 fake CPU devices"
    mesh4 = Mesh(np.array(devices[:4]), ("data",))
    mesh8 = Mesh(np.array(devices[:8]), ("data",))
    mesh2x4 = Mesh(np.array(devices[:8]).reshape(2, 4), ("model", "data"))
    x = np.arange(64, dtype=np.float32).reshape(16, 4)
    state = {"x": jax.device_put(x, NamedSharding(mesh4, PartitionSpec("data")))}
    with Checkpoints(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, state=state, data_state={}, config=CONFIG)
    with Checkpoints(tmp_path, save_every=1) as ckpt:
        for sharding in (
            NamedSharding(mesh8, PartitionSpec("data")),
            NamedSharding(mesh2x4, PartitionSpec("data", "model")),
            SingleDeviceSharding(devices[5]),
        ):
            target = {"x": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)}
            restored = ckpt.restore(target).state["x"]
            assert restored.sharding == sharding
            np.testing.assert_array_equal(np.asarray(restored), x)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A run directory with complete checkpoints at steps 2 and 4."""
    directory = tmp_path_factory.mktemp("saved") / "checkpoints"
    with Checkpoints(directory, save_every=2) as ckpt:
        save_steps(ckpt, [2, 4])
    return directory


def _state_files(step_dir):
    return sorted(glob.glob(os.path.join(step_dir, "state", "d", "*")))


def _delete_state_data(step_dir):
    for f in _state_files(step_dir):
        os.remove(f)


def _delete_manifest(step_dir):
    os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))


def _delete_state_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _truncate_state_data(step_dir):
    for f in _state_files(step_dir):
        os.truncate(f, os.path.getsize(f) // 2)


def _garble_state_data(step_dir):
    for f in _state_files(step_dir):
        size = os.path.getsize(f)
        with open(f, "r+b") as fh:
            fh.seek(size // 3)
            fh.write(b"\xa5" * (size - size // 3))


def _garble_data_json(step_dir):
    with open(os.path.join(step_dir, "data", "metadata"), "w") as fh:
        fh.write('{"pos": ')


@pytest.mark.parametrize(
    "damage",
    [
        _delete_state_data,
        _delete_manifest,
        _delete_state_metadata,
        _truncate_state_data,
        _garble_state_data,
        _garble_data_json,
    ],
)
def test_damaged_latest_falls_back(saved_run, tmp_path, caplog, damage):
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved_run, directory)
    assert _state_files(directory / "4"), "expected OCDBT data files under state/d"
    damage(str(directory / "4"))
    with Checkpoints(directory, save_every=2) as ckpt:
        with caplog.at_level(logging.WARNING, logger="crossjax.checkpoint"):
            restored = ckpt.restore(abstract(make_state()))
        assert restored.step == 2
        chex.assert_trees_all_equal(restored.state, make_state(2))
        assert restored.data_state == {"pos": 2} and restored.config == CONFIG
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("step 4" in w and "falling back" in w for w in warnings), warnings
        # The resumed run saves step 4 again: the damaged one is replaced, not a blocker.
        assert ckpt.save(4, state=make_state(40), data_state={"pos": 40}, config=CONFIG)
        ckpt.wait_until_finished()
        assert ckpt.steps() == [2, 4]
        assert ckpt.restore(abstract(make_state())).data_state == {"pos": 40}


def test_partial_save_is_ignored(saved_run, tmp_path):
    """An interrupted async save leaves `<step>.orbax-checkpoint-tmp`: never listed."""
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved_run, directory)
    partial = directory / "6.orbax-checkpoint-tmp"
    shutil.copytree(directory / "4", partial)
    _delete_state_data(str(partial))
    with Checkpoints(directory, save_every=2) as ckpt:
        assert ckpt.latest_step() == 4
        assert ckpt.restore(abstract(make_state())).step == 4
        assert ckpt.save(6, state=make_state(6), data_state={"pos": 6}, config=CONFIG)
        ckpt.wait_until_finished()
        assert ckpt.restore(abstract(make_state())).data_state == {"pos": 6}


def test_unreadable_metrics_do_not_block_opening(tmp_path):
    with Checkpoints(tmp_path, save_every=1, best_metric="accuracy") as ckpt:
        save_steps(ckpt, [1, 2], lambda s: {"accuracy": float(s)})
    with open(tmp_path / "2" / "metrics" / "metrics", "w") as fh:
        fh.write("{trunc")
    with open(tmp_path / "2" / "_CHECKPOINT_METADATA", "w") as fh:
        fh.write("garbage")
    with Checkpoints(tmp_path, save_every=1, best_metric="accuracy") as ckpt:
        assert ckpt.steps() == [1, 2]
        assert ckpt.restore(abstract(make_state())).step == 2
        assert ckpt.restore(abstract(make_state()), step="best").step == 1


def test_nothing_restorable(saved_run, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved_run, directory)
    for step in ("2", "4"):
        _garble_data_json(str(directory / step))
    with Checkpoints(directory, save_every=2) as ckpt:
        with pytest.raises(CrossjaxError, match=f"no checkpoint in {directory} could be restored"):
            ckpt.restore(abstract(make_state()))
        with pytest.raises(CrossjaxError, match="step 2 .* cannot be restored"):
            ckpt.restore(abstract(make_state()), step=2)  # an explicit step never falls back


def test_unknown_step_lists_available(saved_run):
    with Checkpoints(saved_run, save_every=2) as ckpt:
        with pytest.raises(CrossjaxError, match=r"available steps: \[2, 4\]"):
            ckpt.restore(abstract(make_state()), step=3)
        with pytest.raises(CrossjaxError, match="'latest' or 'best'"):
            ckpt.read_config("newest")


def test_empty_directory(tmp_path):
    with Checkpoints(tmp_path / "checkpoints", save_every=1) as ckpt:
        assert ckpt.steps() == [] and ckpt.latest_step() is None
        with pytest.raises(CrossjaxError, match="no checkpoint in"):
            ckpt.restore(abstract(make_state()))
        with pytest.raises(CrossjaxError, match="no checkpoint in"):
            ckpt.read_config()


def test_workdir_lock(tmp_path):
    with WorkdirLock(tmp_path) as lock:
        with pytest.raises(CrossjaxError, match=rf"in use by a live run \(pid {os.getpid()}\)"):
            with WorkdirLock(tmp_path):
                pass
        assert lock.path == os.path.join(tmp_path, ".lock")
    with WorkdirLock(tmp_path):  # released: free again
        pass


def test_workdir_lock_dies_with_holder(tmp_path):
    """A killed holder's lock is released by the OS; a live one blocks another process."""
    script = textwrap.dedent(
        f"""
        import fcntl, os, time
        fd = os.open({str(tmp_path / ".lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, str(os.getpid()).encode())
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(CrossjaxError, match=rf"pid {holder.pid}\)"):
                with WorkdirLock(tmp_path):
                    pass
        finally:
            holder.kill()
    with WorkdirLock(tmp_path):
        pass
