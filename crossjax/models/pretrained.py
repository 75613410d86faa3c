"""Pretrained weights from files: PyTorch state dicts into crossjax variables, no torch needed.

`read_state_dict(path)` reads `.safetensors`, `.npz`, or a `torch.save` zip (`.pt`,
`.pth`, `.bin`; tensors only, nothing is imported) into {name: numpy array}.
`convert_state_dict(state_dict, template, layout)` maps each tensor to the leaf of
`template` (the module's `init` variables, or their `jax.eval_shape`) with the same
path: list indices join the name before them (`layer1.0.conv1` -> `layer1_0/conv1`),
`weight` is a `kernel` (Linear (O, I) -> (I, O), Conv (O, I, kh, kw) -> (kh, kw, I, O)),
LayerNorm/BatchNorm `scale` or Embedding `embedding`, BatchNorm `running_mean`/`running_var`
go to `batch_stats` `mean`/`var`, and other tensors keep their name and shape. One
ConfigError names every missing, unexpected and mis-shaped weight.

`LAYOUTS` says which tensors of a file belong to a tower (open_clip keeps both towers in
one file) and `ENCODER_LAYOUTS` the default layout of each encoder that has one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from crossjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a file's tensors map onto a tower.

    prefixes: the first of these that some tensor name starts with selects the tower's
      tensors (and is removed); tensors without it belong to other towers.
    skip: name patterns (after the prefix) to ignore: buffers, other heads.
    fresh: patterns of model leaves ("params/projection/kernel") the file need not have;
      they keep the template's values (so pass init variables, not shapes, as template).
    transpose_linear: Linear weights are (out, in) as torch's; False for GPT-2's Conv1D,
      stored (in, out).
    """

    prefixes: tuple[str, ...] = ("",)
    skip: tuple[str, ...] = ()
    fresh: tuple[str, ...] = ()
    transpose_linear: bool = True


_ALWAYS_SKIP = (r"(^|\.)num_batches_tracked$",)
# Token embedding modules of the text towers: their rows are the tokenizer's vocabulary.
_TOKEN_EMBEDDINGS = frozenset({"word_embeddings", "wte", "token_embedding"})
LAYOUTS: dict[str, Layout] = {
    "plain": Layout(),
    "torchvision_resnet": Layout(),
    "open_clip_visual": Layout(prefixes=("visual.",)),
    "open_clip_text": Layout(
        skip=(r"^visual\.", r"^logit_scale$", r"^logit_bias$", r"^attn_mask$")
    ),
    # Task-head checkpoints (BertForPreTraining, GPT2LMHeadModel) nest the encoder.
    "hf_bert": Layout(
        prefixes=("bert.", ""),
        skip=(r"^cls\.", r"position_ids$"),
        fresh=(r"^params/projection/",),
    ),
    "hf_gpt2": Layout(
        prefixes=("transformer.", ""),
        skip=(r"^lm_head\.", r"\.attn\.(masked_)?bias$"),
        fresh=(r"^params/projection/",),
        transpose_linear=False,
    ),
    "hf_siglip_vision": Layout(
        prefixes=("vision_model.", ""),
        skip=(r"^text_model\.", r"^logit_", r"position_ids$"),
        fresh=(r"^params/projection/",),
    ),
    "hf_siglip_text": Layout(
        prefixes=("text_model.", ""), skip=(r"^vision_model\.", r"^logit_", r"position_ids$")
    ),
}
ENCODER_LAYOUTS = {
    "resnet18": "torchvision_resnet",
    "resnet50": "torchvision_resnet",
    "open_clip_vit": "open_clip_visual",
    "open_clip_text": "open_clip_text",
    "bert": "hf_bert",
    "gpt2": "hf_gpt2",
    "siglip_vit": "hf_siglip_vision",
    "siglip_text": "hf_siglip_text",
}

# -- reading files ----------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """{name: array} from a .safetensors file (8-byte header size, JSON header, data)."""
    data = Path(path).read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + size :]
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = info["dtype"]
        if dtype == "BF16":
            raw = np.frombuffer(body[start:end], np.uint16)
            array = _bfloat16_to_float32(raw)
        elif dtype in _SAFETENSORS_DTYPES:
            array = np.frombuffer(body[start:end], _SAFETENSORS_DTYPES[dtype])
        else:
            raise ConfigError(
                f"{path}: tensor {name!r} has dtype {dtype}; valid: BF16, "
                f"{', '.join(_SAFETENSORS_DTYPES)}"
            )
        out[name] = array.reshape(info["shape"]).copy()
    return out


