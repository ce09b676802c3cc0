"""The one place that knows foreign formats: import and export checkpoints, never unpickling code.

Directions, chosen by the files' suffixes:
    .pth/.pt -> .safetensors   a pytorch/examples DCGAN (netG, and netD with --discriminator),
                               or a plain state dict of one of our models, as a checkpoint
    .safetensors -> .pt        a plain state dict plus config.json beside it
    .safetensors -> .onnx      the generator (or decoder): latent in, image in [0, 1] out
`.pt`/`.pth` files are read with torch.load(weights_only=True): a pickle that needs code to
load is refused and never executed.
"""

import dataclasses
import io
import json
import pickle
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imagegen.common.errors import UsageError, UserError, brief
from imagegen.common.files import atomic_write_bytes, check_output_file, refuse_run_checkpoints
from imagegen.common.options import build_dataclass, to_dict
from imagegen.models.base import GenerativeModel
from imagegen.models.registry import MODELS, get_spec
from imagegen.storage import checkpoint
from imagegen.storage.convert_request import ConvertRequest
from imagegen.storage.runs import find_checkpoint

TORCH_SUFFIXES = (".pt", ".pth")
# The training options of a checkpoint made from foreign weights: none but where they came from
# (a resumed run fills in TrainConfig's defaults).
IMPORTED = {"dataset": "imported"}
EXAMPLES_MODEL = "dcgan"  # the model whose architecture pytorch/examples' DCGAN is


