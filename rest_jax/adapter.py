"""A few-line entry point: wrap a query encoder and a gallery into a jitted online adapter.

    adapter = Adapter.create(apply_fn, params, gallery, config=preset("rest"),
                             source=(clean_inputs, clean_targets))
    state = adapter.init_state()
    for batch in stream:
        state, out = adapter.step(state, batch)   # checked on the host, then jitted

Reset = ``adapter.init_state()`` (a fresh copy of the kept initial pytrees).

A Flax NNX model is an encoder too: ``Adapter.create(model, gallery, ...)`` (or
``Adapter.create((graphdef, state), gallery, ...)``), and ``adapter.module(state)`` is the
adapted model (rest_jax/nnx_encoder.py).

Every batch is checked on the host before the jitted call (rest_jax/validation.py): its
inputs against the input spec (given as ``input_spec=`` or recorded from the first batch;
the first check also runs the encoder abstractly, ``jax.eval_shape``, to compare its feature
dimension with the gallery's) and its mask.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rest_jax import methods
from rest_jax.config import AdaptConfig
from rest_jax.decoupling import contrastive_reference
from rest_jax.guards import init_guard
from rest_jax.numerics import l2_normalize
from rest_jax.retrieval import put_on_mesh, replicated
from rest_jax.selection import (
    LAYERNORM_RULES,
    Rule,
    Selection,
    combine,
    partition,
    path_to_str,
    select,
)
from rest_jax.step import (
    AdaptState,
    StepOutputs,
    StreamConstants,
    make_optimizer,
    make_step,
    needs_reference,
)
from rest_jax.validation import (
    check_batch,
    check_encoder_output,
    check_gallery,
    check_source,
    input_spec_of,
)

PyTree = Any
log = logging.getLogger("rest_jax")


def _copy(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _row_sharding(mesh, rows: int, what: str):
    """Splits the leading axis over the mesh's (single) axis; the rows must divide evenly."""
    from jax.sharding import NamedSharding, PartitionSpec

    (axis,) = mesh.axis_names
    if rows % mesh.shape[axis]:
        raise ValueError(
            f"the {what} size {rows} is not a multiple of the {mesh.shape[axis]} mesh devices"
        )
    return NamedSharding(mesh, PartitionSpec(axis))


