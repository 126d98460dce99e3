"""An eager PyTorch step with TCR semantics, written from docs/method.md (sections 0-3).

It is the baseline that ``experiments/bench_gpu/`` times against rest_jax's jitted step:
the same work per batch as rest_jax's ``tcr`` preset, done the way a PyTorch user would do it
(eager, one kernel launch per op, Python control flow). Per batch, ``steps`` times:

  q = normalize(f_theta(x)),  S = Q G^T,  n(i) = argmax_j S_ij,  g_hat_i = G[n(i)]
  Z = Q G_hat^T / tau,  H_i = entropy(softmax(Z_i))                     (section 1, K = 1)
  step 0 of the first W batches: bank <- the int(rho B) smallest-SI pairs, keep M smallest
  E = max H over the bank,  m = ||mean normalize(q_bank) - mean normalize(g_bank)||  (section 2)
  L = L_REM(H, E) + L_UNI(Q) + L_GAP(Q, G_hat, m)                       (section 3)
  AdamW step on the query tower's LayerNorm affine parameters

and the batch's scores are S from the last step's forward (computed before its update).
An empty reliable set gives L_REM = 0 (rest_jax's choice; the reference code yields NaN
without a gradient there). Nothing here imports JAX: the module runs in a torch-only process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# TCR's adapted sets (docs/method.md section 0), as Hugging Face parameter names.
IMAGE_LAYERNORMS = re.compile(
    r"^vision_model\.(pre_layrnorm|post_layernorm|encoder\.layers\.\d+\.layer_norm[12])"
    r"\.(weight|bias)$"
)
TEXT_LAYERNORMS = re.compile(r"^text_model\.encoder\.layers\.\d+\.layer_norm[12]\.(weight|bias)$")
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclasses.dataclass(frozen=True)
class TcrHyper:
    """TCR's constants (docs/method.md sections 0-3); field names follow AdaptConfig."""

    steps: int = 3
    refinement_temperature: float = 0.02
    bank_size: int = 64
    bank_ratio: float = 0.3
    bank_batches: int = 10
    uniformity_scale: float = 0.1
    rem_eps: float = 1e-3
    rem_weight: float = 1.0
    uniformity_weight: float = 1.0
    gap_weight: float = 1.0
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4


class QueryTower(nn.Module):
    """A Hugging Face CLIP tower with projection as ``inputs -> (B, d)`` unnormalised features.

    ``modality`` "image": ``CLIPVisionModelWithProjection`` on NCHW pixel values;
    "text": ``CLIPTextModelWithProjection`` on (B, L) token ids.
    """

    def __init__(self, tower: nn.Module, modality: str):
        super().__init__()
        if modality not in ("image", "text"):
            raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
        self.tower = tower
        self.modality = modality

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.modality == "image":
            return self.tower(pixel_values=inputs).image_embeds
        return self.tower(input_ids=inputs).text_embeds


def build_query_tower(
    hf_config: dict[str, Any], modality: str, *, seed: int = 0, device: str = "cpu"
) -> QueryTower:
    """A randomly initialised query tower in eval mode (no download).

    Args:
      hf_config: ``transformers.CLIPConfig`` keyword arguments (``ClipConfig.to_hf_dict()``).
      modality: "image" or "text".
      seed: torch seed of the random initialisation.
      device: where the tower lives.
    """
    from transformers import CLIPConfig, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    if modality not in ("image", "text"):
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    config = CLIPConfig(**hf_config)
    # The towers read projection_dim from their own sub-config (default 512).
    config.vision_config.projection_dim = config.projection_dim
    config.text_config.projection_dim = config.projection_dim
    torch.manual_seed(seed)
    if modality == "image":
        tower = CLIPVisionModelWithProjection(config.vision_config)
    else:
        tower = CLIPTextModelWithProjection(config.text_config)
    return QueryTower(tower, modality).to(device).eval()


def adapt_layernorms(model: QueryTower) -> list[torch.Tensor]:
    """Freezes the tower except TCR's LayerNorm affine parameters; returns those, in order."""
    pattern = IMAGE_LAYERNORMS if model.modality == "image" else TEXT_LAYERNORMS
    adapted = []
    for name, param in model.tower.named_parameters():
        keep = bool(pattern.match(name))
        param.requires_grad_(keep)
        if keep:
            adapted.append(param)
    if not adapted:
        raise ValueError("no LayerNorm parameter matched the adapted set")
    return adapted


def make_optimizer(params: list[torch.Tensor], hyper: TcrHyper = TcrHyper()) -> torch.optim.AdamW:
    """AdamW(lr, betas (0.9, 0.999), eps 1e-8, decoupled weight decay), docs/method.md section 0."""
    return torch.optim.AdamW(
        params,
        lr=hyper.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=hyper.weight_decay,
    )


