"""Build the model a training run fine-tunes, choose its device, and set what is trainable.

Models come from three places:

* ``embedded:gpt2-tiny`` — a randomly initialised ~1M-parameter GPT-2
  (``n_embd=128, n_layer=2, n_head=4``) whose vocabulary is the tokenizer's;
  with ``task="classification"`` the same trunk as a
  ``GPT2ForSequenceClassification``.
* ``embedded:bert-tiny`` — a randomly initialised 2-layer BERT classifier.
* ``embedded:llama-tiny`` — a randomly initialised ~0.1M-parameter Llama
  (``hidden_size=64``, 2 layers, 4 query heads sharing 2 key/value heads:
  RMSNorm, rotary position embeddings, grouped-query attention, SwiGLU) with
  *tied* input/output embeddings, the shape of SmolLM2 and Llama-3.2 in
  miniature; with ``task="classification"`` a ``LlamaForSequenceClassification``.
* a local directory or hub id, loaded with ``trust_remote_code=False`` and
  ``use_safetensors=True`` only: a directory holding only pickle weights is
  refused, because unpickling runs arbitrary code.

Embedded models use no dropout; GPT-2 and BERT untie their input/output
embeddings (Opacus ghost clipping refuses tied embeddings), the Llama keeps
them tied as its real relatives do (train it with ``grad_sample_mode = hooks``). Three training modes
(:func:`apply_mode`): ``full`` trains everything, ``lora`` trains PEFT LoRA
adapters (Hu et al. 2022) plus the classifier head of a classifier, ``head``
trains the output head, the last transformer block and the final norm.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpaudit.config import TrainConfig
from dpaudit.errors import DpauditError

EMBEDDED = ("embedded:gpt2-tiny", "embedded:bert-tiny", "embedded:llama-tiny")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HEAD_NAMES = ("classifier", "score", "pooler")
_FINAL_NORM_NAMES = ("ln_f", "final_layer_norm", "norm")


@dataclass
class BuiltModel:
    """A model ready to train, with what the loop needs to know about it.

    Attributes:
        model: the ``torch.nn.Module`` to train (a ``PeftModel`` in LoRA mode).
        task: ``"causal_lm"`` or ``"classification"``.
        mode: ``"full"``, ``"lora"`` or ``"head"``.
        input_names: keyword inputs the forward accepts among ``position_ids``
            and ``token_type_ids`` (passed explicitly, batch-shaped, because
            Opacus needs every embedding input to carry the batch dimension).
        trainable: names of the trainable parameters.
        lora_targets: module names adapted by LoRA (empty otherwise).
        max_positions: the longest sequence the model accepts.
    """

    model: Any
    task: str
    mode: str
    input_names: tuple[str, ...]
    trainable: tuple[str, ...]
    lora_targets: tuple[str, ...] = ()
    max_positions: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def is_peft(self) -> bool:
        return self.mode == "lora"


def resolve_device(spec: str, *, setting: str = "train.device") -> Any:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a ``torch.device``.

    The one device parser of the package: training, references and the attacks'
    scoring model all go through it. ``auto`` picks CUDA (the current device)
    when one is visible, else the CPU.

    Args:
        spec: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        setting: the name the user gave ``spec`` under, for error messages.

    Raises:
        DpauditError: (one line) for a spec that is not a device, a device type
            other than cpu and cuda (``tpu``, ``mps``, ``meta``...), or a CUDA
            device that is not visible.
    """
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise DpauditError(
            f"{setting} = {spec!r} is not a device (use auto, cpu, cuda or cuda:N)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DpauditError(f"{setting} = {spec!r} but no CUDA device is visible")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DpauditError(
                f"{setting} = {spec!r} but only {torch.cuda.device_count()} CUDA device(s) "
                "are visible"
            )
    elif device.type != "cpu":
        raise DpauditError(
            f"{setting} = {spec!r}: only cpu and cuda devices are supported (use auto, cpu, "
            "cuda or cuda:N)"
        )
    return device


