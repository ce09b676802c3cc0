"""Data-parallel training: real 2-process jobs on the CPU (gloo), through torchrun."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY
from safetensors import safe_open
from safetensors.torch import load_file

from imagegen.common.errors import UsageError, UserError
from imagegen.data.batches import EpochBatches
from imagegen.models.dcgan import DCGAN, DCGANConfig
from imagegen.storage import checkpoint
from imagegen.training import distributed
from imagegen.training.plan import TrainRequest, plan_training

pytestmark = pytest.mark.integration  # torchrun jobs of several processes

TRAIN = ["train", "dcgan", "--dataset", "synthetic", "--resolution", "32", "--batch-size", "8"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def torchrun(*args: str, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m imagegen ARGS`, as a user runs it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "imagegen", *map(str, args)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def imagegen(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "imagegen", *map(str, args)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)


def _ok(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _meta(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "latest.safetensors"))


def test_two_process_job_resumes_exactly_and_by_one_process(isolated: Path) -> None:
    """2 ranks: weights identical across ranks, one writer, exact resume, 1 <-> 2 processes."""
    common = [*TRAIN, *TINY, "--flip", "--log-every", "5", "--checkpoint-every", "100", "--json"]
    straight = _ok(torchrun(*common, "--steps", "80", "--run-dir", isolated / "straight", "-q"))
    assert straight["world_size"] == 2 and straight["step"] == 80
    # 80 steps of 2 x 8 images cross an epoch boundary of the 1024-image set (64 steps).
    _ok(torchrun(*common, "--steps", "40", "--run-dir", isolated / "split", "-q"))
    resumed = _ok(
        torchrun("train", "dcgan", "--resume", isolated / "split", "--steps", "80", "--json")
    )
    assert resumed["resumed_from"] == 40 and resumed["step"] == 80
    a, b = _tensors(isolated / "straight"), _tensors(isolated / "split")
    assert a.keys() == b.keys() and {"rng/noise", "rng/noise.1"} <= a.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []

    # Every rank's weights were hashed at the checkpoint: equal, and equal to the file's.
    latest = isolated / "straight" / "checkpoints" / "latest.safetensors"
    counters = json.loads(_meta(latest)["counters"])
    ckpt = checkpoint.read_checkpoint(latest)
    digests = counters["rank_weights_sha256"]
    assert counters["world_size"] == 2 and len(digests) == 2
    assert (
        digests[0]
        == digests[1]
        == distributed.weights_digest(checkpoint.build_model(ckpt, use_ema=False))
    )
    assert counters["images_seen"] == 80 * 16

    # Rank 0 alone wrote: one log line per log step, one config, the checkpoint layout of one.
    run = isolated / "straight"
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 81, 5))
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch_size"] == 16
    assert config["batches_per_epoch"] == 64
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest.safetensors",
        "step-0000080.safetensors",
    ]
    assert not any(k.startswith(("model/module.", "model/_orig_mod")) for k in a)

    # One process continues the 2-process run; a 2-process job continues a 1-process run.
    one = _ok(imagegen("train", "dcgan", "--resume", run, "--steps", "90", "--json", "-q"))
    assert one["world_size"] == 1 and one["resumed_from"] == 80 and one["step"] == 90
    _ok(imagegen(*TRAIN, *TINY, "--steps", "6", "--run-dir", isolated / "single", "--json"))
    proc = torchrun("train", "dcgan", "--resume", isolated / "single", "--steps", "12", "--json")
    assert _ok(proc)["world_size"] == 2
    assert "trained by 1 process(es), now 2" in proc.stderr


def _adapt_on_rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from imagegen.models import augment

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    logits = torch.full((8,), 1.0 if rank == 0 else -1.0)  # E[sign]: 1 on rank 0, -1 on rank 1
    logits[:3] = -logits[:3]  # rank 0: 0.25, rank 1: -0.25; over both: 0
    p = augment.adapt(torch.tensor(0.5), logits, -0.1)  # 0 > -0.1: up by 16 images' share
    torch.save(p, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_adaptive_augmentation_keeps_one_probability_across_ranks(isolated: Path) -> None:
    """Each rank sees its own batch; the sign statistic is averaged over all, so every rank
    moves p alike (here rank 1 alone would lower it), by the global batch's share."""
    import torch.multiprocessing as mp

    from imagegen.models import augment

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_adapt_on_rank, args=(port, str(isolated)), nprocs=2)
    p = [float(torch.load(isolated / f"{r}.pt")) for r in (0, 1)]
    assert p[0] == p[1] == pytest.approx(0.5 + 16 / augment.ADAPT_IMAGES)
    # Through torchrun: the adaptive run trains, and its p is state in the checkpoint; with
    # the R1 penalty (a double backward through D's wrapper) the ranks stay in sync.
    aug = ["--set", "augment=translation,cutout", "--set", "augment_target=0.1"]
    aug += ["--set", "r1_gamma=0.5"]
    run = isolated / "run"
    result = _ok(torchrun(*TRAIN, *TINY, *aug, "--steps", "6", "--run-dir", run, "--json", "-q"))
    assert float(_tensors(run)["model/augment_p"]) > 0 and result["losses"]["r1"] > 0
    latest = run / "checkpoints" / "latest.safetensors"
    digests = json.loads(_meta(latest)["counters"])["rank_weights_sha256"]
    model = checkpoint.build_model(checkpoint.read_checkpoint(latest), use_ema=False)
    assert digests == [distributed.weights_digest(model)] * 2


