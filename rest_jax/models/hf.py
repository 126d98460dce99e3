"""Loading Hugging Face CLIP checkpoint directories into the Flax parameter tree.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or a sharded
``model.safetensors.index.json``, or ``pytorch_model.bin`` which needs torch, the ``convert``
extra), plus optionally ``preprocessor_config.json`` and the tokenizer files. Weights are read with
safetensors, without torch. Names such as ``clip-vit-b16`` resolve to Hugging Face repositories;
downloading happens only when asked (``allow_download=True``). See docs/method.md section 8.4.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rest_jax.files import read_json
from rest_jax.models.clip import ClipConfig, ClipModel
from rest_jax.models.preprocess import PreprocessInfo, load_preprocess_info

PyTree = Any

# Short names -> Hugging Face repository ids.
CHECKPOINTS: dict[str, str] = {
    "clip-vit-b16": "openai/clip-vit-base-patch16",
    "clip-vit-b32": "openai/clip-vit-base-patch32",
    "clip-vit-l14": "openai/clip-vit-large-patch14",
    "clip-vit-l14-336": "openai/clip-vit-large-patch14-336",
}

_CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)

# Buffers older checkpoints saved alongside the weights; not parameters.
_IGNORED_SUFFIXES = (".position_ids",)

_LINEAR = (1, 0)  # torch Linear (out, in) -> Flax Dense kernel (in, out)
_CONV = (2, 3, 1, 0)  # torch Conv2d (out, in, kh, kw) -> Flax Conv kernel (kh, kw, in, out)


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not match the configuration: lists every problem."""


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """One parameter: its Flax path, its Hugging Face name and the axis permutation between them
    (``flax = hf.transpose(perm)``; ``None`` keeps the layout)."""

    path: tuple[str, ...]
    hf_name: str
    perm: tuple[int, ...] | None = None


def _layer_norm(path: tuple[str, ...], hf: str) -> list[WeightSpec]:
    return [WeightSpec((*path, "scale"), f"{hf}.weight"), WeightSpec((*path, "bias"), f"{hf}.bias")]


def _linear(path: tuple[str, ...], hf: str, bias: bool = True) -> list[WeightSpec]:
    specs = [WeightSpec((*path, "kernel"), f"{hf}.weight", _LINEAR)]
    if bias:
        specs.append(WeightSpec((*path, "bias"), f"{hf}.bias"))
    return specs


def _encoder(tower: str, hf: str, num_layers: int) -> list[WeightSpec]:
    specs = []
    for i in range(num_layers):
        block, layer = (tower, f"blocks_{i}"), f"{hf}.encoder.layers.{i}"
        specs += _layer_norm((*block, "ln_1"), f"{layer}.layer_norm1")
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            specs += _linear((*block, "attn", proj), f"{layer}.self_attn.{proj}")
        specs += _layer_norm((*block, "ln_2"), f"{layer}.layer_norm2")
        specs += _linear((*block, "mlp", "fc1"), f"{layer}.mlp.fc1")
        specs += _linear((*block, "mlp", "fc2"), f"{layer}.mlp.fc2")
    return specs


def weight_specs(config: ClipConfig) -> list[WeightSpec]:
    """Every parameter of ``transformers.CLIPModel`` with its place in the Flax tree."""
    v, t = "vision_model", "text_model"
    specs = [
        WeightSpec(
            ("vision", "patch_embed", "kernel"), f"{v}.embeddings.patch_embedding.weight", _CONV
        ),
        WeightSpec(("vision", "class_embedding"), f"{v}.embeddings.class_embedding"),
        WeightSpec(("vision", "pos_embed"), f"{v}.embeddings.position_embedding.weight"),
        *_layer_norm(("vision", "ln_pre"), f"{v}.pre_layrnorm"),
        *_encoder("vision", v, config.vision.num_hidden_layers),
        *_layer_norm(("vision", "ln_post"), f"{v}.post_layernorm"),
        *_linear(("vision", "proj"), "visual_projection", bias=False),
        WeightSpec(("text", "token_embed", "embedding"), f"{t}.embeddings.token_embedding.weight"),
        WeightSpec(("text", "pos_embed"), f"{t}.embeddings.position_embedding.weight"),
        *_encoder("text", t, config.text.num_hidden_layers),
        *_layer_norm(("text", "ln_final"), f"{t}.final_layer_norm"),
        *_linear(("text", "proj"), "text_projection", bias=False),
        WeightSpec(("logit_scale",), "logit_scale"),
    ]
    return specs