class AnchorBank:
    """TCR's source-like bank (docs/method.md sec. 2): growing tensors, at most ``size`` entries."""

    def __init__(self, size: int, dim: int, *, device="cpu", dtype=torch.float32):
        if size < 1:
            raise ValueError(f"bank size must be >= 1, got {size}")
        self.size = size
        self.score = torch.zeros(0, device=device, dtype=dtype)
        self.query = torch.zeros(0, dim, device=device, dtype=dtype)
        self.positive = torch.zeros(0, dim, device=device, dtype=dtype)
        self.entropy = torch.zeros(0, device=device, dtype=dtype)

    def __len__(self) -> int:
        return self.score.shape[0]

    def insert(self, score, query, positive, entropy, ratio: float) -> None:
        """Adds the int(ratio * B) smallest-SI pairs, then keeps the ``size`` smallest SI
        (stable: on ties, older entries first)."""
        count = int(ratio * score.shape[0])
        new = torch.argsort(score, stable=True)[:count]
        scores = torch.cat([self.score, score[new]])
        keep = torch.argsort(scores, stable=True)[: self.size]
        self.score = scores[keep]
        self.query = torch.cat([self.query, query[new]])[keep]
        self.positive = torch.cat([self.positive, positive[new]])[keep]
        self.entropy = torch.cat([self.entropy, entropy[new]])[keep]

    def threshold(self) -> torch.Tensor:
        """E = max entropy over the bank (-inf when empty)."""
        if len(self) == 0:
            return torch.tensor(float("-inf"), device=self.score.device, dtype=self.score.dtype)
        return self.entropy.max()

    def margin(self) -> torch.Tensor:
        """m = ||mean normalize(q) - mean normalize(g)|| over the bank (0 when empty)."""
        if len(self) == 0:
            return torch.zeros((), device=self.score.device, dtype=self.score.dtype)
        gap = F.normalize(self.query, dim=-1).mean(0) - F.normalize(self.positive, dim=-1).mean(0)
        return gap.norm()


def reliability(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """SI_i = 2 ||q_i - g_i|| - ||q_i - mean(Q)|| - ||g_i - mean(G)|| (docs/method.md eq. (2.1))."""
    return 2 * (q - g).norm(dim=-1) - (q - q.mean(0)).norm(dim=-1) - (g - g.mean(0)).norm(dim=-1)


def tcr_loss(q, positives, bank: AnchorBank, entropy, hyper: TcrHyper):
    """L = l_rem L_REM + l_uni L_UNI + l_gap L_GAP (docs/method.md (3.1)); returns (loss, |M|)."""
    threshold = bank.threshold()
    reliable = entropy.detach() <= threshold
    weights = torch.clamp(1 - entropy.detach() / (threshold + hyper.rem_eps), min=0)
    count = reliable.sum()
    rem = (weights * entropy)[reliable].sum() / count.clamp(min=1)
    uni = torch.exp(-hyper.uniformity_scale * (q - q.mean(0)).norm(dim=-1)).mean()
    gap_now = (F.normalize(q, dim=-1).mean(0) - F.normalize(positives, dim=-1).mean(0)).norm()
    gap = (gap_now - bank.margin()) ** 2
    loss = hyper.rem_weight * rem + hyper.uniformity_weight * uni + hyper.gap_weight * gap
    return loss, count


def tcr_step_torch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    bank: AnchorBank,
    inputs: torch.Tensor,
    gallery: torch.Tensor,
    *,
    batch_index: int,
    hyper: TcrHyper = TcrHyper(),
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
    """One batch of online TCR adaptation, eagerly (module docstring; docs/method.md secs. 1-3).

    Args:
      model: the query tower, ``model(inputs) -> (B, d)`` features; only the parameters in
        ``optimizer`` change.
      optimizer: AdamW over the adapted parameters (:func:`make_optimizer`).
      bank: the anchor bank, updated in place at step 0 of the first ``bank_batches`` batches.
      inputs: the batch (pixel values NCHW or token ids (B, L)), on the model's device.
      gallery: (N, d) L2-normalised gallery embeddings (float32 or float64).
      batch_index: how many batches came before this one.
      hyper: the constants.
      autocast_dtype: run the tower's forward under ``torch.autocast`` with this dtype
        (features are cast back to the gallery's dtype for the losses).

    Returns:
      ``(scores (B, N) of the last step's forward, metrics of the last step)``.
    """
    scores = None
    metrics: dict[str, float | torch.Tensor] = {}
    device_type = gallery.device.type
    for step in range(hyper.steps):
        autocast = (
            torch.autocast(device_type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            features = model(inputs)
        q = F.normalize(features.to(gallery.dtype), dim=-1)
        scores = q @ gallery.T
        with torch.no_grad():
            positives = gallery[scores.argmax(dim=1)]
        logits = q @ positives.T / hyper.refinement_temperature
        log_p = torch.log_softmax(logits, dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1)
        if step == 0 and batch_index < hyper.bank_batches:
            q_const = q.detach()
            bank.insert(
                reliability(q_const, positives),
                q_const,
                positives,
                entropy.detach(),
                hyper.bank_ratio,
            )
        loss, num_reliable = tcr_loss(q, positives, bank, entropy, hyper)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        metrics = {"loss": loss.detach(), "num_reliable": num_reliable}
    return scores.detach(), metrics


@contextlib.contextmanager
def precision_mode(precision: str):
    """Sets torch's TF32 switches for ``precision`` ("fp32", "tf32" or "bf16") and restores them.

    fp32: full float32 matmuls and convolutions. tf32: TF32 tensor cores for float32.
    bf16: TF32 allowed for what runs outside autocast (the caller autocasts the tower).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    allow = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield torch.bfloat16 if precision == "bf16" else None
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