_TORCH_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}  # fmt: skip


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a torch.save state dict into numpy arrays; any other object is refused,
    so a file cannot run code (as torch.load(weights_only=True))."""

    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self.archive, self.root = archive, root

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda tensor, requires_grad, hooks: tensor
        if module == "torch" and name in _TORCH_STORAGES:
            return _TORCH_STORAGES[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a tensor")

    def persistent_load(self, pid: Any) -> np.ndarray:
        _, dtype, key, _, _ = pid
        raw = self.archive.read(f"{self.root}/data/{key}")
        if dtype == "bfloat16":
            return _bfloat16_to_float32(np.frombuffer(raw, np.uint16))
        return np.frombuffer(raw, dtype)


def _rebuild_tensor(storage, offset, size, stride, *_) -> np.ndarray:
    if not size:
        return storage[offset].copy()
    item = storage.itemsize
    strides = tuple(s * item for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size), strides).copy()


def read_torch_zip(path: str | Path) -> dict[str, np.ndarray]:
    """{name: array} from a `torch.save` zip file holding a (possibly nested) state dict."""
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        root = pkl[: -len("/data.pkl")]
        with archive.open(pkl) as f:
            obj = _TorchUnpickler(f, archive, root).load()
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    return dict(obj)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """{name: array} from .safetensors, .npz, or a torch.save zip (.pt, .pth, .bin)."""
    return dict(_read_cached(str(Path(path).resolve())))


@functools.lru_cache(maxsize=2)  # an encoder loading at init is traced more than once
def _read_cached(path: str) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            return read_safetensors(path)
        if path.suffix == ".npz":
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        if zipfile.is_zipfile(path):
            return read_torch_zip(path)
    except (ValueError, KeyError, StopIteration, pickle.UnpicklingError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read pretrained weights {str(path)!r}: {e}") from None
    raise ConfigError(
        f"pretrained weights {str(path)!r}: unknown format; valid: .safetensors, .npz, "
        "a torch.save zip (.pt, .pth, .bin; convert legacy pickles with torch first)"
    )


# -- converting -------------------------------------------------------------------------


def _flax_name(torch_name: str) -> tuple[list[str], str]:
    """Module path and leaf of a torch tensor name, indices joined: a.0.b.weight ->
    (['a_0', 'b'], 'weight'); a fused `in_proj_weight` is `in_proj` + `weight`."""
    name = re.sub(r"(^|\.)in_proj_(weight|bias)$", r"\1in_proj.\2", torch_name)
    name = re.sub(r"\.(\d+)(?=\.)", r"_\1", name)
    *path, leaf = name.split(".")
    return path, leaf


def _candidates(path: list[str], leaf: str) -> list[tuple[str, ...]]:
    if leaf == "weight":
        return [("params", *path, k) for k in ("kernel", "scale", "embedding")]
    if leaf == "running_mean":
        return [("batch_stats", *path, "mean")]
    if leaf == "running_var":
        return [("batch_stats", *path, "var")]
    return [("params", *path, leaf)]


def _to_flax(array: np.ndarray, target: tuple[str, ...], transpose_linear: bool) -> np.ndarray:
    if target[-1] == "kernel" and array.ndim == 2 and transpose_linear:
        return array.T
    if target[-1] == "kernel" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    template: Mapping[str, Any],
    layout: str | Layout = "plain",
    source: str = "checkpoint",
) -> dict[str, Any]:
    """Variables shaped like `template` ({"params": ..., maybe "batch_stats": ...}, leaves
    with .shape and .dtype) filled from the PyTorch-named `state_dict` (see module doc).
    Every leaf must be filled: ConfigError naming each missing, unexpected or mis-shaped
    weight of `source`."""
    if isinstance(layout, str):
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown weights layout {layout!r}; valid: {', '.join(LAYOUTS)}")
        layout = LAYOUTS[layout]
    wanted = traverse_util.flatten_dict(dict(jax.tree.map(lambda x: x, template)))
    filled: dict[tuple[str, ...], np.ndarray] = {}
    unexpected, misshaped, left_out = [], [], set()
    skip = [re.compile(p) for p in (*_ALWAYS_SKIP, *layout.skip)]
    prefix = next(
        (p for p in layout.prefixes if any(n.startswith(p) for n in state_dict)),
        layout.prefixes[-1],
    )
    for name, array in state_dict.items():
        if not name.startswith(prefix):
            continue
        name = name[len(prefix) :]
        if any(p.search(name) for p in skip):
            continue
        target = next((t for t in _candidates(*_flax_name(name)) if t in wanted), None)
        if target is None:
            unexpected.append(prefix + name)
            continue
        value = _to_flax(np.asarray(array), target, layout.transpose_linear)
        if tuple(value.shape) != tuple(wanted[target].shape):
            misshaped.append(
                f"{prefix}{name} {tuple(np.shape(array))} vs model "
                f"{'/'.join(target)} {tuple(wanted[target].shape)}"
            )
            left_out.add(target)  # reported as mis-shaped, not also missing
            continue
        filled[target] = value.astype(wanted[target].dtype)
    fresh = [re.compile(p) for p in layout.fresh]
    for t in wanted:
        if t not in filled and any(p.search("/".join(t)) for p in fresh):
            if isinstance(wanted[t], np.ndarray | jax.Array):
                filled[t] = wanted[t]
            else:
                left_out.add(t)  # an abstract template has no value to keep
    missing = ["/".join(t) for t in wanted if t not in filled and t not in left_out]
    if missing or unexpected or misshaped:
        parts = [
            f"{label} ({len(items)}): {', '.join(items)}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped", misshaped),
            )
            if items
        ]
        hint = ""
        if any(t[-2] in _TOKEN_EMBEDDINGS for t in left_out if len(t) > 1):
            hint = (
                "; a text tower's vocab_size is its tokenizer's: set data.tokenizer to the "
                "checkpoint's vocabulary files"
            )
        raise ConfigError(
            f"{source} does not fit the model: {'; '.join(parts)}; set the encoder's "
            f"fields to the checkpoint's architecture, or pick the right layout/prefix{hint}"
        )
    return traverse_util.unflatten_dict(filled)


def load_pretrained(
    path: str | Path, template: Mapping[str, Any], layout: str | Layout = "plain"
) -> dict[str, Any]:
    """`convert_state_dict` of the file at `path` (see `read_state_dict`)."""
    return convert_state_dict(read_state_dict(path), template, layout, source=str(path))


def parse_pretrained(value: Any, encoder: Any, owner: str) -> tuple[str, str]:
    """(path, layout) from a tower's `pretrained` setting: a path, or a dict with `path`
    and `layout` (default: `ENCODER_LAYOUTS[encoder]`); ConfigError when it is malformed,
    the file is missing or the layout unknown."""
    if isinstance(value, str | Path):
        value = {"path": value}
    if not isinstance(value, Mapping) or set(value) - {"path", "layout"} or "path" not in value:
        raise ConfigError(
            f"{owner}: pretrained={value!r}; valid: a file path, or a dict with 'path' and "
            "optional 'layout'"
        )
    layout = value.get("layout") or ENCODER_LAYOUTS.get(encoder)
    if layout not in LAYOUTS:
        raise ConfigError(
            f"{owner}: pretrained weights need a layout for encoder {encoder!r}; set "
            f"pretrained={{'path': ..., 'layout': ...}} with one of: {', '.join(LAYOUTS)}"
        )
    path = Path(value["path"]).expanduser()
    if not path.is_file():
        raise ConfigError(f"{owner}: pretrained weights file {str(path)!r} does not exist")
    return str(path), layout


def loading_at_init(cls: type, path: str, layout: str) -> type:
    """`cls` whose `init` returns the weights converted from `path` instead of random ones
    (leaves the layout calls fresh keep their random values) in `params` and `batch_stats`;
    `apply` is unchanged and the variable tree is `cls`'s own."""

    def load(variables):
        if not jax.tree.leaves(variables):  # apply passes no variables out: nothing to load
            return variables
        return load_pretrained(path, variables, layout)

    return nn.map_variables(
        cls,
        ("params", "batch_stats"),
        trans_in_fn=lambda v: v,
        trans_out_fn=load,
        init=True,
        mutable=False,
    )
