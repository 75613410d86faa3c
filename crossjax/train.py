"""The one trainer: `train_and_evaluate(config, workdir)` for every experiment.

It owns the mesh, the jitted train and eval steps, the optimizer, logging, evaluation
and checkpoints, and knows nothing about particular models or losses: those come from
the registries by the names in the config.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

import crossjax
from crossjax import augment, param_groups, sharding
from crossjax.checkpoint import Checkpoints, WorkdirLock, restore_experiment_state
from crossjax.compilation_cache import enable_compilation_cache
from crossjax.config import config_to_dict, validate_config
from crossjax.data.pipeline import DataPipeline
from crossjax.data.spec import dummy_batch
from crossjax.errors import ConfigError, CrossjaxError
from crossjax.evaluators import EvalContext, evaluator_requirements, parse_evaluators
from crossjax.losses import LossContext, build_loss
from crossjax.metric_writer import MetricWriter
from crossjax.metrics.classification import (
    accuracy_from_confusion,
    confusion_matrix,
    macro_f1_from_confusion,
)
from crossjax.models import build_model
from crossjax.models.state import split_variables
from crossjax.requirements import check_requirements

log = logging.getLogger(__name__)
_NO_NONFINITE = np.iinfo(np.int32).max


@flax.struct.dataclass
class TrainState:
    """What a run carries from step to step (and saves in its checkpoints).

    model_state: the model's variable collections other than `params` ({"batch_stats":
    ...} for BatchNorm), updated by the forward pass of the train step, not by the
    optimizer; {} for models without such state.
    """

    step: jax.Array  # () int32: number of updates applied
    params: Any
    opt_state: Any
    model_state: Any = flax.struct.field(default_factory=dict)


def build_optimizer(config: ml_collections.ConfigDict, num_train_steps: int):
    """Optax chain from `config.optimizer`: global-norm clipping + adamw/adam/sgd + schedule,
    learning rates decayed by layer (`layer_decay`), and no update for the `frozen`
    parameters (crossjax.param_groups)."""
    opt = config.optimizer
    if opt.schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            0.0,
            opt.learning_rate,
            max(1, opt.warmup_steps),
            max(opt.warmup_steps + 1, num_train_steps),
        )
    elif opt.schedule == "constant":
        lr = optax.join_schedules(
            [
                optax.linear_schedule(0.0, opt.learning_rate, max(1, opt.warmup_steps)),
                optax.constant_schedule(opt.learning_rate),
            ],
            [max(1, opt.warmup_steps)],
        )
    else:
        raise CrossjaxError(f"optimizer.schedule={opt.schedule!r}; valid: cosine, constant")
    if opt.name == "adamw":
        core = optax.adamw(lr, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)
    elif opt.name == "adam":
        core = optax.adam(lr, b1=opt.b1, b2=opt.b2)
    elif opt.name == "sgd":
        core = optax.sgd(lr, momentum=opt.b1)
    else:
        raise CrossjaxError(f"optimizer.name={opt.name!r}; valid: adam, adamw, sgd")
    if opt.name != "adamw" and opt.weight_decay:
        # As torch.optim's Adam and SGD apply it: wd * param added to the gradient before
        # the moments (an L2 penalty); adamw's is decoupled from them.
        core = optax.chain(optax.add_decayed_weights(opt.weight_decay), core)
    parts = [optax.clip_by_global_norm(opt.grad_clip_norm)] if opt.grad_clip_norm else []
    parts.append(core)
    if opt.get("layer_decay", 1.0) != 1.0:
        parts.append(param_groups.scale_by_layer_decay(opt.layer_decay))
    # Frozen parameters are outside the chain: clipping sees only the trainable gradients.
    frozen = param_groups.parse_frozen(opt.get("frozen", ()))
    return param_groups.freeze(optax.chain(*parts), frozen)


def open_data(config: ml_collections.ConfigDict, workdir: Path) -> DataPipeline:
    """The run's DataPipeline. With several processes, process 0 goes first (it may
    generate the dataset and writes the vocabulary) and the others then reuse its files."""

    def build() -> DataPipeline:
        return DataPipeline(
            config.data,
            batch_size=config.batch_size,
            seed=config.seed,
            vocab_path=workdir / "vocab.json",
        )

    if jax.process_count() == 1:
        return build()
    from jax.experimental import multihost_utils

    data = build() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("crossjax: dataset and vocabulary ready")
    return data or build()


def make_mesh(config: ml_collections.ConfigDict):
    """The run's (data[, model]) mesh from `num_devices` and `model_parallel`."""
    return sharding.make_mesh(config.get("num_devices", 0) or None, config.get("model_parallel", 1))


# The training augmentation's key: the step's key folded with this (the model's and the
# loss's keys are split from the step's key, so the streams are independent).
AUGMENT_STREAM = 0x61756720