@pytest.mark.parametrize("model", ["vae", "vaegan"])
def test_autoencoders_train_in_sync(isolated: Path, model: str) -> None:
    tiny = ["--set", "width=8", "--set", "latent_dim=8"]
    tiny += ["--set", "d_width=8"] if model == "vaegan" else []
    run = isolated / model
    args = ["train", model, "--dataset", "synthetic", "--resolution", "32", "--batch-size", "8"]
    result = _ok(torchrun(*args, *tiny, "--steps", "6", "--run-dir", run, "--json", "-q"))
    assert result["world_size"] == 2 and result["step"] == 6
    latest = run / "checkpoints" / "latest.safetensors"
    digests = json.loads(_meta(latest)["counters"])["rank_weights_sha256"]
    model_ = checkpoint.build_model(checkpoint.read_checkpoint(latest), use_ema=False)
    assert digests == [distributed.weights_digest(model_)] * 2
    assert all(torch.isfinite(torch.tensor(v)) for v in result["losses"].values())


def test_fid_every_is_measured_once_by_rank_zero(isolated: Path, weights: Path) -> None:
    run = isolated / "run"
    args = [*TRAIN, *TINY, "--steps", "4", "--fid-every", "2", "--fid-n", "8", "--run-dir", run]
    assert _ok(torchrun(*args, "--json", "-q"))["step"] == 4
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    best = [r["step"] for r in records if r["best"]][-1]
    assert _meta(run / "checkpoints" / "best.safetensors")["step"] == str(best)