def _hf_shape(flax_shape: tuple[int, ...], perm: tuple[int, ...] | None) -> tuple[int, ...]:
    if perm is None:
        return tuple(flax_shape)
    shape = [0] * len(perm)
    for axis, source in enumerate(perm):
        shape[source] = flax_shape[axis]
    return tuple(shape)


def _get_path(tree: Mapping, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def expected_hf_shapes(config: ClipConfig) -> dict[str, tuple[int, ...]]:
    """``{hf_name: shape}`` of a ``transformers.CLIPModel`` state dict (no buffers)."""
    shapes = jax.eval_shape(ClipModel(config).init, jax.random.key(0))
    return {
        spec.hf_name: _hf_shape(_get_path(shapes, spec.path).shape, spec.perm)
        for spec in weight_specs(config)
    }


def hf_to_flax(
    state_dict: Mapping[str, Any], config: ClipConfig, dtype: Any = jnp.float32
) -> PyTree:
    """Converts a ``CLIPModel`` state dict to the Flax parameter tree.

    Args:
      state_dict: ``{hf_name: array}`` (numpy, jax or anything ``jnp.asarray`` takes).
      config: the model configuration.
      dtype: dtype of the returned parameters.

    Returns:
      ``{'vision': ..., 'text': ..., 'logit_scale': ...}``.

    Raises:
      CheckpointMismatchError: listing every missing, unexpected and mis-shaped weight (with the
        checkpoint's and the expected shape). ``*.position_ids`` buffers are ignored.
    """
    specs = weight_specs(config)
    expected = expected_hf_shapes(config)
    missing = [name for name in expected if name not in state_dict]
    unexpected = [
        name for name in state_dict if name not in expected and not name.endswith(_IGNORED_SUFFIXES)
    ]
    misshaped = [
        f"{name}: checkpoint {tuple(np.shape(state_dict[name]))}, expected {shape}"
        for name, shape in expected.items()
        if name in state_dict and tuple(np.shape(state_dict[name])) != shape
    ]
    if missing or unexpected or misshaped:
        lines = ["checkpoint does not match the CLIP configuration:"]
        for title, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", misshaped),
        ):
            if names:
                lines.append(f"  {title} ({len(names)}):")
                lines += [f"    {n}" for n in names]
        raise CheckpointMismatchError("\n".join(lines))

    params: dict = {}
    for spec in specs:
        # numpy on the host: eager jnp ops would compile once per distinct shape.
        value = np.asarray(state_dict[spec.hf_name])
        if spec.perm is not None:
            value = np.transpose(value, spec.perm)
        _set_path(params, spec.path, jnp.asarray(value.astype(dtype)))
    return params


def flax_to_hf(params: PyTree, config: ClipConfig) -> dict[str, np.ndarray]:
    """Inverse of :func:`hf_to_flax`: a ``CLIPModel`` state dict of numpy arrays."""
    out = {}
    for spec in weight_specs(config):
        value = np.asarray(_get_path(params, spec.path))
        if spec.perm is not None:
            value = np.transpose(value, np.argsort(spec.perm))
        out[spec.hf_name] = np.array(value, order="C")  # keeps 0-d arrays 0-d
    return out


# ----------------------------------------------------------------------------- reading files