@dataclass(frozen=True)
class ConvertResult:
    """What was written."""

    direction: str
    model: str
    config: dict[str, Any]
    files: list[str]
    check: dict[str, float] = field(default_factory=dict)  # e.g. max output difference

    def as_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "model": self.model,
            "config": self.config,
            "files": self.files,
            "check": self.check,
        }


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a .pt/.pth state dict without executing code; strip wrapper prefixes."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"not found: {path}")
    with path.open("rb") as f:
        head = f.read(4)
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":  # a zip (torch.save) or a pickle
        raise UserError(f"{path} is not a PyTorch file (neither a zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; we refuse or load
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e) and "Unsupported global" not in str(e):
            raise UserError(f"cannot read {path} as a PyTorch file ({brief(e)})") from None
        globals_ = re.findall(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({', '.join(dict.fromkeys(globals_))})" if globals_ else ""
        raise UserError(
            f"refused to load {path}: it holds objects that need code to unpickle{what}, "
            "which imagegen never runs; save a state dict of tensors instead"
        ) from None
    except Exception as e:  # a damaged file fails in many ways inside torch.load
        raise UserError(f"cannot read {path} as a PyTorch file ({brief(e)})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    out = {}
    for key, value in obj.items():
        for prefix in ("module.", "_orig_mod."):  # DataParallel / torch.compile wrappers
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _is_examples_dcgan(state: dict[str, torch.Tensor]) -> bool:
    return all(k.startswith("main.") for k in state) and "main.0.weight" in state


def _is_examples_discriminator(state: dict[str, torch.Tensor]) -> bool:
    """netD: a LeakyReLU (no weights) follows its first conv; netG has a BatchNorm there."""
    return _is_examples_dcgan(state) and "main.1.weight" not in state


def _examples_config(
    g_state: dict[str, torch.Tensor], d_state: dict[str, torch.Tensor] | None, options: dict
) -> dict[str, Any]:
    """The DCGAN config that pytorch/examples' weights imply; given options must agree."""
    nz, g8 = g_state["main.0.weight"].shape[:2]  # ConvTranspose2d(nz, ngf * 8, 4, 1, 0)
    last = max(int(k.split(".")[1]) for k in g_state)
    nc = g_state[f"main.{last}.weight"].shape[1]  # ConvTranspose2d(ngf, nc, 4, 2, 1)
    stages = sum(1 for k in g_state if k.endswith(".weight") and g_state[k].ndim == 4)
    inferred: dict[str, Any] = {
        "resolution": 2 ** (stages + 1),  # 5 transposed convs: 1 -> 64
        "channels": int(nc),
        "latent_dim": int(nz),
        "g_width": int(g8) // 2 ** (stages - 2),
    }
    if d_state is not None:
        inferred["d_width"] = int(d_state["main.0.weight"].shape[0])  # Conv2d(nc, ndf, ...)
    elif "d_width" in options:
        inferred["d_width"] = int(options["d_width"])
    conflicts = [
        f"{k}: given {options[k]}, the weights say {v}"
        for k, v in inferred.items()
        if k in options and int(options[k]) != v
    ]
    if conflicts:
        raise UserError("architecture options do not match the weights: " + "; ".join(conflicts))
    return options | inferred


def _map_examples_discriminator(d_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pytorch/examples' netD ends main with Conv2d(8 ndf, 1) + Sigmoid: that conv is our head."""
    last = max(int(k.split(".")[1]) for k in d_state)
    return {
        (f"head.{k.split('.', 2)[2]}" if k.startswith(f"main.{last}.") else k): v
        for k, v in d_state.items()
    }


def _load_checked(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load strictly; name missing, unexpected and mis-shaped keys in one line."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    if extra:
        problems.append(f"unexpected {', '.join(extra[:4])}" + (" ..." if len(extra) > 4 else ""))
    if shapes:
        problems.append(
            f"shape mismatch {', '.join(shapes[:3])}" + (" ..." if len(shapes) > 3 else "")
        )
    if problems:
        raise UserError(f"{what} does not fit the config: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _suffix(path: Path) -> str:
    s = Path(path).suffix.lower()
    if s not in (*TORCH_SUFFIXES, ".safetensors", ".onnx"):
        raise UsageError(
            f"unknown file type {s or '(none)'} for {path}: use .pt/.pth, .safetensors or .onnx"
        )
    return s


def convert(request: ConvertRequest) -> ConvertResult:
    """Convert `src` to `dst`, the direction following from their suffixes."""
    if request.weights_only:
        return _weights_only(request)
    if Path(request.src).is_dir():
        request = replace(request, src=find_checkpoint(request.src))
    src_kind, dst_kind = _suffix(request.src), _suffix(request.dst)
    if not Path(request.src).exists():
        raise UserError(f"not found: {request.src}")
    _check_destination(request, Path(request.src))
    if src_kind in TORCH_SUFFIXES and dst_kind == ".safetensors":
        return _import_torch(request)
    if src_kind == ".safetensors" and dst_kind in TORCH_SUFFIXES:
        return _export_torch(request)
    if src_kind == ".safetensors" and dst_kind == ".onnx":
        return _export_onnx(request)
    raise UsageError(
        f"cannot convert {src_kind} to {dst_kind}: the directions are .pt/.pth -> .safetensors, "
        ".safetensors -> .pt/.pth, .safetensors -> .onnx"
    )


def _check_destination(request: ConvertRequest, src: Path) -> None:
    """DST may be written: not SRC, not in a run's checkpoints folder, new or --force."""
    if Path(request.dst).resolve() == src.resolve():
        raise UsageError(f"DST is SRC ({request.dst}): write the conversion to another file")
    refuse_run_checkpoints(request.dst, "DST")
    check_output_file(request.dst, request.force)


def _weights_only(request: ConvertRequest) -> ConvertResult:
    """A checkpoint (or a run's latest) -> the sampling network alone, EMA weights by default."""
    src = find_checkpoint(request.src)
    if _suffix(request.dst) != ".safetensors":
        raise UsageError(f"--weights-only writes a .safetensors file, not {request.dst}")
    _check_destination(request, Path(src))
    ckpt = checkpoint.read_checkpoint(src, expect_model=request.model)
    model = checkpoint.build_model(ckpt, use_ema=request.use_ema)
    checkpoint.save_sampler(Path(request.dst), ckpt, model)
    return ConvertResult(
        f"imagegen checkpoint -> sampling network only ({model.ema_module}, "
        f"{'EMA' if request.use_ema and ckpt.has_ema else 'raw'} weights)",
        ckpt.model_name,
        to_dict(ckpt.config),
        [str(request.dst)],
    )


def _inferred(state: dict[str, torch.Tensor], fields: set[str]) -> dict[str, Any]:
    """Options the keys themselves tell: spectral normalisation leaves `parametrizations`."""
    spectral = any(k.startswith("discriminator.") and ".parametrizations." in k for k in state)
    return {"d_norm": "spectral"} if spectral and "d_norm" in fields else {}


def _import_torch(request: ConvertRequest) -> ConvertResult:
    """A state dict (pytorch/examples' DCGAN, or an imagegen model's) as a checkpoint."""
    state = load_state_dict(request.src)
    options = request.options
    if _is_examples_discriminator(state):
        raise UserError(
            f"{request.src} is a pytorch/examples discriminator (netD): give the generator "
            "(netG_epoch_N.pth) as SRC, and this file as --discriminator"
        )
    if _is_examples_dcgan(state):
        model_name, model = _examples_model(request, state, options)
        direction = "pytorch/examples DCGAN -> imagegen checkpoint"
    else:
        model_name, model = _state_dict_model(request, state, options)
        prefix = f"{model.ema_module}."
        if all(k.startswith(prefix) for k in state):  # the sampling network alone
            sampler = {k[len(prefix) :]: v for k, v in state.items()}
            _load_checked(model.sampling_network(), sampler, f"{request.src}")
            return _save_imported_sampler(request, model_name, model)
        _load_checked(model, state, f"{request.src}")
        direction = "state dict -> imagegen checkpoint"
    c = model.config
    checkpoint.save_checkpoint(
        request.dst,
        model=model,
        model_name=model_name,
        train_config=IMPORTED,
        step=0,
        data_shape=(c.channels, c.resolution, c.resolution),
        dataset="imported",
    )
    return ConvertResult(direction, model_name, to_dict(model.config), [str(request.dst)])


def _examples_model(
    request: ConvertRequest, state: dict[str, torch.Tensor], options: dict[str, Any]
) -> tuple[str, Any]:
    """pytorch/examples' DCGAN (netG, and netD if given) as the model of that architecture."""
    model_name = request.model or EXAMPLES_MODEL
    if model_name != EXAMPLES_MODEL:
        raise UsageError(f"{request.src} holds a pytorch/examples DCGAN, not a {model_name}")
    spec = get_spec(model_name)
    d_state = load_state_dict(request.discriminator) if request.discriminator else None
    config = build_dataclass(spec.config_cls, _examples_config(state, d_state, options), model_name)
    model: Any = spec.model_cls(config)
    _load_checked(model.generator, state, f"{request.src}")
    if d_state is not None:
        mapped = _map_examples_discriminator(d_state)
        _load_checked(model.discriminator, mapped, f"{request.discriminator}")
    return model_name, model


def _state_dict_model(
    request: ConvertRequest, state: dict[str, torch.Tensor], options: dict[str, Any]
) -> tuple[str, Any]:
    """The model a state dict is the weights of: --model, else the config.json beside it (an
    export's), its architecture from there and --set."""
    beside = Path(request.src).parent / "config.json"
    meta = json.loads(beside.read_text()) if beside.is_file() else {}
    model_name = request.model or meta.get("model")
    if model_name is None:
        raise UsageError(
            f"{request.src} is a state dict but not a pytorch/examples DCGAN, and no "
            "config.json lies beside it: name its model and architecture, e.g. --model "
            f"{next(iter(MODELS))} --set resolution=32 --set channels=3 --latent-dim 100 "
            f"(models: {', '.join(MODELS)})"
        )
    spec = get_spec(model_name)
    stored = dict(meta.get("config", {})) if meta.get("model") in (None, model_name) else {}
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    missing = sorted({"resolution", "channels", "latent_dim"} & fields - set(stored) - set(options))
    if missing:
        raise UsageError(
            f"missing architecture options for {model_name}: {', '.join(missing)} "
            f"(give --set KEY=VALUE, or put config.json beside {request.src})"
        )
    asked = _inferred(state, fields) | stored | options
    return model_name, spec.model_cls(build_dataclass(spec.config_cls, asked, model_name))


def _save_imported_sampler(request: ConvertRequest, model_name: str, model: Any) -> ConvertResult:
    c = model.config
    shell = checkpoint.Checkpoint(
        path=Path(request.src),
        model_name=model_name,
        config=c,
        train_config=dict(IMPORTED),
        step=0,
        data_shape=(c.channels, c.resolution, c.resolution),
        dataset="imported",
        counters=checkpoint.Counters(),
        tensors={},
        optim_meta={},
        contents=checkpoint.SAMPLER,
    )
    checkpoint.save_sampler(Path(request.dst), shell, model)
    return ConvertResult(
        "state dict (sampling network) -> imagegen checkpoint (sampling network only)",
        model_name,
        to_dict(c),
        [str(request.dst)],
    )


def _export_torch(request: ConvertRequest) -> ConvertResult:
    ckpt = checkpoint.read_checkpoint(request.src, expect_model=request.model)
    model = checkpoint.build_model(ckpt, use_ema=request.use_ema)
    config_path = Path(request.dst).parent / "config.json"
    check_output_file(config_path, request.force)
    buf = io.BytesIO()
    state = model.state_dict()
    if ckpt.is_sampler:  # only the sampling network holds trained weights
        prefix = f"{model.ema_module}."
        state = {k: v for k, v in state.items() if k.startswith(prefix)}
    torch.save({k: v.contiguous() for k, v in state.items()}, buf)
    meta = {
        "contents": ckpt.contents,
        "model": ckpt.model_name,
        "config": to_dict(ckpt.config),
        "step": ckpt.step,
        "ema": request.use_ema and ckpt.has_ema,
        "normalisation": model.normalisation,
        "source": str(request.src),
    }
    if ckpt.class_names:  # a conditional model: class index -> name
        meta["classes"] = ckpt.class_names
    atomic_write_bytes(Path(request.dst), buf.getvalue())
    atomic_write_bytes(config_path, (json.dumps(meta, indent=2) + "\n").encode())
    return ConvertResult(
        "imagegen checkpoint -> state dict + config.json",
        ckpt.model_name,
        to_dict(ckpt.config),
        [str(request.dst), str(config_path)],
    )


class _Sampler(nn.Module):
    """latent (B, latent_dim) [and a conditional model's label (B,) int64] -> image
    (B, C, R, R) in [0, 1]: what the ONNX file computes."""

    def __init__(self, model: GenerativeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.generate(z, labels=labels)


def _onnx_inputs(model: GenerativeModel, n: int, seed: int) -> dict[str, torch.Tensor]:
    """The exported graph's inputs for a batch of n: latent, and label where conditional."""
    g = torch.Generator().manual_seed(seed)
    inputs = {"latent": torch.randn(n, model.latent_dim, generator=g)}
    if model.num_classes:
        inputs["label"] = torch.arange(n) % model.num_classes
    return inputs


def _export_onnx(request: ConvertRequest) -> ConvertResult:
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
    except ImportError:
        raise UserError(
            "ONNX export needs the onnx package: pip install onnx (or 'imagegen[onnx]')"
        ) from None
    ckpt = checkpoint.read_checkpoint(request.src, expect_model=request.model)
    model = checkpoint.build_model(ckpt, use_ema=request.use_ema)
    wrapper = _Sampler(model).eval()
    inputs = _onnx_inputs(model, 2, 0)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter needs only `onnx`; the newer one also needs onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                tuple(inputs.values()),
                buf,  # type: ignore[arg-type]  # a file object: the TorchScript exporter takes one
                input_names=list(inputs),
                output_names=["image"],
                dynamic_axes={name: {0: "batch"} for name in [*inputs, "image"]},
                opset_version=17,
                dynamo=False,
            )
    except Exception as e:  # the exporter's errors are many and unstable
        raise UserError(f"ONNX export failed: {str(e).splitlines()[0][:200]}") from None
    blob = _with_classes(buf.getvalue(), ckpt.class_names)
    check = _onnx_check(blob, wrapper, model)
    atomic_write_bytes(Path(request.dst), blob)
    takes = " and label (int64)" if model.num_classes else ""
    return ConvertResult(
        f"imagegen checkpoint -> ONNX (latent{takes} -> image in [0, 1])",
        ckpt.model_name,
        to_dict(ckpt.config),
        [str(request.dst)],
        check,
    )


def _with_classes(blob: bytes, classes: list[str]) -> bytes:
    """The ONNX model with a conditional model's class names (JSON, by index) in its
    metadata as "classes"; unchanged for an unconditional one."""
    if not classes:
        return blob
    import onnx

    graph = onnx.load_model_from_string(blob)
    onnx.helper.set_model_props(graph, {"classes": json.dumps(classes)})
    return graph.SerializeToString()


def _onnx_check(blob: bytes, wrapper: nn.Module, model: GenerativeModel) -> dict[str, float]:
    """Run the exported graph in onnxruntime (when installed) against PyTorch, batch 5."""
    try:
        import onnxruntime
    except ImportError:
        return {}
    inputs = _onnx_inputs(model, 5, 1)
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(["image"], {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        expected = wrapper(*inputs.values())
    diff = float((torch.from_numpy(onnx_out) - expected).abs().max())
    if diff > 1e-4:
        raise UserError(f"the exported ONNX graph differs from PyTorch by {diff:.2e} (> 1e-4)")
    return {"onnxruntime_max_abs_diff": diff}
