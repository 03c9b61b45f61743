"""Training one lab model: the project's T5X decoder_only network, next-token loss on the
world's text, AdamW with linear warm-up and cosine decay (optax), on CPU in seconds."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from invscale_jax.lab.config import ModelSpec, TrainConfig
from invscale_jax.lab.world import World
from invscale_jax.models.config import ModelConfig
from invscale_jax.models.model import Model, Params


def model_config(spec: ModelSpec, vocab_size: int) -> ModelConfig:
  """The T5X decoder_only config of `spec` (float32, tied embeddings, gated GELU)."""
  return ModelConfig(architecture="decoder_only", vocab_size=vocab_size, emb_dim=spec.emb_dim,
                     num_heads=spec.num_heads, head_dim=spec.head_dim, mlp_dim=spec.mlp_dim,
                     num_layers=spec.num_layers, logits_via_embedding=True, dtype="float32")


def schedule(config: TrainConfig, steps: int) -> optax.Schedule:
  """Learning rate of step s (from 0): lr * (s + 1) / W for the first W = round(warmup *
  steps) steps, then a cosine from lr down to final_lr * lr at the last step."""
  warmup = max(1, int(round(config.warmup * steps)))
  def rate(step):
    t = jnp.clip((step + 1 - warmup) / max(1, steps - warmup), 0.0, 1.0)
    cosine = config.final_lr + (1 - config.final_lr) * 0.5 * (1 + jnp.cos(jnp.pi * t))
    return config.lr * jnp.where(step + 1 < warmup, (step + 1) / warmup, cosine)
  return rate


def optimizer(config: TrainConfig, steps: int) -> optax.GradientTransformation:
  return optax.adamw(schedule(config, steps), b1=config.b1, b2=config.b2, eps=config.eps,
                     weight_decay=config.weight_decay)


def loss_fn(model: Model, params: Params, tokens: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy of rows `tokens` [B, L] (every position predicts the next)."""
  logits = model.network.apply({"params": params}, tokens[:, :-1])
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1).mean()


def train_step_fn(model: Model, tx: optax.GradientTransformation) -> Callable:
  """(params, opt_state, tokens) -> (params, opt_state, loss), jitted."""
  def step(params, opt_state, tokens):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(model, p, tokens))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return jax.jit(step, donate_argnums=(0, 1))


def train(world: World, spec: ModelSpec, config: TrainConfig, index: int,
          on_step: Callable[[int, float], None] = lambda step, loss: None
          ) -> tuple[Model, Params, float]:
  """Trains model `spec` (the family's `index`-th: its initialisation seed); returns the
  model, its parameters and the mean loss of the last 10% of steps."""
  model = Model(model_config(spec, len(world.tokens)))
  params = model.init(jax.random.PRNGKey(config.seed * 1000 + index))
  tx = optimizer(config, spec.steps)
  opt_state = tx.init(params)
  step_fn = train_step_fn(model, tx)
  tail = []
  for step in range(spec.steps):
    tokens = jnp.asarray(world.batch(config.seed, step, config.batch, config.length))
    params, opt_state, loss = step_fn(params, opt_state, tokens)
    if step >= spec.steps - max(1, spec.steps // 10):
      tail.append(loss)
    on_step(step, float(loss) if step % 25 == 0 or step == spec.steps - 1 else float("nan"))
  params = jax.tree.map(np.asarray, params)
  return model, params, float(np.mean([float(x) for x in tail]))