def training_augmentation(setting, spec) -> dict | None:
    """`data.augment` as {modality: settings} (None: no augmentation); ConfigError for an
    unknown strength, setting or a modality the dataset does not have."""
    if setting is None or setting == {}:
        return None
    try:
        settings = augment.resolve_settings(setting)
    except ConfigError as e:
        raise ConfigError(f"data.augment: {e}") from None
    if not isinstance(setting, str):
        missing = sorted(set(settings) - set(spec.modalities))
        if missing:
            raise ConfigError(
                f"data.augment names {missing[0]!r}, which this dataset does not have; its "
                f"modalities: {', '.join(spec.modalities)}"
            )
    chosen = {m: v for m, v in settings.items() if m in spec.modalities}
    if not chosen:
        raise ConfigError(
            f"data.augment={setting!r} augments images and audio; this dataset has neither "
            f"(its modalities: {', '.join(spec.modalities)}); set data.augment=None"
        )
    return chosen


def _rngs(seed: int, step: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
    """Model rng streams and a loss rng for `step`: one key folded with the step."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    dropout, sample, loss = jax.random.split(key, 3)
    return {"dropout": dropout, "sample": sample}, loss


class Experiment:
    """The jitted pieces of one run: init, train step and eval step, built once."""

    def __init__(self, config: ml_collections.ConfigDict, data: DataPipeline, mesh):
        self.config = config
        self.data = data
        self.mesh = mesh
        self.model = build_model(config.model, data.spec)
        self.loss_fn = build_loss(config.losses)
        self.tx = build_optimizer(config, config.num_train_steps)
        self.frozen = param_groups.parse_frozen(config.optimizer.get("frozen", ()))
        self.seed = config.seed
        self.num_classes = data.spec.num_classes
        self.grad_accum = config.get("grad_accum_steps", 1)
        self.augment = training_augmentation(config.data.get("augment"), data.spec)
        # Traced once: the shardings, the restore target and the checks all read it.
        self._state_shapes = jax.eval_shape(self._init)
        self.state_sharding = sharding.state_shardings(
            self._state_shapes,
            mesh,
            param_sharding=config.get("param_sharding", "replicated"),
            min_size=config.get("fsdp_min_size", 2**14),
        )
        self.init = jax.jit(self._init, out_shardings=self.state_sharding)
        self.train_step = jax.jit(self._train_step, donate_argnums=(0, 2))
        self.eval_step = jax.jit(self._eval_step, donate_argnums=(2,))
        self.predict = jax.jit(self._predict)
        self.evaluators = parse_evaluators(config.get("evaluators", ()))

    # -- state ----------------------------------------------------------------------------
    def _init(self) -> TrainState:
        key = jax.random.key(self.seed)
        params_key, dropout, sample = jax.random.split(key, 3)
        batch = jax.tree.map(jnp.asarray, dummy_batch(self.data.spec, 1))
        variables = self.model.init(
            {"params": params_key, "dropout": dropout, "sample": sample}, batch, train=False
        )
        params, model_state = split_variables(variables)
        return TrainState(jnp.zeros((), jnp.int32), params, self.tx.init(params), model_state)

    def abstract_state(self):
        """The TrainState as ShapeDtypeStructs with the run's shardings (nothing computed)."""
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            self._state_shapes,
            self.state_sharding,
        )

    @functools.cached_property
    def _train_metric_shapes(self):
        """The loss metrics' shapes, traced once (not at every log step)."""
        return jax.eval_shape(
            lambda s, b: self._loss(s.params, b, s.step, s.model_state)[1][0],
            self.abstract_state(),
            self._abstract_batch(),
        )

    def empty_train_metrics(self):
        metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), self._train_metric_shapes)
        acc = {
            "sum": metrics,
            "steps": jnp.zeros((), jnp.int32),
            "first_nonfinite": jnp.full((), _NO_NONFINITE, jnp.int32),
            "grad_norm": jnp.zeros((), jnp.float32),  # of the last logged step
        }
        return jax.device_put(acc, sharding.replicated(self.mesh))

    def _abstract_batch(self):
        b = dummy_batch(self.data.spec, self.config.batch_size)
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), b)

    # -- train ----------------------------------------------------------------------------
    def _apply_with_state(self, params, model_state, batch, *, train: bool, rngs):
        """(outputs, model_state): in training mode the state collections are mutable and
        come back updated (BatchNorm's running statistics); otherwise read-only, unchanged."""
        # Frozen parameters get zero gradients, and a frozen input tower no backward pass.
        params = param_groups.stop_frozen_gradients(params, self.frozen)
        # The mesh tells models how the batch is split (crossjax.models.conv.data_shards).
        with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
            variables = {"params": params, **(model_state or {})}
            if train and model_state:
                return self.model.apply(
                    variables, batch, train=True, rngs=rngs, mutable=list(model_state)
                )
            return self.model.apply(variables, batch, train=train, rngs=rngs), model_state

    def _apply(self, params, batch, *, train: bool, rngs, model_state=None):
        """Outputs only: updates of the model state are dropped (extra forward passes)."""
        return self._apply_with_state(params, model_state, batch, train=train, rngs=rngs)[0]

    def _forward(self, params, model_state, batch, step, micro=None):
        """(outputs, updated model_state) in training mode and the loss rng of `step`
        (micro-batch `micro`: its own model randomness; the loss rng stays the step's for
        batch-level losses)."""
        rngs, loss_rng = _rngs(self.seed, step)
        if micro is not None:  # distinct randomness per micro-batch of an accumulated step
            rngs = {k: jax.random.fold_in(v, micro) for k, v in rngs.items()}
        forward = functools.partial(self._apply_with_state, train=True, rngs=rngs)
        if self.config.get("remat", False):  # recompute activations in the backward pass
            forward = jax.checkpoint(forward)
        outputs, model_state = forward(params, model_state, batch)
        return outputs, model_state, loss_rng

    def _loss_ctx(
        self, params, step, rng, mask=None, *, extra_passes: bool = True, model_state=None
    ):
        if extra_passes:
            # A loss's extra forward passes read the model state but never update it:
            # only the step's own forward pass moves BatchNorm statistics.
            def apply_fn(b, *, train, rngs):
                return self._apply(params, b, train=train, rngs=rngs, model_state=model_state)

        else:

            def apply_fn(b, *, train, rngs):
                raise ConfigError(
                    "a batch-level loss calls ctx.apply_fn, so grad_accum_steps > 1 cannot "
                    "reproduce its full-batch gradient; set grad_accum_steps=1"
                )

        return LossContext(step=step, rng=rng, mask=mask, apply_fn=apply_fn, mesh=self.mesh)

    def _loss(self, params, batch, step, model_state=None):
        """(total, (metrics, updated model_state)) of one whole batch: the masked mean of
        every loss term."""
        outputs, new_state, loss_rng = self._forward(params, model_state, batch, step)
        ctx = self._loss_ctx(params, step, loss_rng, _all_rows(batch), model_state=model_state)
        loss, metrics = self.loss_fn(outputs, batch, ctx)
        return loss, (metrics, new_state)

    def _grads(self, params, batch, step, model_state=None):
        """Loss, metrics and gradients of the batch (see `_grads_and_state`)."""
        return self._grads_and_state(params, batch, step, model_state)[:3]

    def _grads_and_state(self, params, batch, step, model_state=None):
        """Loss, metrics, gradients and updated model state of the batch, over
        `grad_accum_steps` micro-batches.

        Micro-batch i holds examples i, i+k, i+2k, ... so each stays split over the data
        axis. The result equals the full batch's (up to float summation order):
        - per-example losses: each micro-batch adds its weighted sums, divided by the
          whole batch's row counts (so masks that differ between micro-batches are exact);
        - batch-level losses (open_clip's `accum_freq`): every micro-batch's outputs are
          computed first without gradients; then each micro-batch's gradient is that of
          the whole batch's loss with its own rows recomputed live and the others cached.
        Model state (BatchNorm statistics) is updated micro-batch by micro-batch, in order
        0..k-1, each micro-batch normalised by its own batch statistics, as k small steps
        of a framework without accumulation would (the batch-level path updates it in the
        cached pass; its live recomputation reads the same batch statistics and its
        updates are dropped).
        """
        k = self.grad_accum
        if k == 1:
            (loss, (metrics, model_state)), grads = jax.value_and_grad(self._loss, has_aux=True)(
                params, batch, step, model_state
            )
            return loss, metrics, grads, model_state
        micro = jax.tree.map(lambda x: _to_micro(x, k), batch)
        if self.loss_fn.per_example_only:
            return self._accumulate_per_example(params, model_state, batch, micro, step)
        return self._accumulate_batch_level(params, model_state, batch, micro, step)

    def _micro_loop(self, body, init, xs):
        # XLA:CPU runs convolutions inside a loop body 10-50x slower than outside it
        # (shapes_clip at 2 micro-batches: 401 vs 35 ms a step), so on CPU the loop is
        # unrolled; elsewhere it stays a loop, which bounds activation memory.
        on_cpu = self.mesh.devices.flat[0].platform == "cpu"
        return jax.lax.scan(body, init, xs, unroll=on_cpu)

    def _accumulate_per_example(self, params, model_state, batch, micro, step):
        k = self.grad_accum
        weights = self.loss_fn.term_weights(batch, _all_rows(batch))
        counts = {name: jnp.sum(w) for name, w in weights.items()}

        def micro_loss(p, ms, mb, i):
            outputs, new_state, loss_rng = self._forward(p, ms, mb, step, i)
            ctx = self._loss_ctx(
                p, step, jax.random.fold_in(loss_rng, i), _all_rows(mb), model_state=ms
            )
            per_example = self.loss_fn.per_example(outputs, mb, ctx)
            sums = self.loss_fn.term_sums(per_example, self.loss_fn.term_weights(mb, ctx.mask))
            return self.loss_fn.finalize(sums, counts)[0], (sums, new_state)

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

        def body(carry, xs):
            i, mb = xs
            totals, ms = carry
            (_, (sums, ms)), grads = grad_fn(params, ms, mb, i)
            return (jax.tree.map(jnp.add, totals, (sums, grads)), ms), None

        (_, (sums, _)), grads = jax.eval_shape(
            grad_fn,
            params,
            model_state,
            jax.tree.map(lambda x: x[0], micro),
            jnp.zeros((), jnp.int32),
        )
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (sums, grads))
        ((sums, grads), model_state), _ = self._micro_loop(
            body, (zeros, model_state), (jnp.arange(k), micro)
        )
        loss, metrics = self.loss_fn.finalize(sums, counts)
        return loss, metrics, grads, model_state

    def _per_example_outputs(self, params, model_state, batch, micro, step) -> dict[str, bool]:
        """Which outputs hold one row per example: traced at the micro-batch size and at
        the full size, their leading axis follows the batch."""
        first = jax.tree.map(lambda x: x[0], micro)

        def outputs(p, b):
            return self._forward(p, model_state, b, step, 0)[0]

        small = jax.eval_shape(outputs, params, first)
        large = jax.eval_shape(outputs, params, batch)
        rows = jax.tree.leaves(first)[0].shape[0], jax.tree.leaves(batch)[0].shape[0]
        return {
            key: bool(small[key].shape[:1] == rows[:1] and large[key].shape[:1] == rows[1:])
            for key in small
        }

    def _cached_outputs(self, params, model_state, micro, step):
        """Every micro-batch's outputs without gradients, stacked: (k, b, ...) per key,
        and the model state updated by the micro-batches in order."""

        def body(ms, xs):
            i, mb = xs
            outputs, ms, _ = self._forward(params, ms, mb, step, i)
            return ms, jax.lax.stop_gradient(outputs)

        model_state, cached = self._micro_loop(
            body, model_state, (jnp.arange(self.grad_accum), micro)
        )
        return cached, model_state

    def _accumulate_batch_level(self, params, model_state, batch, micro, step):
        k = self.grad_accum
        rows = self._per_example_outputs(params, model_state, batch, micro, step)
        cached, new_state = self._cached_outputs(params, model_state, micro, step)

        def micro_loss(p, i):
            mb = jax.tree.map(lambda x: x[i], micro)
            live, _, loss_rng = self._forward(p, model_state, mb, step, i)
            outputs = {}
            for key, value in live.items():
                if rows[key]:  # this micro-batch's rows live, the others from the cache
                    stacked = jax.lax.dynamic_update_index_in_dim(cached[key], value, i, 0)
                    outputs[key] = _from_micro(stacked)
                elif jnp.issubdtype(value.dtype, jnp.inexact):
                    # Shared outputs (a temperature): the same value in every micro-batch,
                    # each contributing 1/k of its gradient.
                    outputs[key] = value / k + jax.lax.stop_gradient(value - value / k)
                else:
                    outputs[key] = value
            ctx = self._loss_ctx(p, step, loss_rng, _all_rows(batch), extra_passes=False)
            return self.loss_fn(outputs, batch, ctx)

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

        def body(carry, i):
            (loss, metrics), grads = grad_fn(params, i)
            return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

        (loss, metrics), grads = jax.eval_shape(grad_fn, params, jnp.zeros((), jnp.int32))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss, metrics, grads))
        (loss, metrics, grads), _ = self._micro_loop(body, zeros, jnp.arange(k))
        # Every micro-batch saw the same loss value; the gradients add up to the full one.
        return loss / k, jax.tree.map(lambda m: m / k, metrics), grads, new_state

    def _train_step(self, state: TrainState, batch, acc):
        if self.augment:  # data.augment: a fresh draw per example and step
            key = jax.random.fold_in(jax.random.key(self.seed), state.step)
            batch = augment.augment_batch(
                jax.random.fold_in(key, AUGMENT_STREAM), batch, self.augment
            )
        # The model state's update happens here, in the forward pass, not in the optimizer;
        # frozen towers (optimizer.frozen) keep their statistics too.
        loss, metrics, grads, model_state = self._grads_and_state(
            state.params, batch, state.step, state.model_state
        )
        model_state = param_groups.keep_frozen_state(state.model_state, model_state, self.frozen)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = param_groups.apply_updates(state.params, updates, self.frozen)
        # The global gradient norm is one more pass over every gradient (a sixth of an
        # MLP VAE step on CPU), so it is computed only at the steps the trainer logs;
        # `grad_norm` is that step's value, the other metrics the interval's mean.
        step = state.step + 1
        logged = (step % self.config.log_every == 0) | (step == self.config.num_train_steps)
        grad_norm = jax.lax.cond(
            logged,
            lambda g: optax.tree.norm(g).astype(jnp.float32),
            lambda g: jnp.zeros((), jnp.float32),
            grads,
        )
        acc = {
            "sum": jax.tree.map(lambda a, m: a + m.astype(jnp.float32), acc["sum"], metrics),
            "steps": acc["steps"] + 1,
            "first_nonfinite": jnp.where(
                jnp.isfinite(loss),
                acc["first_nonfinite"],
                jnp.minimum(acc["first_nonfinite"], step),
            ),
            "grad_norm": jnp.where(logged, grad_norm, acc["grad_norm"]),
        }
        return TrainState(step, params, opt_state, model_state), acc

    # -- eval -----------------------------------------------------------------------------
    def _predict(self, params, batch, model_state=None):
        """Outputs in eval mode; `model_state` (BatchNorm statistics) is read, never updated."""
        rngs, _ = _rngs(self.seed + 1, jnp.zeros((), jnp.int32))
        return self._apply(params, batch, train=False, rngs=rngs, model_state=model_state)

    def _eval_sums(self, params, batch, step, model_state=None):
        """Outputs, per-term weighted sums and row counts of one eval batch (its `valid`
        (B,) rows only; batch-level losses see `valid` as their mask)."""
        batch = dict(batch)
        valid = batch.pop("valid")
        outputs = self._predict(params, batch, model_state)
        _, loss_rng = _rngs(self.seed + 1, jnp.zeros((), jnp.int32))
        ctx = self._loss_ctx(params, step, loss_rng, valid, model_state=model_state)
        weights = self.loss_fn.term_weights(batch, valid)
        sums = self.loss_fn.term_sums(self.loss_fn.per_example(outputs, batch, ctx), weights)
        counts = {name: jnp.sum(w) for name, w in weights.items()}
        return outputs, sums, counts, valid

    def _eval_step(self, params, batch, acc, step, model_state=None):
        """Adds this batch's weighted loss sums and counts to `acc`. `step` (the training
        step evaluated) reaches the losses, so step-dependent weights such as a KL warm-up
        are those of the evaluated parameters."""
        outputs, sums, counts, valid = self._eval_sums(params, batch, step, model_state)
        new = {
            "sums": jax.tree.map(jnp.add, acc["sums"], sums),
            "counts": jax.tree.map(jnp.add, acc["counts"], counts),
            "count": acc["count"] + jnp.sum(valid.astype(jnp.float32)),
        }
        if "confusion" in acc:
            new["confusion"] = acc["confusion"] + confusion_matrix(
                outputs["logits"], batch["label"], self.num_classes, mask=valid
            )
        return new

    def _eval_global_batches(self, split: str):
        """One pass over `split` as global batches with a `valid` (B,) bool entry."""
        size = self.config.eval_batch_size or self.config.batch_size
        for local in self.data.eval_batches(size, split=split):
            yield sharding.to_global(local, self.mesh)

    def _eval_batches_for_evaluators(self, split: str):
        for batch in self._eval_global_batches(split):
            valid = sharding.to_host(batch.pop("valid"))
            yield batch, valid

    def evaluate(
        self,
        params,
        *,
        split: str = "validation",
        step: int = 0,
        writer: MetricWriter | None = None,
        workdir: Path | None = None,
        losses: bool = True,
        model_state: Any = None,
    ) -> dict[str, float]:
        """A full pass over `split` ("validation" or "test"): every loss metric is the
        mean over all of its examples, each counted once; then the evaluators named in
        `config.evaluators` on the same split. `losses=False` runs the evaluators alone
        (e.g. zero-shot on labelled images, which the contrastive loss cannot read).
        `model_state`: the train state's (BatchNorm statistics), None for models without one."""
        model_state = model_state or {}
        metrics = self._loss_metrics(params, split, step, model_state) if losses else {}
        ctx = EvalContext(
            config=self.config,
            spec=self.data.spec,
            params=params,
            model_state=model_state,
            step=step,
            workdir=workdir,
            writer=writer,
            predict=lambda b: self.predict(params, b, model_state),
            batches=functools.partial(self._eval_batches_for_evaluators, split),
            model=self.model,
            mesh=self.mesh,
            vocab=self.data.vocab,
            restore_run=functools.partial(restore_experiment_state, build=_build_experiment),
        )
        for _name, evaluator, kwargs in self.evaluators:
            for key, value in evaluator(ctx, **kwargs).items():
                metrics[key] = float(value)
        return metrics

    def _loss_metrics(self, params, split: str, step: int, model_state) -> dict[str, float]:
        acc = None
        for batch in self._eval_global_batches(split):
            if acc is None:
                acc = self._empty_eval_acc(params, batch, model_state)
            acc = self.eval_step(params, batch, acc, jnp.asarray(step, jnp.int32), model_state)
        if acc is None:
            raise CrossjaxError(f"the {split} split is empty; nothing to evaluate")
        acc = jax.device_get(acc)
        _, losses = self.loss_fn.finalize(acc["sums"], acc["counts"])
        metrics = {k: float(v) for k, v in losses.items()}
        if "confusion" in acc:
            metrics["accuracy"] = accuracy_from_confusion(acc["confusion"])
            metrics["macro_f1"] = macro_f1_from_confusion(acc["confusion"])
        metrics["num_examples"] = float(acc["count"])
        return metrics

    def _empty_eval_acc(self, params, batch, model_state):
        outputs, sums, counts, _ = jax.eval_shape(
            self._eval_sums, params, batch, jnp.zeros((), jnp.int32), model_state
        )
        zeros = functools.partial(jax.tree.map, lambda s: jnp.zeros(s.shape, jnp.float32))
        acc = {"sums": zeros(sums), "counts": zeros(counts), "count": jnp.zeros((), jnp.float32)}
        if "logits" in outputs and "label" in batch and self.num_classes:
            acc["confusion"] = jnp.zeros((self.num_classes, self.num_classes), jnp.int32)
        return jax.device_put(acc, sharding.replicated(self.mesh))

    # -- checks ---------------------------------------------------------------------------
    def check_requirements(self) -> None:
        """Before the first step: what every loss and evaluator declares it reads against
        the data's batch keys and the model's outputs (one abstract trace), and one
        abstract trace of the losses; a ConfigError names every mismatch in one line."""
        outputs = jax.eval_shape(
            lambda s, b: self._predict(s.params, b, s.model_state),
            self.abstract_state(),
            self._abstract_batch(),
        )
        problems = []
        for owners, split in (
            (self.loss_fn.requirements(), "train"),  # losses read training batches
            (evaluator_requirements(self.evaluators), "validation"),  # evaluators eval ones
        ):
            try:
                check_requirements(owners, self.data.batch_keys(split), set(outputs))
            except ConfigError as e:
                problems.append(str(e))
        if problems:
            raise ConfigError("; ".join(problems))
        self._train_metric_shapes  # noqa: B018 - traces the losses (and caches the shapes)


