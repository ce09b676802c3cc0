"""Kill -9 a training run at random moments, resume it each time, and compare the end with a
run that was never interrupted: bit-identical weights, samples and log, no stray files.

The run (a tiny DCGAN on the synthetic set) checkpoints, samples and logs at short intervals.
Each life of the process ends in a SIGKILL at one of five kinds of moment, taken in turn: a
random time during training, or in the middle of the N-th (random) checkpoint write, sample
write or log line (half the bytes written), or between a checkpoint and its `latest` link.
The writes are interrupted from inside the process (the child imports imagegen with those
functions wrapped), so every kind is hit, not just the likely ones. After each kill the run is
resumed with `imagegen train --resume` (or started again when no checkpoint existed yet). One
thread, so the results are bit-reproducible on this machine.

    python benchmarks/crash_resume.py --kills 50
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 200
TRAIN = [
    "train", "dcgan", "--dataset", "synthetic", "--resolution", "32", "--batch-size", "16",
    "--set", "g_width=8", "--set", "d_width=8", "--set", "latent_dim=16",
    "--checkpoint-every", "3", "--sample-every", "2", "--log-every", "1", "--keep", "2",
    "--no-tensorboard", "--quiet",
]  # fmt: skip


def env(workdir: Path) -> dict[str, str]:
    return os.environ | {
        "OMP_NUM_THREADS": "1",
        "IMAGEGEN_CACHE": str(workdir / "cache"),
        "IMAGEGEN_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


MODES = ("step", "checkpoint", "sample", "log", "link")
DESCRIBE = {
    "step": "at a random moment of training",
    "checkpoint": "in a checkpoint write (half written)",
    "sample": "in a sample grid write (half written)",
    "log": "in a log line (half written)",
    "link": "between a checkpoint and its latest link",
}


def command(run: Path, fresh: bool, crash: str = "") -> list[str]:
    base = [sys.executable, __file__, "--child", crash or "none", "--"]
    if fresh:
        return [*base, *TRAIN, "--steps", str(STEPS), "--run-dir", str(run), "--force"]
    return [*base, "train", "dcgan", "--resume", str(run), "--quiet"]


def phase(run: Path) -> str:
    """What the killed process was doing, as far as the files tell."""
    temps = [p.name for p in run.rglob(".*.tmp")]
    if any(".safetensors" in t for t in temps):
        return "checkpoint write"
    if any(".png" in t for t in temps):
        return "sample write"
    if any("config.json" in t or "log.jsonl" in t for t in temps):
        return "config/log rewrite"
    log = run / "log.jsonl"
    if log.is_file() and log.read_bytes() and not log.read_bytes().endswith(b"\n"):
        return "log write"
    if not (run / "checkpoints" / "latest.safetensors").is_file():
        return "start-up (no checkpoint yet)"
    return "training step"


def files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def log_records(run: Path) -> list[dict]:
    skip = {"images_per_s", "data_wait", "elapsed_s"}  # timings differ between runs
    return [
        {k: v for k, v in json.loads(line).items() if k not in skip}
        for line in (run / "log.jsonl").read_text().splitlines()
    ]


def crash_run(workdir: Path, kills: int, seed: int, max_delay: float) -> dict:
    """Train to the end through `kills` SIGKILLs; return what happened."""
    rng = random.Random(seed)
    run = workdir / "crashed"
    events: list[dict] = []
    fresh = True
    while True:
        mode = MODES[len(events) % len(MODES)] if len(events) < kills else ""
        crash = f"{mode}:{rng.randint(1, 4)}" if mode and mode != "step" else ""
        launched = time.time()
        proc = subprocess.Popen(command(run, fresh, crash), env=env(workdir))
        if mode == "step":
            _wait_for_training(proc, run / "log.jsonl", launched)
            try:
                proc.wait(timeout=rng.uniform(0.0, max_delay))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            events.append({"mode": mode, "crash": crash, "phase": phase(run)})
        elif proc.returncode != 0:
            raise SystemExit(f"the run failed (exit {proc.returncode}) after {events[-3:]}")
        elif _finished(run):
            return {"kills": events, "run": run}
        fresh = not (run / "checkpoints" / "latest.safetensors").is_file()


def _wait_for_training(proc: subprocess.Popen, log: Path, launched: float) -> None:
    """Until the process writes its log (training has begun, past imports and set-up)."""
    while proc.poll() is None:
        try:
            if log.stat().st_mtime > launched:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)


def _finished(run: Path) -> bool:
    latest = run / "checkpoints" / "latest.safetensors"
    if not latest.is_file():
        return False
    with latest.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    return int(meta["step"]) == STEPS


def compare(reference: Path, crashed: Path) -> list[str]:
    """Differences between the uninterrupted run and the crashed-and-resumed one."""
    from safetensors.torch import load_file

    problems = []
    a = load_file(str(reference / "checkpoints" / "latest.safetensors"))
    b = load_file(str(crashed / "checkpoints" / "latest.safetensors"))
    if a.keys() != b.keys():
        problems.append("checkpoint tensors differ in names")
    problems += [f"tensor {k} differs" for k in a if k in b and not a[k].equal(b[k])]
    steps = [r["step"] for r in log_records(crashed)]
    if steps != list(range(1, STEPS + 1)):
        problems.append(f"log steps have gaps or duplicates: {steps}")
    elif log_records(crashed) != log_records(reference):
        problems.append("log losses differ")
    fa, fb = files(reference), files(crashed)
    samples = sorted(k for k in fa if k.startswith("samples/"))
    problems += [f"{k} differs" for k in samples if fa[k] != fb.get(k)]
    stray = sorted(k for k in fb if Path(k).name.endswith(".tmp"))
    problems += [f"stray temporary file {k}" for k in stray]
    return problems


def child(crash: str, argv: list[str]) -> None:
    """Run `imagegen ARGV`, killing this process in the middle of the N-th write of a kind."""
    from imagegen import cli
    from imagegen.common import files, jsonl
    from imagegen.sampling import images
    from imagegen.storage import checkpoint, runs
    from imagegen.training import loop as train

    kind, _, nth = crash.partition(":")
    count = [0]

    def due() -> bool:
        count[0] += 1
        return count[0] == int(nth)

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    write, line, link = files.atomic_write_bytes, jsonl.write_line, train.atomic_link_or_copy

    def torn_write(path: Path, data: bytes) -> None:
        suffix = {"checkpoint": ".safetensors", "sample": ".png"}.get(kind)
        if suffix and Path(path).suffix == suffix and due():
            partial = Path(path).with_name(f".{Path(path).name}.crash.tmp")
            partial.write_bytes(data[: len(data) // 2])  # as mkstemp's file would hold it
            die()
        write(path, data)

    def torn_line(f, record) -> None:
        if kind == "log" and due():
            text = jsonl.dumps(record) + "\n"
            f.write(text[: len(text) // 2])
            f.flush()
            die()
        line(f, record)

    def late_link(src: Path, dst: Path) -> None:
        if kind == "link" and due():
            die()
        link(src, dst)

    for module in (files, checkpoint, images, runs):  # every module that writes files
        module.atomic_write_bytes = torn_write
    jsonl.write_line = torn_line
    train.atomic_link_or_copy = late_link
    sys.exit(cli.run(argv))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2] if sys.argv[2] != "none" else "", sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-delay", type=float, default=1.0, help="seconds of training before a kill"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="imagegen-crash-"))
    try:
        started = time.perf_counter()
        ref = subprocess.run(command(workdir / "reference", True), env=env(workdir), check=False)
        if ref.returncode != 0:
            raise SystemExit("the uninterrupted run failed")
        outcome = crash_run(workdir, args.kills, args.seed, args.max_delay)
        problems = compare(workdir / "reference", outcome["run"])
        phases: dict[str, int] = {}
        for kill in outcome["kills"]:
            phases[kill["mode"]] = phases.get(kill["mode"], 0) + 1
        result = {
            "kills": len(outcome["kills"]),
            "phases": phases,
            "identical": not problems,
            "problems": problems[:20],
            "seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['kills']} kills (SIGKILL), each resumed, to step {STEPS}: ", end="")
        print("bit-identical to the uninterrupted run" if result["identical"] else "DIFFERENT")
        for name, count in sorted(phases.items(), key=lambda kv: -kv[1]):
            print(f"  {count:4d} {DESCRIBE[name]}")
        for problem in result["problems"]:
            print(f"  problem: {problem}")
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
