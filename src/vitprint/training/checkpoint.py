"""All checkpoint logic: atomic save/load, optimizer state, encoder and ViT weights.

A checkpoint is one ``.safetensors`` file: model tensors under ``model.``,
optimizer tensors under ``optim.``, and everything else (config, epoch,
scheduler, metrics, optimizer hyper-parameters) as JSON in the file's metadata.
Loading one can never run code. Files are written to a temporary name and then
renamed, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from vitprint.errors import VitprintError

META_KEY = "vitprint"
PREFIXES = ("module.", "_orig_mod.", "model.", "state_dict.")


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(clean, tmp, metadata={META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a vitprint safetensors file (``{}`` if it has none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError) as exc:
        raise VitprintError(f"cannot read {path}: {exc}") from None
    return json.loads(raw) if raw else {}


Optimizers = Union[torch.optim.Optimizer, dict[str, torch.optim.Optimizer], None]


def _as_dict(optimizers) -> dict[str, torch.optim.Optimizer]:
    if optimizers is None:
        return {}
    return optimizers if isinstance(optimizers, dict) else {"main": optimizers}


def _flatten_optimizer(name: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{name}/{idx}/{key}"] = value
            else:
                scalars[f"{idx}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for full, value in tensors.items():
        if full.startswith(prefix):
            idx, key = full[len(prefix):].split("/", 1)
            state.setdefault(int(idx), {})[key] = value
    for full, value in meta["scalars"].items():
        idx, key = full.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    # JSON turns tuples (Adam's betas) into lists; give them back their type.
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: Optimizers = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write model and optimizer state plus ``meta`` to one safetensors file, atomically.

    ``optimizer`` is one optimizer or a dict of named ones (a GAN has two).
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = dict(meta or {})
    optims = _as_dict(optimizer)
    if optims:
        meta["optimizers"] = {}
        for name, opt in optims.items():
            optim_tensors, meta["optimizers"][name] = _flatten_optimizer(name, opt.state_dict())
            tensors.update(optim_tensors)
    _atomic_save(tensors, Path(path), meta)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: Optimizers = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Restore ``model`` (and the optimizer(s)) from ``path``; returns the metadata."""
    path = Path(path)
    if not path.is_file():
        raise VitprintError(f"checkpoint not found: {path}")
    meta = read_meta(path)
    tensors = load_file(str(path))
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    _load_strict(model, model_state, path, strict)
    for name, opt in _as_dict(optimizer).items():
        if name not in meta.get("optimizers", {}):
            raise VitprintError(f"checkpoint {path} holds no optimizer state to resume from")
        opt.load_state_dict(_unflatten_optimizer(name, tensors, meta["optimizers"][name]))
    return meta


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: Path, strict: bool = True) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if strict and (missing or unexpected or wrong):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"wrong shape for {len(wrong)} (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise VitprintError(
            f"weights in {source} do not fit this model ({'; '.join(parts)}); was it made with another preset?"
        )
    module.load_state_dict({k: v for k, v in state.items() if k not in wrong}, strict=strict)


def save_weights(path: str | Path, module: nn.Module, meta: dict[str, Any] | None = None) -> None:
    """Write one module's weights (for example the pretrained encoder), atomically."""
    _atomic_save(dict(module.state_dict()), Path(path), dict(meta or {}))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` read without running code."""
    path = Path(path)
    if not path.is_file():
        raise VitprintError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise VitprintError(f"cannot read {path}: {exc}") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for foreign or broken files
        raise VitprintError(f"cannot read {path} as a state dict: {exc}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise VitprintError(f"{path} does not hold a state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def strip_prefixes(state: dict[str, torch.Tensor], extra: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (``module.``, ``_orig_mod.``, ``model.`` ...) while every key has one."""
    for prefix in (*PREFIXES, *extra):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_encoder(encoder: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a vitprint encoder from an encoder file, a classifier or an autoencoder checkpoint."""
    state = read_state_dict(path)
    state = strip_prefixes(state)
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    _load_strict(encoder, state, Path(path))
    return read_meta(path) if Path(path).suffix == ".safetensors" else {}


# torchvision vit_b_16 names -> timm VisionTransformer names.
_TV_RULES = [
    (r"^class_token$", "cls_token"),
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^encoder\.pos_embedding$", "pos_embed"),
    (r"^encoder\.ln\.", "norm."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_", r"blocks.\1.attn.qkv."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(0|linear_1)\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(3|linear_2)\.", r"blocks.\1.mlp.fc2."),
]


def torchvision_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``VisionTransformer`` state dict to timm's layout (head dropped)."""
    out = {}
    for key, value in state.items():
        if key.startswith("heads."):
            continue
        for pattern, repl in _TV_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                # in_proj_weight -> qkv.weight: the rule leaves "weight"/"bias" behind.
                out[new] = value
                break
        else:
            raise VitprintError(f"unrecognised torchvision ViT key {key!r}")
    return out


def load_vit_weights(vit: nn.Module, path: str | Path) -> None:
    """Initialise a timm ViT from a local timm- or torchvision-layout state dict.

    The classification head is dropped; position embeddings (and patch
    embeddings) are resampled by timm when the sizes differ.
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = strip_prefixes(read_state_dict(path), extra=("vit.", "encoder.vit."))
    if "class_token" in state or "conv_proj.weight" in state:
        state = torchvision_to_timm(state)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        state = checkpoint_filter_fn(state, vit)
    except Exception as exc:  # timm's resampling raises plain errors on odd shapes
        raise VitprintError(f"cannot adapt ViT weights in {path} to this model: {exc}") from None
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    _load_strict(vit, state, Path(path))


def init_encoder(encoder: nn.Module, vit_weights: str | None = None, encoder_path: str | None = None) -> None:
    """Start an encoder from a pretrained vitprint encoder, or its ViT from local ViT weights."""
    if encoder_path:
        load_encoder(encoder, encoder_path)
    elif vit_weights:
        load_vit_weights(encoder.vit, vit_weights)