def _build_experiment(config: ml_collections.ConfigDict, workdir: Path) -> Experiment:
    """The Experiment of another run's saved `config` (a coherence judge), its data and mesh."""
    return Experiment(config, open_data(config, workdir), make_mesh(config))


def _all_rows(batch) -> jax.Array:
    """(B,) True: a training batch has no padding."""
    return jnp.ones(jax.tree.leaves(batch)[0].shape[:1], bool)


def _to_micro(x: jax.Array, k: int) -> jax.Array:
    """(B, ...) -> (k, B/k, ...): micro-batch i holds rows i, i+k, i+2k, ..."""
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def _from_micro(x: jax.Array) -> jax.Array:
    """The inverse of `_to_micro`: (k, B/k, ...) -> (B, ...) in the batch's row order."""
    return jnp.swapaxes(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


class StartupTimes:
    """Seconds of a run's fixed start-up cost by phase, logged as one line before the
    second step: imports (from `import crossjax`: JAX, Flax, the data libraries and the
    flags; the first run of a process only), data (opening the dataset, the hold-out and
    the vocabulary), init (model, optimizer, checks, checkpoints, the initial or restored
    state), train data (the training split preprocessed into memory where it is cached)
    and compile (the first train step: compiled, or loaded from the persistent
    compilation cache)."""

    _imports_counted = False  # the imports happen once per process: the first run counts them

    def __init__(self):
        self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        if not StartupTimes._imports_counted:
            StartupTimes._imports_counted = True
            self.seconds["imports"] = self._last - crossjax.IMPORTED_AT
        self.cache_dir = ""

    def mark(self, phase: str) -> None:
        """Ends `phase` now (it began when the previous phase ended)."""
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now

    def log(self) -> None:
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        cache = f"compilation cache {self.cache_dir}" if self.cache_dir else "no compilation cache"
        log.info("start-up: %s (%s)", phases, cache)


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks, so preemption saves a checkpoint."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    on_step: Callable[[int], None] | None = None,
    restore_step: int | str = "latest",
) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates.

    Returns {"validation": metrics, "test": metrics}, or {"preempted_at_step": step}
    when SIGTERM/SIGINT stopped the run (its checkpoint saved; a rerun continues).
    `restore_step` ("latest", "best" or a step) resumes from an older checkpoint; the
    newer ones are deleted at the next save. `on_step(step)` is called on the host after
    each step is dispatched (a hook for tests and tools; it must not block).
    """
    startup = StartupTimes()
    validate_config(config)
    startup.cache_dir = enable_compilation_cache(config.get("compilation_cache_dir", "auto"))
    if not (restore_step in ("latest", "best") or _is_step(restore_step)):
        raise ConfigError(f"--restore_step={restore_step!r}; use latest, best or a step number")
    workdir_path = Path(workdir)
    try:
        workdir_path.mkdir(parents=True, exist_ok=True)
        # One probe file per process: processes sharing the workdir must not remove each
        # other's (that race made a multi-host run fail at start-up).
        probe = workdir_path / f".write_test.{jax.process_index()}"
        probe.touch()
        probe.unlink(missing_ok=True)
    except OSError as e:
        raise CrossjaxError(
            f"cannot write workdir {workdir} ({e.strerror}); choose another --workdir"
        ) from None

    # One lock per run: process 0 holds it for every process of a multi-host job.
    lock = WorkdirLock(workdir_path) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock, _StopRequest() as stop:
        mesh = make_mesh(config)
        sharding.check_batch_size(config.batch_size, mesh, config.get("grad_accum_steps", 1))
        data = open_data(config, workdir_path)
        startup.mark("data")
        exp = Experiment(config, data, mesh)
        writer = MetricWriter(workdir_path)
        ckpts = Checkpoints(
            workdir_path / "checkpoints",
            save_every=config.checkpoint_every,
            keep=config.keep_checkpoints,
            best_metric=config.best_metric or None,
            best_mode=config.best_mode,
        )
        try:
            return _run(
                config, exp, data, ckpts, writer, workdir_path, stop, on_step, restore_step, startup
            )
        except OSError as e:  # disk full or a read-only folder while writing the run
            where = f" {e.filename}" if e.filename else f" in {workdir}"
            raise CrossjaxError(
                f"cannot write{where} ({e.strerror or e}); free space or fix permissions, "
                "then rerun to continue from the last checkpoint"
            ) from None
        finally:
            ckpts.close()
            writer.close()


def _run(
    config,
    exp: Experiment,
    data,
    ckpts,
    writer,
    workdir: Path,
    stop,
    on_step,
    restore_step,
    startup: StartupTimes,
):
    config_dict = config_to_dict(config)
    exp.check_requirements()  # fails here, before the first step, not after training
    latest = ckpts.latest_step()
    if latest is not None or restore_step != "latest":
        restored = ckpts.restore(exp.abstract_state(), restore_step)
        state, start = restored.state, restored.step
        if restore_step != "latest" and (newer := ckpts.supersede_after(start)):
            log.warning(
                "Resuming from step %d; newer checkpoints %s will be replaced", start, newer
            )
        _warn_config_changes(restored.config, config_dict)
        data_state = restored.data_state
        log.info("Resumed from step %d in %s", start, workdir)
    else:
        state, start, data_state = exp.init(), 0, None
    startup.mark("init")
    train_iter = data.global_train_batches(exp.mesh, data_state)
    startup.mark("train data")
    if stop.signal is not None:  # a signal during start-up: stop before the first step
        return _preempted(stop, start, ckpts)

    def write_config() -> None:
        # config.json describes the checkpoints: a rerun rewrites it only when it saves one.
        if jax.process_index() == 0:
            (workdir / "config.json").write_text(json.dumps(config_dict, indent=2))

    def save(step: int, metrics, *, force: bool) -> None:
        if not bool(
            _all_finite((state.params, state.model_state))
        ):  # finite losses, but the update diverged
            _raise_non_finite("the parameters", step, ckpts, diverged=step)
        started = ckpts.save(
            step,
            state=state,
            data_state=train_iter.get_state(),
            config=config_dict,
            metrics=metrics,
            force=force,
        )
        if started:
            write_config()

    if latest is None:
        write_config()
    # Records of the steps this run replays (or of a finished run's final evaluation,
    # which a rerun repeats) are written again below; drop the old ones.
    writer.discard_after(
        start, including=("validation", "test") if start >= config.num_train_steps else ()
    )
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    log.info(
        "Model %s: %d parameters; %d train / %d validation / %d test examples",
        config.model.name,
        num_params,
        data.num_examples["train"],
        data.num_examples["validation"],
        data.num_examples["test"],
    )

    total = config.num_train_steps
    acc = exp.empty_train_metrics()
    eval_metrics: dict[str, float] | None = None

    def evaluate(split: str = "validation") -> dict[str, float]:
        """An evaluation pass of the current state and step: validation (periodic and
        final) or, once at the end, test."""
        return exp.evaluate(
            state.params,
            split=split,
            step=step,
            writer=writer,
            workdir=workdir,
            model_state=state.model_state,
        )

    bar = tqdm(
        total=total,
        initial=start,
        unit="step",
        disable=jax.process_index() != 0,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    last_log_time, last_log_step = time.perf_counter(), start
    step = start
    while step < total:
        batch = next(train_iter)
        state, acc = exp.train_step(state, batch, acc)
        if step == start:  # the first call compiled the step (or loaded it from the cache)
            startup.mark("compile")
            startup.log()
        step += 1
        bar.update(1)
        if on_step is not None:
            on_step(step)
        is_log = step % config.log_every == 0 or step == total
        is_eval = bool(config.eval_every) and step % config.eval_every == 0 and step < total
        preempted = stop.signal is not None
        if is_log or is_eval or ckpts.should_save(step) or preempted:
            acc = _check_finite(acc, ckpts)
        if is_log:
            host = jax.device_get(acc)
            steps = max(int(host["steps"]), 1)
            metrics = {k: float(v) / steps for k, v in host["sum"].items()}
            metrics["grad_norm"] = float(host["grad_norm"])
            now = time.perf_counter()
            metrics["steps_per_s"] = (step - last_log_step) / max(now - last_log_time, 1e-9)
            last_log_time, last_log_step = now, step
            writer.write_scalars(step, "train", metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            acc = exp.empty_train_metrics()
        if is_eval:
            eval_metrics = evaluate()
            writer.write_scalars(step, "validation", eval_metrics)
        if (ckpts.should_save(step) and step < total) or preempted:  # the last save follows eval
            save(step, eval_metrics if is_eval else None, force=preempted)
        if preempted:
            bar.close()
            return _preempted(stop, step, ckpts)
    bar.close()

    def save_final(metrics):
        # Always attempted: a final checkpoint that failed to restore was superseded and
        # is replaced here (an intact one of this step is kept as it is).
        save(step, metrics, force=True)
        ckpts.wait_until_finished()

    # The trained state is kept even when the final evaluation fails (the pre-flight
    # check makes that rare): then the final checkpoint is saved without metrics.
    try:
        validation = evaluate()
    except BaseException:
        save_final(None)
        raise
    writer.write_scalars(step, "validation", validation)
    save_final(validation)  # ranked on validation, like every checkpoint before it
    # The test split is read once, here, after training and checkpoint selection.
    test = evaluate("test")
    writer.write_scalars(step, "test", test)
    return {"validation": validation, "test": test}


def _preempted(stop, step: int, ckpts) -> dict[str, float]:
    ckpts.wait_until_finished()
    log.warning(
        "Stopped by signal %d at step %d (its checkpoint saved); rerun to continue",
        stop.signal,
        step,
    )
    return {"preempted_at_step": float(step)}


def _check_finite(acc, ckpts=None):
    """Raises when a step since the last check had a non-finite loss."""
    first = int(jax.device_get(acc["first_nonfinite"]))
    if first != _NO_NONFINITE:
        # The state saved at step s gave the loss of step s + 1: one saved at `first - 1`
        # already holds the parameters that produced the non-finite loss.
        _raise_non_finite("loss", first, ckpts, diverged=first - 1)
    return acc


@jax.jit
def _all_finite(tree) -> jax.Array:
    """() bool: every float leaf of `tree` is finite (checked before each save)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _raise_non_finite(what: str, step: int, ckpts, *, diverged: int) -> None:
    """A CrossjaxError naming the newest checkpoint saved before step `diverged` (the
    first whose state is not finite), to restore with --restore_step."""
    steps = []
    if ckpts is not None:
        ckpts.wait_until_finished()  # a save still in flight counts
        steps = ckpts.steps()
    finite = [s for s in steps if s < diverged]
    if finite:
        advice = (
            f"the last checkpoint before it is step {finite[-1]}: rerun with "
            f"--restore_step={finite[-1]} and"
        )
    else:
        advice = "no checkpoint precedes it: rerun in a new --workdir with"
    raise CrossjaxError(
        f"{what} became non-finite at step {step}; {advice} a lower "
        "optimizer.learning_rate or optimizer.grad_clip_norm set"
    )


def _is_step(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _warn_config_changes(saved: dict, current: dict) -> None:
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        log.warning("Config differs from the checkpoint's in: %s", ", ".join(changed))
