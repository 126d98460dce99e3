"""A tiny LayerNorm query encoder and a random gallery, for tests."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp


def layer_norm(h, scale, bias, eps=1e-5):
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + eps) * scale + bias


def toy_apply(params, x):
    """x (B, d_in) -> dense -> LayerNorm (adapted) -> dense -> features (B, d)."""
    h = jnp.tanh(x @ params["embed"]["kernel"])
    h = layer_norm(h, params["ln"]["scale"], params["ln"]["bias"])
    return h @ params["head"]["kernel"]


def toy_params(key, d_in=8, width=16, dim=6, dtype=jnp.float32):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "embed": {"kernel": jax.random.normal(k1, (d_in, width), dtype) / jnp.sqrt(d_in)},
        "ln": {
            "scale": 1.0 + 0.1 * jax.random.normal(k3, (width,), dtype),
            "bias": 0.1 * jax.random.normal(k4, (width,), dtype),
        },
        "head": {"kernel": jax.random.normal(k2, (width, dim), dtype) / jnp.sqrt(width)},
    }


def toy_problem(seed=0, n_gallery=12, n_queries=20, d_in=8, dim=6, dtype=jnp.float32):
    """Params, a gallery near the clean queries' embeddings, and shifted queries."""
    key = jax.random.PRNGKey(seed)
    kp, kx, kn, ks = jax.random.split(key, 4)
    params = toy_params(kp, d_in=d_in, dim=dim, dtype=dtype)
    clean = jax.random.normal(kx, (n_gallery, d_in), dtype)
    gallery = toy_apply(params, clean) + 0.3 * jax.random.normal(kn, (n_gallery, dim), dtype)
    picks = jnp.arange(n_queries) % n_gallery
    queries = clean[picks] * 1.5 + 0.8 + 0.2 * jax.random.normal(ks, (n_queries, d_in), dtype)
    return params, gallery, queries, clean


def tiny_vision_config(image_size=32, **overrides):
    """A 2-layer, width-32 CLIP image tower with 8 px patches (``overrides``: any field)."""
    from rest_jax.models import VisionConfig

    fields = dict(
        image_size=image_size,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    return VisionConfig(**{**fields, **overrides})


def tiny_text_config(**overrides):
    """A 2-layer, width-24 causal CLIP text tower over 100 ids, 16 positions, start 98, end 99,
    pad 0 (``overrides``: any field)."""
    from rest_jax.models import TextConfig

    fields = dict(
        vocab_size=100,
        max_position_embeddings=16,
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        bos_token_id=98,
        eos_token_id=99,
        pad_token_id=0,
    )
    return TextConfig(**{**fields, **overrides})


def write_word_level_tokenizer(directory, words, pad_token="[UNK]"):
    """Writes a word-level ``tokenizer.json`` (words[0] = start, words[1] = end of text)."""
    import json

    import tokenizers

    tok = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    )
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single=f"{words[0]} $A {words[1]}",
        special_tokens=[(words[0], 0), (words[1], 1)],
    )
    tok.save(str(directory / "tokenizer.json"))
    (directory / "special_tokens_map.json").write_text(json.dumps({"pad_token": pad_token}))


def write_tiny_world_source(directory, image_size=16, n_eval=48):
    """A random-weight source-model directory for a tiny SynthWorld (no training): width 32,
    one layer, its own subword tokenizer; ``training.json`` records the world."""
    import jax
    import numpy as np

    from experiments import training
    from rest_jax import pretrained
    from rest_jax.data.subword import SubwordTokenizer
    from rest_jax.data.synthworld import WorldConfig, generate_split
    from rest_jax.data.tokenizer import EOT_ID, SOT_ID
    from rest_jax.models import ClipModel

    world = WorldConfig(image_size=image_size, n_train=64, n_validation=n_eval, n_test=n_eval)
    tokenizer = SubwordTokenizer.train(generate_split(world, "train", 0)["captions"], 300)
    model_cfg = training.SourceModelConfig(width=32, layers=1, max_text_len=40)
    config = training.world_clip_config(model_cfg, image_size, tokenizer.vocab_size, SOT_ID, EOT_ID)
    params = jax.tree.map(np.asarray, training.init_params(ClipModel(config), 0))
    record = {"world": world.to_dict(), "validation_clean_r1": None, "final_loss": None}
    return pretrained.save_world_source(directory, config, params, tokenizer, record)


# A tiny audio-visual world and a two-tower that fits it: 2 frames of 8 px, 0.1 s of audio
# at 16 kHz (8 log-mel frames of 16 bins).
TINY_AV_WORLD = dict(frames=2, image_size=8, seconds=0.1, n_train=64, n_val=24, n_test=24)


def tiny_av_config():
    from rest_jax.models import AudioConfig, AVConfig, VideoConfig

    return AVConfig(
        video=VideoConfig(frames=2, image_size=8, patch_size=4, width=16, layers=1, heads=2),
        audio=AudioConfig(
            mel_bins=16, time_frames=8, patch_size=(4, 8), width=16, layers=1, heads=2,
            num_samples=1600, mel_mean=-5.0, mel_std=3.0,
        ),
        projection_dim=8,
    )  # fmt: skip


def write_tiny_av_source(directory):
    """A random-weight audio-visual source directory for the tiny world (no training);
    ``training.json`` records the world, as ``experiments.train_av_source`` does."""
    import jax
    import numpy as np

    from experiments import training
    from rest_jax import pretrained
    from rest_jax.data.avworld import AVWorldConfig
    from rest_jax.models import AudioVisualModel

    config = tiny_av_config()
    params = jax.tree.map(np.asarray, training.init_params(AudioVisualModel(config), 0))
    record = {"world": AVWorldConfig(**TINY_AV_WORLD).to_dict(), "validation": None}
    return pretrained.save_av_source(directory, config, params, record)


@contextlib.contextmanager
def run_dir_held_by_another_process(run):
    """A child process that holds ``RunDir(run)``'s lock while the block runs (yields it)."""
    import subprocess
    import sys

    code = (
        "import sys, time; from experiments.run_dir import RunDir\n"
        "with RunDir(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
