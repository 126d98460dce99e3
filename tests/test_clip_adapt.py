"""The CLIP towers plug into the core step: a few rest steps move only the adapted LayerNorms."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from test_clip import random_inputs, random_params, tiny_config

import rest_jax
from rest_jax.models import CLIP_IMAGE_ADAPT_RULES, CLIP_TEXT_ADAPT_RULES, ClipModel
from rest_jax.selection import path_to_str


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_rest_steps_on_clip_change_only_adapted_params(tower):
    config = tiny_config()
    params = random_params(config)
    images, texts = random_inputs(config, 12, 12)
    model = ClipModel(config)
    embed = jax.jit(model.embed)  # one program, not a tower's worth of op-by-op dispatches
    if tower == "vision":
        encoder, rules, queries = model.image_encoder(), CLIP_IMAGE_ADAPT_RULES, images
        gallery = embed({"text": params["text"]}, texts=texts)["text"]
    else:
        encoder, rules, queries = model.text_encoder(), CLIP_TEXT_ADAPT_RULES, texts
        gallery = embed({"vision": params["vision"]}, images=images)["image"]
    tower_params = params[tower]
    adapter = rest_jax.Adapter.create(
        encoder,
        tower_params,
        gallery,
        config=rest_jax.preset("rest", num_candidates=2, learning_rate=1e-2),
        rules=rules,
        source=(queries[:6], gallery[:6]),
    )
    result = rest_jax.run_stream(adapter, rest_jax.batches_from_array(queries, 6))
    after = adapter.params(result.final_state)
    selected = {p for p, _ in adapter.selection.paths}
    moved = set()
    for (path, before), now in zip(
        jax.tree_util.tree_leaves_with_path(tower_params), jax.tree.leaves(after), strict=True
    ):
        name = path_to_str(path)
        if name in selected:
            if not np.array_equal(np.asarray(before), np.asarray(now)):
                moved.add(name)
        else:
            assert np.array_equal(np.asarray(before), np.asarray(now)), name
    assert moved == selected
    assert all("ln" in name for name in selected)
    if tower == "text":
        assert not any("ln_final" in name for name in selected)
    assert np.all(np.isfinite(result.scores))