def autocast(device: Any, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for the forward pass: on CUDA only, a no-op on CPU.

    ``fp16`` is refused by :func:`check_precision` before training starts.
    """
    import torch

    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def check_precision(device: Any, precision: str) -> str:
    """Return the precision actually used (``fp32`` on CPU); refuse fp16 on CUDA.

    fp16 needs loss scaling, and a loss scaler would rescale the per-example
    gradients before Opacus clips them, changing the clipping norm.
    """
    if device.type != "cuda":
        return "fp32"
    if precision == "fp16":
        raise DpauditError(
            "train.precision = fp16 needs loss scaling, which per-example clipping does not support; use bf16"
        )
    return precision


def build_model(config: TrainConfig, tokenizer: Any, *, seed: int, max_length: int) -> BuiltModel:
    """Create or load the model named by ``config.model`` and apply ``config.mode``.

    Random initialisation (embedded models, LoRA adapters, a fresh classifier
    head) happens under ``torch.manual_seed(seed)``, so the same seed gives
    the same initial weights.

    Raises:
        DpauditError: when the model cannot be loaded, holds only pickle
            weights, or does not fit the task or ``max_length``.
    """
    import torch

    torch.manual_seed(seed)
    if config.model.startswith("embedded:"):
        model = _embedded_model(config, tokenizer, max_length)
    else:
        model = load_pretrained(config.model, task=config.task, num_labels=config.num_labels)
        fit_vocabulary(model, tokenizer)
    max_positions = _max_positions(model.config)
    if max_positions is not None and max_length > max_positions:
        raise DpauditError(
            f"data.max_length = {max_length} exceeds the {max_positions} positions of model {config.model!r}"
        )
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    params = inspect.signature(model.forward).parameters
    input_names = tuple(n for n in ("position_ids",) if n in params)
    if "token_type_ids" in params and getattr(model.config, "type_vocab_size", None):
        input_names += ("token_type_ids",)  # BERT-like; GPT-2 would embed them with wte
    built = BuiltModel(
        model, config.task, config.mode, input_names, (), max_positions=max_positions
    )
    return apply_mode(built, config)


def _embedded_model(config: TrainConfig, tokenizer: Any, max_length: int) -> Any:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
    )

    vocab = len(tokenizer)
    positions = max(128, max_length)
    special: dict[str, Any] = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id
        if tokenizer.bos_token_id is not None
        else tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "num_labels": config.num_labels,  # a PretrainedConfig kwarg the stubs do not declare
    }
    if config.model == "embedded:gpt2-tiny":
        cfg = GPT2Config(
            vocab_size=vocab,
            n_embd=128,
            n_layer=2,
            n_head=4,
            n_positions=positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=False,
            **special,
        )
        return (
            GPT2LMHeadModel(cfg)
            if config.task == "causal_lm"
            else GPT2ForSequenceClassification(cfg)
        )
    if config.model == "embedded:bert-tiny":
        if config.task != "classification":
            raise DpauditError(
                "embedded:bert-tiny is a classifier; use train.task = classification or embedded:gpt2-tiny"
            )
        bert = BertConfig(
            vocab_size=vocab,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=512,
            max_position_embeddings=positions,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            tie_word_embeddings=False,
            **special,
        )
        return BertForSequenceClassification(bert)
    if config.model == "embedded:llama-tiny":
        llama = LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,  # grouped-query attention, as in SmolLM2 / Llama 3
            max_position_embeddings=positions,
            rms_norm_eps=1e-5,
            attention_dropout=0.0,
            tie_word_embeddings=True,
            **special,
        )
        return (
            LlamaForCausalLM(llama)
            if config.task == "causal_lm"
            else LlamaForSequenceClassification(llama)
        )
    from dpaudit.errors import unknown_name

    raise unknown_name("embedded model", config.model, EMBEDDED)


def load_pretrained(name_or_path: str | Path, *, task: str, num_labels: int | None = None) -> Any:
    """Load a model from a local directory or hub id, safetensors only, no remote code.

    Args:
        name_or_path: directory or hub id.
        task: ``"causal_lm"`` or ``"classification"``.
        num_labels: classes of a classifier (``None`` keeps the saved config's).

    Raises:
        DpauditError: one line, when the directory holds only pickle weights or
            loading fails.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from dpaudit.locate import resolve_spec

    name_or_path = resolve_spec(str(name_or_path))
    path = Path(name_or_path)
    if path.is_dir():
        _check_weights_dir(path)
    else:
        from dpaudit.trainers.safe_load import looks_local, missing_directory

        if looks_local(name_or_path):  # a missing local directory, not a hub id
            raise DpauditError(missing_directory(name_or_path))
    kwargs: dict[str, Any] = {"trust_remote_code": False, "use_safetensors": True}
    if task == "classification" and num_labels is not None:
        kwargs["num_labels"] = num_labels
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    try:
        return auto.from_pretrained(str(name_or_path), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DpauditError(f"cannot load model {str(name_or_path)!r}: {first}") from None


def _check_weights_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise DpauditError(
                f"{path}: a PEFT adapter directory; point train.model at a full model (merge the adapter first)"
            )
        raise DpauditError(f"{path}: no config.json; not a Hugging Face model directory")
    weights = sorted(path.glob("*.safetensors"))
    if weights:
        from dpaudit.trainers.safe_load import check_safetensors

        check_safetensors(weights)
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise DpauditError(
            f"{path}: only pickle weights ({', '.join(pickles)}); dpaudit loads safetensors only "
            "(convert with transformers' save_pretrained)"
        )
    raise DpauditError(f"{path}: no *.safetensors weights found")


def fit_vocabulary(model: Any, tokenizer: Any) -> None:
    """Grow the embeddings when the tokenizer has more tokens than the model.

    The new rows of the input embeddings and of the output head start at zero
    (the ``--init zero`` default of Panda et al. 2025 for new-token canaries): a
    new token's logit is 0 in every context until training moves it.
    """
    import torch

    emb = model.get_input_embeddings()
    if emb is None or len(tokenizer) <= emb.num_embeddings:
        return
    old = emb.num_embeddings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' note on mean-initialised rows
        model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        model.get_input_embeddings().weight[old:].zero_()
        out = model.get_output_embeddings()
        if out is not None:
            out.weight[old:].zero_()
            if getattr(out, "bias", None) is not None:
                out.bias[old:].zero_()


def weights_sha256(model: Any) -> str:
    """SHA-256 of every parameter and buffer (name, dtype, shape, bytes), in name order.

    Used to check that a model rebuilt from a recorded seed is the one training
    started from (:func:`initial_model`).
    """
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def initial_model(model_dir: str | Path, tokenizer: Any) -> Any | None:
    """The weights a finished training run in ``model_dir`` started from, or ``None``.

    Rebuilt with :func:`build_model` from ``complete.json``'s recipe (its
    ``train.*`` settings, seed and ``max_length``) and checked against its
    ``initial_sha256``: the base model of a black-box loss-drop audit (for an
    embedded model its random initialisation, for a pretrained one
    ``train.model`` with any new token rows at zero). A LoRA model comes back
    with its zero-initialised adapter merged, i.e. the base. ``None`` when
    ``model_dir`` holds no such record (an older run, or a model trained elsewhere).

    Raises:
        DpauditError: the rebuilt weights differ from the recorded ones (another
            torch or transformers version, or other weights at ``train.model``).
    """
    import dataclasses

    import torch

    from dpaudit.atomic import read_json
    from dpaudit.trainers.dp_sgd import COMPLETE_FILE

    path = Path(model_dir) / COMPLETE_FILE
    if not path.is_file():
        return None
    done = read_json(path)
    expected = done.get("initial_sha256")
    recipe = done.get("recipe") or {}
    if not expected or "seed" not in recipe or "max_length" not in recipe:
        return None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k[6:]: v for k, v in recipe.items() if k.startswith("train.") and k[6:] in known}
    try:
        config = TrainConfig(**settings)
    except (TypeError, DpauditError) as exc:
        raise DpauditError(f"{path}: cannot rebuild the initial model: {exc}") from None
    with torch.random.fork_rng(devices=[]):  # build_model seeds the global stream
        built = build_model(
            config, tokenizer, seed=int(recipe["seed"]), max_length=int(recipe["max_length"])
        )
    if weights_sha256(built.model) != expected:
        raise DpauditError(
            f"{path}: the initial weights rebuilt from seed {recipe['seed']} differ from those "
            "training started from (another torch/transformers version, or other weights at "
            "train.model?)"
        )
    model = built.model
    if built.is_peft:
        model = model.merge_and_unload()
    return model.eval()


def _max_positions(cfg: Any) -> int | None:
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(cfg, name, None)
        if isinstance(value, int):
            return value
    return None


def apply_mode(built: BuiltModel, config: TrainConfig) -> BuiltModel:
    """Set which parameters train according to ``config.mode``.

    * ``full``: every parameter.
    * ``lora``: LoRA adapters on ``config.lora_targets`` (empty = PEFT's
      default for the architecture, e.g. GPT-2 ``c_attn``, BERT
      ``query``/``value``); a classifier's head stays trainable through PEFT's
      ``modules_to_save``.
    * ``head``: the output head (LM head, or classifier and pooler), the last
      transformer block and the final layer norm; everything else frozen.
    """
    model = built.model
    if config.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    elif config.mode == "lora":
        model, targets = _wrap_lora(model, config)
        built.model = model
        built.lora_targets = targets
    elif config.mode == "head":
        for p in model.parameters():
            p.requires_grad_(False)
        for module in head_modules(model, config.task):
            for p in module.parameters():
                p.requires_grad_(True)
    built.trainable = tuple(n for n, p in built.model.named_parameters() if p.requires_grad)
    if not built.trainable:
        raise DpauditError(
            f"train.mode = {config.mode}: no trainable parameters in {config.model!r}"
        )
    return built


def _wrap_lora(model: Any, config: TrainConfig) -> tuple[Any, tuple[str, ...]]:
    from peft import LoraConfig, get_peft_model

    model_type = getattr(model.config, "model_type", "")
    lora = LoraConfig(
        r=config.lora_rank,
        # PEFT's stub says int, but it only computes alpha / r: a float alpha works.
        lora_alpha=config.lora_alpha,  # type: ignore[arg-type]
        target_modules=list(config.lora_targets) or None,
        lora_dropout=0.0,
        bias="none",
        fan_in_fan_out=model_type == "gpt2",  # GPT-2 uses transposed Conv1D weights
        task_type="CAUSAL_LM" if config.task == "causal_lm" else "SEQ_CLS",
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", FutureWarning
            )  # transformers deprecations raised inside PEFT
            peft_model = get_peft_model(model, lora)
    except ValueError as exc:
        raise DpauditError(
            f"train.mode = lora: {str(exc).splitlines()[0]} (set train.lora_targets)"
        ) from None
    targets = getattr(peft_model.peft_config["default"], "target_modules", None)
    return peft_model, tuple(sorted(targets)) if targets else ()


def head_modules(model: Any, task: str) -> list[Any]:
    """The modules ``head`` mode trains: output head, last block, final norm."""
    import torch.nn as nn

    modules: list[Any] = []
    if task == "causal_lm":
        out = model.get_output_embeddings()
        if out is not None:
            modules.append(out)
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if task == "classification" and leaf in _HEAD_NAMES:
            modules.append(module)
        elif leaf in _FINAL_NORM_NAMES:
            modules.append(module)
    blocks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if blocks:
        biggest = max(blocks, key=lambda m: sum(p.numel() for p in m.parameters()))
        modules.append(biggest[-1])
    return modules


def iter_trainable(model: Any) -> Iterator[Any]:
    """The parameters that require gradients, in module order."""
    return (p for p in model.parameters() if p.requires_grad)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