@dataclasses.dataclass(eq=False)
class Adapter:
    """A configured online adapter (see module docstring).

    Every field is fixed at creation but one: ``input_spec``, when not given to
    :meth:`create`, is recorded once, from the first batch that passes :meth:`check`
    (so that later batches are checked against it), and never changed after.

    Attributes:
      config: the run's configuration.
      selection: which parameters are adapted (logged at creation).
      constants: frozen params, gallery, initial state and source pairs.
      step_fn: the jitted ``step(state, batch, constants)``; state is donated. It does no
        input check: call :meth:`step`, or :meth:`check` first.
      apply_fn: the query encoder (for the abstract output check).
      mesh: the device mesh given at creation, if any.
      graphdef: the ``nnx.GraphDef`` of an NNX encoder (None for an ``apply_fn``).
      input_spec: the expected inputs (per leaf, shape without the batch dim and dtype);
        None until given or recorded.
    """

    config: AdaptConfig
    selection: Selection
    constants: StreamConstants
    step_fn: Callable[..., tuple[AdaptState, StepOutputs]]
    apply_fn: Callable[[PyTree, Any], jax.Array] | None = None
    mesh: Any = None
    graphdef: Any = None
    input_spec: Any = None

    @classmethod
    def create(
        cls,
        apply_fn: Callable[[PyTree, Any], jax.Array] | Any,
        params: PyTree = None,
        gallery: Any = None,
        *,
        config: AdaptConfig,
        rules: Sequence[Rule] | None = None,
        source: tuple[Any, Any] | None = None,
        seed: int = 0,
        input_spec: Any = None,
        mesh: Any = None,
    ) -> Adapter:
        """Builds the adapter: ``create(apply_fn, params, gallery, ...)`` for a function and its
        parameter pytree, ``create(model, gallery, ...)`` for an ``nnx.Module`` (or its
        ``(graphdef, state)``, from ``nnx.split``), called as ``model(inputs)``.

        Args:
          apply_fn: query encoder ``apply_fn(params, inputs) -> (B, d)`` features; or an
            ``nnx.Module`` / ``(graphdef, state)`` pair, and then the next argument is the
            gallery.
          params: the encoder's parameters (any pytree); for an NNX encoder, its
            ``nnx.State`` is the pytree.
          gallery: (N, d) gallery embeddings (normalised here).
          config: an :class:`AdaptConfig` (see :func:`rest_jax.preset`).
          rules: parameter path rules choosing the adapted set (first match wins). Default
            (None): :data:`rest_jax.LAYERNORM_RULES` and, for an NNX encoder, every
            ``nnx.LayerNorm`` / ``nnx.RMSNorm`` by type.
          source: optional clean ``(inputs, gallery_embeddings)`` pairs for the decoupling
            reference r (required when ``config.decoupling`` or
            ``config.record_reference_cosine``; r is computed only then, see
            :func:`rest_jax.step.needs_reference`).
          seed: seed of the PRNG key carried in the state.
          input_spec: optional pytree of ``jax.ShapeDtypeStruct`` (one per input leaf, shape
            WITHOUT the batch dimension); default: recorded from the first batch.
          mesh: optional 1-D ``jax.sharding.Mesh`` (e.g. ``rest_jax.gallery_mesh()``):
            the gallery is split along N over its axis and each batch along B (data parallel),
            the state is replicated on every device; the same jitted step runs on 1 device
            or many, XLA inserting the collectives.

        Raises:
          ValueError / TypeError: unknown method, bad gallery or source, K larger than the
            gallery, an encoder whose feature dimension differs from the gallery's, rules
            that select nothing, missing arguments.
        """
        apply_fn, params, gallery, graphdef, rules = _encoder(apply_fn, params, gallery, rules)
        gallery = l2_normalize(jnp.asarray(check_gallery(gallery, config)))
        if mesh is not None:
            gallery = put_on_mesh(gallery, _row_sharding(mesh, gallery.shape[0], "gallery"))
        selection = select(params, rules)
        if not selection.paths:
            paths = [path_to_str(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
            raise ValueError(
                f"the parameter rules select no parameter to adapt among {len(paths)} leaves "
                f"({', '.join(paths[:6])}{', ...' if len(paths) > 6 else ''}); pass "
                f"rules=[(regex, True)] matching the paths of the parameters to adapt"
            )
        log.info("adapted parameters:\n%s", selection.describe())
        adapted, frozen = partition(params, selection.mask)
        reference = None
        source_inputs = source_targets = None
        if source is not None:
            source_inputs, source_targets = check_source(source, gallery.shape[1])
        if source is not None and needs_reference(config):
            reference = contrastive_reference(
                apply_fn,
                adapted,
                frozen,
                source_inputs,
                source_targets,
                config.reference_temperature,
            )
        optimizer = make_optimizer(config, reference)
        method = methods.get(config.method)
        initial = AdaptState(
            adapted=adapted,
            opt_state=optimizer.init(adapted),
            method_state=method.init(
                config, dim=gallery.shape[1], dtype=gallery.dtype, num_gallery=gallery.shape[0]
            ),
            batch_index=jnp.zeros((), jnp.int32),
            key=jax.random.PRNGKey(seed),
            num_rollbacks=jnp.zeros((), jnp.int32),
            num_collapse_resets=jnp.zeros((), jnp.int32),
            num_nonfinite_rows=jnp.zeros((), jnp.int32),
            guard=init_guard(),
        )
        if mesh is not None:
            initial = put_on_mesh(initial, replicated(mesh))
        constants = StreamConstants(frozen, gallery, initial, source_inputs, source_targets)
        step_fn = jax.jit(make_step(apply_fn, config, optimizer, mesh), donate_argnums=0)
        adapter = cls(
            config=config,
            selection=selection,
            constants=constants,
            step_fn=step_fn,
            apply_fn=apply_fn,
            mesh=mesh,
            graphdef=graphdef,
        )
        if input_spec is not None:
            adapter._record_spec(input_spec)
        return adapter

    def _record_spec(self, spec: Any) -> None:
        """Sets ``input_spec`` after checking the encoder's output on it abstractly."""
        probe = jax.tree.map(lambda s: jax.ShapeDtypeStruct((2, *s.shape), s.dtype), spec)
        if self.apply_fn is not None:
            try:
                out = jax.eval_shape(self.apply_fn, self.params(self.constants.initial), probe)
            except Exception as error:  # the encoder's own shape error, with our context
                raise ValueError(
                    f"the query encoder cannot take inputs of shape/dtype "
                    f"{jax.tree.map(lambda s: (s.shape, str(s.dtype)), spec)} (per row): {error}"
                ) from error
            shape = getattr(out, "shape", None)
            if shape is None:
                raise ValueError(f"the query encoder must return one (B, d) array, got {out}")
            check_encoder_output(shape, 2, self.constants.gallery.shape[1])
        self.input_spec = spec

    def check(self, batch: dict, index: int | None = None) -> dict:
        """Host-side checks of one batch (rest_jax/validation.py); returns ``{inputs, mask}``.

        The first checked batch sets the input spec when none was given.
        """
        spec = self.input_spec
        checked = check_batch(batch, spec, nonfinite=self.config.nonfinite_inputs, index=index)
        if spec is None:
            self._record_spec(input_spec_of(checked["inputs"]))
        return checked

    def init_state(self) -> AdaptState:
        """A fresh copy of the initial state (safe to donate)."""
        return _copy(self.constants.initial)

    def step(
        self, state: AdaptState, batch: dict, *, index: int | None = None
    ) -> tuple[AdaptState, StepOutputs]:
        """One batch: ``batch = {"inputs": (B, ...), "mask": (B,) bool}``, checked first.

        ``index`` (the batch's stream position) only labels error messages.
        """
        return self.step_fn(state, self.place(self.check(batch, index)), self.constants)

    def place(self, batch: dict) -> dict:
        """Puts a checked batch on the device(s): split along B over the mesh axis when the
        adapter has a mesh (data parallel), as is otherwise.

        With several processes (``jax.distributed``), every process passes the same global
        batch and keeps the rows of its own devices.
        """
        if self.mesh is None:
            return batch
        rows = batch["mask"].shape[0]
        return put_on_mesh(batch, _row_sharding(self.mesh, rows, "batch"))

    def params(self, state: AdaptState) -> PyTree:
        """The full parameter tree (adapted and frozen) of a state (an ``nnx.State`` for an
        NNX encoder: ``nnx.update(model, adapter.params(state))`` adapts ``model`` in place)."""
        return combine(state.adapted, self.constants.frozen)

    def module(self, state: AdaptState) -> Any:
        """The NNX encoder with a state's parameters: a new ``nnx.Module`` (``nnx.merge``).

        Raises:
          TypeError: the adapter was created from an ``apply_fn`` and a params pytree (use
            :meth:`params`).
        """
        if self.graphdef is None:
            raise TypeError(
                "adapter.module() needs an adapter created from an nnx.Module; this one has an "
                "apply_fn and a params pytree: use adapter.params(state)"
            )
        from flax import nnx

        return nnx.merge(self.graphdef, self.params(state))


def _encoder(encoder: Any, params: PyTree, gallery: Any, rules: Sequence[Rule] | None):
    """``(apply_fn, params, gallery, graphdef, rules)`` from :meth:`Adapter.create`'s arguments,
    for either calling form (a function with its params, or an NNX model)."""
    from rest_jax import nnx_encoder  # imports flax.nnx: here, not with rest_jax

    if nnx_encoder.is_nnx(encoder):
        if params is not None and gallery is not None:
            raise TypeError(
                "an NNX encoder is called as Adapter.create(model, gallery, ...): its state "
                "holds the parameters"
            )
        graphdef, state = nnx_encoder.split(encoder)
        if rules is None:
            rules = nnx_encoder.layernorm_rules(graphdef, state) + LAYERNORM_RULES
        gallery = params if gallery is None else gallery
        return nnx_encoder.apply_fn(graphdef), state, gallery, graphdef, rules
    if not callable(encoder):
        raise TypeError(
            f"the encoder must be a function apply_fn(params, inputs) or an nnx.Module, got "
            f"{type(encoder).__name__}"
        )
    if params is None or gallery is None:
        raise TypeError("Adapter.create(apply_fn, params, gallery, ...) needs all three")
    return encoder, params, gallery, None, LAYERNORM_RULES if rules is None else rules


def pad_batch(inputs: Any, batch_size: int) -> dict:
    """Pads a short batch to ``batch_size`` rows (copies of row 0) and returns it with its mask."""
    n = jax.tree.leaves(inputs)[0].shape[0]
    if n < 1 or n > batch_size:
        raise ValueError(f"a batch must have 1..{batch_size} rows, got {n}")

    def pad(x):
        x = np.asarray(x)
        filler = np.repeat(x[:1], batch_size - n, axis=0)
        return np.concatenate([x, filler], axis=0)

    mask = np.arange(batch_size) < n
    return {"inputs": jax.tree.map(pad, inputs), "mask": mask}
