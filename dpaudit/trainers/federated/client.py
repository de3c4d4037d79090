"""The Flower ``ClientApp`` of a federation: real clients train locally, canary clients push a direction.

Partition ids ``0..n_real-1`` are real clients, handled by a :class:`ClientTrainer`
(:class:`TorchClientTrainer` fine-tunes the model on the client's records; tests
may plug in a cheaper one); the ids after them are the *included* update
canaries (:mod:`.canaries`). Only the trainable arrays travel (LoRA adapters
alone in LoRA mode), as a Flower ``ArrayRecord`` keyed by parameter name; a reply
carries ``num-examples`` (1: DP-FedAvg weights clients equally) and
``train-loss``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from dpaudit.config import TrainConfig
from dpaudit.trainers.data import EncodedExamples, collate, derive_seed
from dpaudit.trainers.federated.canaries import UpdateCanaries, canary_direction

__all__ = ["ClientTrainer", "TorchClientTrainer", "make_client_app"]

_STREAM_LOCAL = 11


class ClientTrainer(Protocol):
    """Local training of real client ``client`` in round ``server_round``."""

    def train(
        self,
        client: int,
        server_round: int,
        arrays: Mapping[str, np.ndarray],
        config: Mapping[str, Any],
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]: ...


def make_client_app(
    trainer: ClientTrainer, *, n_real: int, canaries: UpdateCanaries | None = None
) -> ClientApp:
    """A ``ClientApp`` whose train handler dispatches on ``context.node_config["partition-id"]``."""
    included = [k for k, c in enumerate(canaries.included) if c] if canaries else []
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        record = msg.content.array_records["arrays"]
        arrays = {k: np.asarray(v.numpy()) for k, v in record.items()}
        config: dict[str, Any] = dict(msg.content.config_records["config"])
        server_round = int(config["server-round"])
        if pid < n_real:
            new, metrics = trainer.train(pid, server_round, arrays, config)
        else:
            assert canaries is not None
            k = included[pid - n_real]
            u = canary_direction(k, {key: a.shape for key, a in arrays.items()}, seed=canaries.seed)
            new = {key: arrays[key] + canaries.norm * u[key] for key in arrays}
            metrics = {}
        reply = RecordDict(
            {
                "arrays": ArrayRecord(
                    {k: Array(np.asarray(new[k], dtype=arrays[k].dtype)) for k in arrays}
                ),
                "metrics": MetricRecord({"num-examples": 1, "partition-id": pid, **metrics}),
            }
        )
        return Message(reply, reply_to=msg)

    return app


class TorchClientTrainer:
    """Fine-tunes one shared model in place for each client in turn (clients run sequentially).

    Each call loads the global trainable arrays, runs ⌈local_epochs · n_k / B⌉ AdamW
    steps (a fresh optimizer per round, as in FedAvg) on shuffled mini-batches of
    the client's records, with FedProx's (μ/2)‖w − w_t‖² added when
    ``config["proximal-mu"]`` > 0 (Li et al. 2020, *Federated Optimization in
    Heterogeneous Networks*, MLSys, Eq. 2), and returns the new trainable arrays.
    Batches and dropout are seeded by (seed, round, client).

    Args:
        model: the (possibly PEFT) model; its ``requires_grad`` parameters travel.
        task, input_names: as :class:`~dpaudit.trainers.models.BuiltModel`.
        examples: every real client's tokenized records.
        client_indices: per real client, its indices into ``examples``.
        config: learning rate and weight decay come from it.
    """

    def __init__(
        self,
        *,
        model: Any,
        task: str,
        input_names: Sequence[str],
        examples: EncodedExamples,
        client_indices: Sequence[Sequence[int]],
        config: TrainConfig,
        local_epochs: float,
        local_batch_size: int,
        device: Any,
        seed: int,
        pad_id: int,
        local: Any = None,
        built: Any = None,
        gradient: bool = False,
    ) -> None:
        self.model = model.to(device)
        self.local, self.built, self.gradient = local, built, bool(gradient)
        if local is not None and built is None:
            raise ValueError("local DP-SGD needs the BuiltModel")
        self.task, self.input_names = task, tuple(input_names)
        self.examples, self.client_indices = examples, [list(ix) for ix in client_indices]
        self.config, self.device, self.seed, self.pad_id = config, device, int(seed), int(pad_id)
        self.local_epochs, self.local_batch_size = float(local_epochs), int(local_batch_size)
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def arrays(self) -> dict[str, np.ndarray]:
        """The current trainable parameters as float arrays (copies)."""
        return {n: p.detach().cpu().numpy().copy() for n, p in self.params.items()}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        import torch

        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(torch.as_tensor(np.asarray(arrays[n]), dtype=p.dtype, device=p.device))

    def local_steps(self, client: int) -> int:
        n = len(self.client_indices[client])
        return max(1, math.ceil(self.local_epochs * n / self.local_batch_size))

    def train(
        self,
        client: int,
        server_round: int,
        arrays: Mapping[str, np.ndarray],
        config: Mapping[str, Any],
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        import torch

        self.load(arrays)
        if self.local is not None:
            return self._train_private(client, server_round)
        if self.gradient:
            return self._gradient(client, server_round)
        mu = float(config.get("proximal-mu", 0.0) or 0.0)
        anchor = {n: p.detach().clone() for n, p in self.params.items()} if mu > 0 else {}
        torch.manual_seed(derive_seed(self.seed, _STREAM_LOCAL, server_round * 1_000_003 + client))
        rng = np.random.default_rng([self.seed, _STREAM_LOCAL, server_round, client])
        optimizer = torch.optim.AdamW(
            list(self.params.values()),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )
        indices = self.client_indices[client]
        order: list[int] = []
        losses = []
        self.model.train()
        for _ in range(self.local_steps(client)):
            if len(order) < min(self.local_batch_size, len(indices)):
                order += [indices[int(j)] for j in rng.permutation(len(indices))]
            batch, order = order[: self.local_batch_size], order[self.local_batch_size :]
            loss = self._batch_loss(batch)
            losses.append(float(loss.item()))
            if mu > 0:
                loss = loss + 0.5 * mu * sum(
                    torch.sum((p - anchor[n]) ** 2) for n, p in self.params.items()
                )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        return self.arrays(), {"train-loss": float(np.mean(losses))}

    def _batch_loss(self, indices: Sequence[int]) -> Any:
        """Mean per-example loss of the model on ``indices`` of the examples (with its graph)."""
        from dpaudit.trainers.loop import example_losses

        inputs, targets = collate(
            self.examples,
            indices,
            pad_id=self.pad_id,
            task=self.task,
            input_names=self.input_names,
            device=self.device,
        )
        return example_losses(self.model(**inputs).logits, targets, self.task).mean()

    def _gradient(
        self, client: int, server_round: int
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """FedSGD: θ − ∇ of the mean loss over up to ``local_batch_size`` of the client's records.

        The update Δ = −g is what the server clips and noises, so a sampled user contributes
        one clipped mean gradient (user-level DP-SGD: McMahan et al. 2018, §2, DP-FedSGD).
        A user with more records than the batch gets a seeded random subset each round.
        """
        import torch

        indices = self.client_indices[client]
        if len(indices) > self.local_batch_size:
            rng = np.random.default_rng([self.seed, _STREAM_LOCAL, server_round, client])
            picked = rng.choice(len(indices), self.local_batch_size, replace=False)
            indices = [indices[int(j)] for j in picked]
        torch.manual_seed(derive_seed(self.seed, _STREAM_LOCAL, server_round * 1_000_003 + client))
        self.model.train()
        loss = self._batch_loss(indices)
        grads = torch.autograd.grad(loss, list(self.params.values()))
        self.model.eval()
        new = {
            n: (p.detach() - g).cpu().numpy()
            for (n, p), g in zip(self.params.items(), grads, strict=True)
        }
        return new, {"train-loss": float(loss.item())}

    def _train_private(
        self, client: int, server_round: int
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Local DP-SGD (Opacus, :class:`~dpaudit.trainers.loop.StepRunner`) on the client's records.

        The client's per-round plan (q_k, s_k, σ, C) comes from
        :class:`~dpaudit.trainers.federated.privacy.LocalPrivacy`; lots and noise are
        seeded by (seed, round, client).
        """
        import dataclasses

        from dpaudit.trainers.loop import StepRunner

        indices = self.client_indices[client]
        ex = self.examples
        sub = EncodedExamples(
            ids=tuple(ex.ids[i] for i in indices),
            input_ids=tuple(ex.input_ids[i] for i in indices),
            labels=None if ex.labels is None else tuple(ex.labels[i] for i in indices),
            loss_start=None if ex.loss_start is None else tuple(ex.loss_start[i] for i in indices),
        )
        plan = self.local.client_plan(len(indices))
        config = dataclasses.replace(
            self.config,
            batch_size=plan.batch_size,
            physical_batch_size=min(self.config.physical_batch_size, plan.batch_size),
            max_grad_norm=plan.max_grad_norm,
        )
        runner = StepRunner(
            built=self.built,
            examples=sub,
            plan=plan,
            config=config,
            device=self.device,
            seed=derive_seed(self.seed, _STREAM_LOCAL, server_round * 1_000_003 + client),
            pad_id=self.pad_id,
        )
        losses = []
        try:
            for step in range(plan.steps):
                loss, _ = runner.run_step(step)
                if loss is not None:
                    losses.append(loss)
        finally:
            runner.unwrap()
        return self.arrays(), {"train-loss": float(np.mean(losses)) if losses else float("nan")}

    def evaluate(self, arrays: Mapping[str, np.ndarray], examples: EncodedExamples) -> float:
        """Mean example loss of the model with ``arrays`` on ``examples`` (utility by round).

        :func:`~dpaudit.trainers.evaluate.evaluate`'s ``example_loss`` (the training
        objective; ``loss`` for classifiers).
        """
        from dpaudit.trainers.evaluate import evaluate

        self.load(arrays)
        metrics = evaluate(
            self.model,
            examples,
            task=self.task,
            pad_id=self.pad_id,
            input_names=self.input_names,
            device=self.device,
        )
        return float(metrics.get("example_loss", metrics["loss"]))