def test_interrupting_torchrun_checkpoints_every_rank_at_one_step(isolated: Path) -> None:
    run = isolated / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "imagegen", *TRAIN, *TINY, "--steps", "1000000", "--log-every", "2"]
    cmd += ["--fid-every", "0"]  # long only to be stopped: no automatic FID
    proc = subprocess.Popen(
        [*cmd, "--run-dir", str(run)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "log.jsonl").is_file():
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # torchrun passes it on to both workers
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    err = err.decode(errors="replace")
    assert "Interrupted at step" in err, err[-3000:]
    assert "lost contact" not in err
    ckpts = sorted((run / "checkpoints").glob("step-*.safetensors"))
    assert len(ckpts) == 1
    step = int(_meta(ckpts[0])["step"])
    assert step % 2 == 0 and f"Interrupted at step {step};" in err  # agreed at a log step
    resumed = _ok(torchrun("train", "dcgan", "--resume", run, "--steps", str(step + 4), "--json"))
    assert resumed["resumed_from"] == step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fault", ["dies", "hangs"])
def test_a_lost_rank_ends_the_job_with_a_clear_error(isolated: Path, fault: str) -> None:
    """Two ranks started by hand (no torchrun to clean up): rank 1 is killed or frozen."""
    run = isolated / "run"
    args = [*TRAIN, *TINY, "--steps", "1000000", "--log-every", "1", "--run-dir", run, "-q"]
    args += ["--fid-every", "0"]  # long only to be stopped: no automatic FID
    env = _env() | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    env |= {"WORLD_SIZE": "2"}
    cmd = [sys.executable, "-m", "imagegen", *map(str, args), "--dist-timeout", "4"]
    ranks = [
        subprocess.Popen(
            cmd,
            env=env | {"RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for r in range(2)
    ]
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(_lines(run / "log.jsonl")) < 3:
            time.sleep(0.2)
        assert len(_lines(run / "log.jsonl")) >= 3, ranks[0].communicate(timeout=5)
        ranks[1].send_signal(signal.SIGKILL if fault == "dies" else signal.SIGSTOP)
        started = time.time()
        _, err = ranks[0].communicate(timeout=60)
        waited = time.time() - started
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    err = err.decode(errors="replace")
    assert ranks[0].returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "rank 0: lost contact with the other processes at step" in lines[0]
    if fault == "hangs":
        assert "Timed out" in lines[0] and 3.5 < waited < 30
    else:
        assert waited < 10


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def test_context_from_environment() -> None:
    assert distributed.from_env(environ={}) == distributed.Context()
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}
    env |= {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    got = distributed.from_env(60, env)
    assert (got.rank, got.world_size, got.local_rank, got.timeout_s) == (3, 4, 1, 60)
    assert got.enabled and not got.is_main
    with pytest.raises(UserError, match="MASTER_ADDR and MASTER_PORT not set"):
        distributed.from_env(environ={"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(UserError, match="inconsistent"):
        distributed.from_env(environ=env | {"RANK": "4"})
    with pytest.raises(UserError, match="must be integers"):
        distributed.from_env(environ=env | {"RANK": "x"})
    with pytest.raises(UsageError, match="must be positive"):
        distributed.from_env(0, env)


def test_ranks_see_disjoint_shards_of_each_epoch() -> None:
    images = torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1)
    single = EpochBatches(images, 8, seed=5)
    ranks = [EpochBatches(images, 4, seed=5, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == 103 // 8 == single.batches_per_epoch
    for step in range(2 * single.batches_per_epoch):
        shards = [set(b.batch(step).flatten().tolist()) for b in ranks]
        assert not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(single.batch(step).flatten().tolist())
    epoch = [set(ranks[r].batch(s).flatten().tolist()) for r in range(2) for s in range(12)]
    assert len(set().union(*epoch)) == 96  # every image at most once per epoch
    with pytest.raises(UsageError, match="global batch 64 x 2 processes"):
        EpochBatches(images, 64, seed=0, rank=0, world_size=2)


def test_networks_are_called_through_their_wrappers() -> None:
    model = DCGAN(DCGANConfig(resolution=32, g_width=8, d_width=8, latent_dim=16))
    assert model.net("generator") is model.generator
    wrapper = torch.nn.Identity()
    model.set_wrappers({"generator": wrapper})
    assert model.net("generator") is wrapper and model.net("discriminator") is model.discriminator
    assert "generator.main.0.weight" in model.state_dict()  # wrappers are not submodules
    assert not any(k.startswith("_wrappers") for k in model.state_dict())
    with pytest.raises(ValueError, match="no network named encoder"):
        model.set_wrappers({"encoder": wrapper})


def test_sync_bn_needs_cuda(run_cli, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun (its environment), the plan refuses --sync-bn without CUDA: so does
    --dry-run; in one process the flag has no effect."""
    request = TrainRequest(
        "dcgan", {"dataset": "synthetic", "steps": 1, "sync_bn": True}, {"resolution": 32}
    )
    plan_training(request)  # one process: nothing to synchronise
    torchrun = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    with monkeypatch.context() as env:
        for key, value in (torchrun | {"MASTER_PORT": "29500"}).items():
            env.setenv(key, value)
        with pytest.raises(UsageError, match="--sync-bn needs CUDA"):
            plan_training(request)
        dry = run_cli("train", "dcgan", "-d", "synthetic", "--sync-bn", "--dry-run")
        assert dry.code == 2 and "--sync-bn needs CUDA" in dry.err, dry
    request = TrainRequest(
        "dcgan",
        {"dataset": "synthetic", "steps": 1, "sync_bn": True},
        {"resolution": 32, "d_batch": "reference"},
    )
    with pytest.raises(UsageError, match="--sync-bn cannot keep d_batch=reference"):
        plan_training(request)  # the plan refuses it: --dry-run too


def test_a_models_own_refusal_reaches_dry_run(run_cli, isolated: Path) -> None:
    for model in ("dcgan", "vaegan"):
        result = run_cli("train", model, "-d", "synthetic", "--sync-bn", "--set",
                         "d_batch=reference", "--dry-run")  # fmt: skip
        assert result.code == 2 and "cannot keep d_batch=reference" in result.err, result


def test_other_commands_refuse_to_run_under_torchrun(run_cli, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_cli("sample", "--n", "4")
    assert result.code == 2 and "only `imagegen train` runs under torchrun" in result.err