def _damaged(path: Path, err: Exception) -> ValueError:
    return ValueError(
        f"{path}: cannot read the weights ({err}); the file may be truncated or damaged "
        "(an interrupted download or copy): fetch it again"
    )


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        # The "flax" framework reads bfloat16, which numpy cannot.
        with safe_open(str(path), framework="flax") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise _damaged(path, err) from err


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"{path} is a PyTorch pickle: reading it needs torch "
            "(pip install 'rest_jax[convert]'), or convert the checkpoint to model.safetensors"
        ) from err
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as err:  # torch's errors for a damaged archive
        raise _damaged(path, err) from err
    return {
        name: (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()
        for name, t in state.items()
    }


def read_state_dict(directory: str | Path) -> dict[str, Any]:
    """The weights of a checkpoint directory, as ``{hf_name: array}``.

    Looks for, in order: ``model.safetensors``, ``model.safetensors.index.json`` (shards),
    ``pytorch_model.bin`` (needs torch).

    Raises:
      FileNotFoundError: no weights file.
      ValueError: a weights file (or the shard index) that cannot be read, naming it.
    """
    directory = Path(directory)
    single = directory / "model.safetensors"
    if single.is_file():
        return _read_safetensors(single)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        raw = read_json(index)
        weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: expected a JSON object with a 'weight_map' object")
        shards = sorted(set(weight_map.values()))
        state: dict[str, Any] = {}
        for shard in shards:
            state.update(_read_safetensors(directory / shard))
        return state
    pickle = directory / "pytorch_model.bin"
    if pickle.is_file():
        return _read_torch_bin(pickle)
    raise FileNotFoundError(
        f"no weights in {directory}: expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin"
    )


def read_config(directory: str | Path) -> ClipConfig:
    """:class:`ClipConfig` from ``directory/config.json``.

    Raises:
      FileNotFoundError: no config.json.
      ValueError: config.json is not valid JSON or not a CLIP configuration (naming the file).
    """
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a Hugging Face checkpoint directory")
    raw = read_json(path)
    try:
        return ClipConfig.from_hf_dict(raw)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a CLIP configuration ({err})") from err


# ----------------------------------------------------------------------------- names and loading


def resolve_checkpoint(
    name_or_path: str | Path, allow_download: bool = False, cache_dir: str | Path | None = None
) -> Path:
    """A local checkpoint directory for a path, a short name or a Hugging Face repository id.

    Args:
      name_or_path: an existing directory; a name from :data:`CHECKPOINTS`; or ``"org/repo"``.
      allow_download: fetch from the Hugging Face Hub (``huggingface_hub.snapshot_download``)
        when the files are not already in the local cache. Off by default: nothing touches the
        network unless asked.
      cache_dir: Hugging Face cache directory (default: the hub's own).

    Returns:
      The checkpoint directory.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; expected a checkpoint directory")
    name = str(name_or_path)
    repo_id = CHECKPOINTS.get(name, name if name.count("/") == 1 else None)
    if repo_id is None:
        raise ValueError(
            f"{name!r} is neither a directory nor a known checkpoint name "
            f"({', '.join(sorted(CHECKPOINTS))}) nor a Hugging Face repository id"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ImportError(
            f"resolving {name!r} needs huggingface_hub (pip install 'rest_jax[convert]'); "
            "or pass a local checkpoint directory"
        ) from err
    kwargs = dict(repo_id=repo_id, cache_dir=cache_dir, allow_patterns=list(_CHECKPOINT_FILES))
    try:
        return Path(snapshot_download(local_files_only=True, **kwargs))
    except Exception as err:  # huggingface_hub raises several types for "not cached"
        if not allow_download:
            raise FileNotFoundError(
                f"{repo_id} is not in the local Hugging Face cache; pass allow_download=True "
                "to fetch it, or a local checkpoint directory"
            ) from err
    directory = Path(snapshot_download(**kwargs))
    if not any(directory.glob("*.safetensors")):
        # Repositories without safetensors weights: fall back to the PyTorch pickle.
        directory = Path(
            snapshot_download(
                repo_id=repo_id, cache_dir=cache_dir, allow_patterns=["pytorch_model.bin"]
            )
        )
    return directory


def load_clip(
    name_or_path: str | Path, dtype: Any = jnp.float32, allow_download: bool = False
) -> tuple[ClipConfig, PyTree, PreprocessInfo]:
    """Loads a Hugging Face CLIP checkpoint.

    Args:
      name_or_path: see :func:`resolve_checkpoint`.
      dtype: dtype of the returned parameters. For bf16 compute keep float32 parameters and pass
        ``dtype=jnp.bfloat16`` to the model/encoders instead.
      allow_download: see :func:`resolve_checkpoint`.

    Returns:
      ``(config, params, preprocess_info)``; the tokenizer is :func:`load_tokenizer` on the
      same directory.
    """
    directory = resolve_checkpoint(name_or_path, allow_download=allow_download)
    config = read_config(directory)
    params = hf_to_flax(read_state_dict(directory), config, dtype)
    info = load_preprocess_info(directory, config.vision.image_size)
    return config, params, info
