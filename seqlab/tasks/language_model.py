"""Language modelling as a training task: TBPTT batches, loss, perplexity, checkpoint extras.

The data stage lives in `language_model_data.py`, the model in `seqlab/models/language_model.py`,
generation in `seqlab/generate.py`. Training reads the training stream in segments of `bptt`
tokens (truncated backpropagation through time) with one of the two partitionings of d2l §9.3:

- "random" (`random_batches`): every epoch starts at a random offset in [0, bptt), cuts the
  stream into consecutive subsequences and visits them in random order; each batch starts from a
  zero state.
- "sequential" (`sequential_batches`; pytorch/examples): every epoch starts at a random offset in
  [0, bptt], lays the stream out as B rows read left to right, so row b of one batch continues
  where row b of the previous batch stopped; the hidden state carries over between batches,
  detached from the graph (`LMBatch.carry`).

The carried state is the task's `state_dict`, saved in every checkpoint and restored on
`train --resume`, which so continues exactly. The training loss is the cross-entropy summed over the
batch's tokens (the trainer divides by the tokens of the step: a mean per token). Validation and
test read their stream sequentially with `eval_batch_size` rows and report loss and perplexity.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import torch
from torch import Tensor, nn

from seqlab.config import LanguageModelData, Recipe
from seqlab.data.lm_stream import LMBatch, sequential_batches
from seqlab.distributed import ShardResult, resolve_device
from seqlab.errors import ConfigError, DataError
from seqlab.evaluation.lm_stream import read_stream
from seqlab.evaluation.metrics import perplexity
from seqlab.models import build_model
from seqlab.models.language_model import LMConfig, LMState
from seqlab.tasks.language_model_data import PreparedLM, prepare
from seqlab.tasks.spec import TaskSpec, TrainingTask

logger = logging.getLogger(__name__)


def random_batches(
    stream: Tensor, batch_size: int, bptt: int, rng: random.Random
) -> Iterator[LMBatch]:
    """d2l's `seq_data_iter_random`: shuffled disjoint subsequences, each from a zero state.

    Drops a random number of first tokens in [0, bptt), cuts the rest into subsequences of `bptt`
    tokens (each with its next-token targets), shuffles their starts and groups them by
    `batch_size` (an incomplete last group is dropped).
    """
    offset = rng.randint(0, bptt - 1)
    count = (stream.numel() - offset - 1) // bptt  # subsequences
    starts = [offset + i * bptt for i in range(count)]
    rng.shuffle(starts)
    steps = torch.arange(bptt)  # (T,)
    for i in range(0, count // batch_size * batch_size, batch_size):
        index = torch.tensor(starts[i : i + batch_size]).unsqueeze(1) + steps  # (B, T)
        yield LMBatch(stream[index], stream[index + 1], carry=False)


@torch.no_grad()
def stream_nll(model: nn.Module, stream: Tensor, batch_size: int, bptt: int) -> tuple[float, int]:
    """(summed NLL, tokens) of predicting stream (N,) left to right (`read_stream`)."""
    nll, tokens = 0.0, 0
    for features, batch in read_stream(model, stream, batch_size, bptt):
        nll += model.nll(features, batch.targets).sum().item()
        tokens += batch.num_tokens
    return nll, tokens


def evaluate_stream(model: nn.Module, stream: Tensor, batch_size: int, bptt: int) -> dict:
    """{"loss": mean NLL per token, "ppl": perplexity, "tokens": N} of `stream`; eval mode."""
    was_training = model.training
    model.eval()
    nll, tokens = stream_nll(model, stream, batch_size, bptt)
    model.train(was_training)
    return {"loss": nll / max(tokens, 1), "ppl": perplexity(nll, tokens), "tokens": tokens}


def train_rows(recipe: Recipe) -> int:
    """B, rows per training batch: `train.batch_size`, else `train.max_tokens // data.bptt`."""
    if recipe.train.batch_size is not None:
        return recipe.train.batch_size
    rows = recipe.train.max_tokens // recipe.data.bptt
    if rows < 1:
        raise ConfigError(
            f"train.max_tokens = {recipe.train.max_tokens} is smaller than data.bptt = "
            f"{recipe.data.bptt}; set train.batch_size (rows per batch)"
        )
    return rows


class LanguageModelTask(TrainingTask):
    """Binds the token streams, a language model and a recipe for the training loop. Its
    batches follow one another through the stream: it trains in one process only."""

    def __init__(self, recipe: Recipe, data: PreparedLM, *, rank: int = 0, world: int = 1):
        if not isinstance(recipe.model.config, LMConfig):
            raise ConfigError(
                f"{recipe.path}: task 'language_model' needs [model] kind = 'rnn_lm', "
                f"got '{recipe.model.kind}'"
            )
        self.recipe, self.data = recipe, data
        vocab_size = len(data.side.vocab)
        self.model: nn.Module = build_model(recipe.model, vocab_size, vocab_size)
        self.rows, self.bptt = train_rows(recipe), recipe.data.bptt
        self.carry: LMState | None = None  # the state the last sequential batch ended in
        train = data.splits["train"]
        if train.numel() - self.bptt - 1 < self.rows * self.bptt:
            raise DataError(
                f"the training stream has {train.numel()} tokens, fewer than one batch of "
                f"{self.rows} rows x {self.bptt} steps needs; lower train.batch_size or data.bptt"
            )

    def batches(self, epoch: int, skip: int) -> Iterator[LMBatch]:
        rng = random.Random(self.recipe.seed * 1000003 + epoch)
        stream = self.data.splits["train"]
        if self.recipe.data.partition == "random":
            batches = random_batches(stream, self.rows, self.bptt, rng)
        else:
            offset = rng.randint(0, self.bptt)
            batches = sequential_batches(stream, self.rows, self.bptt, offset)
        yield from islice(batches, skip, None)

    def loss(self, model: nn.Module, batch: LMBatch) -> tuple[Tensor, int]:
        """Summed cross-entropy of the batch, plus the model's AR / TAR penalty (a per-token
        mean, so it counts once per token here); keeps the final state for the next batch."""
        state = self.carry if batch.carry else None
        features, state, penalty = model.run_with_penalty(batch.inputs, state)  # (B, T, H)
        self.carry = state.detach() if self.recipe.data.partition == "sequential" else None
        nll = model.nll(features, batch.targets, self.recipe.train.label_smoothing)  # (B, T)
        return nll.sum() + penalty * batch.num_tokens, batch.num_tokens

    def evaluate(self, model: nn.Module, split: str) -> dict:
        """Loss and perplexity of `model` on the stream of `split` ("valid" or "test")."""
        data = self.recipe.data
        return evaluate_stream(model, self.data.splits[split], data.eval_batch_size, data.bptt)

    def validation_part(self, model: nn.Module, rank: int = 0, world: int = 1) -> ShardResult:
        """The whole validation stream: one pass carries the state from batch to batch, so it
        is not sharded (language models refuse torchrun, see `seqlab.run`)."""
        if world != 1:
            raise ConfigError("language-model validation runs in one process, not under torchrun")
        data = self.recipe.data
        nll, tokens = stream_nll(model, self.data.splits["valid"], data.eval_batch_size, data.bptt)
        return ShardResult({"nll": nll, "tokens": float(tokens)})

    def validation_metrics(self, whole: ShardResult) -> dict[str, float]:
        nll, tokens = whole.sums["nll"], whole.sums["tokens"]
        return {"loss": nll / max(tokens, 1.0), "ppl": perplexity(nll, int(tokens))}

    def checkpoint_extras(self) -> dict:
        return {"lm": self.data.side.to_payload()}

    def state_dict(self) -> dict:
        """The state the last sequential batch ended in (None: start from zeros)."""
        if self.carry is None:
            return {"carry": None}
        return {"carry": {"hidden": self.carry.hidden, "cell": self.carry.cell}}

    def load_state_dict(self, state: dict) -> None:
        carry = state.get("carry")
        if carry is None:
            self.carry = None
            return
        device = next(self.model.parameters()).device
        cell = carry["cell"]
        self.carry = LMState(carry["hidden"].to(device), None if cell is None else cell.to(device))


def score_language_model(recipe: Recipe, data: PreparedLM, run_dir: Path, show: int = 3) -> dict:
    """Perplexity of the run's best.pt on the valid/test streams (also with a continuous cache,
    tuned on valid, when `data.cache_window` is set; `lm_scores.json`), and `show` samples
    (`samples.txt`)."""
    from seqlab.generate import GenerationSettings, TextGenerator

    checkpoint = run_dir / "best.pt"
    generator = TextGenerator.from_checkpoint(checkpoint, device="cpu")
    model = generator.model.to(resolve_device(recipe.train.device))
    d = recipe.data
    splits = [split for split in ("valid", "test") if split in data.splits]
    if d.cache_window:  # one pass over each split gives both perplexities
        from seqlab.evaluation.neural_cache import cache_scores, perplexity_of, stream_outputs

        outputs = {
            split: stream_outputs(model, data.splits[split], d.eval_batch_size, d.bptt)
            for split in splits
        }
        scores = {split: perplexity_of(out.log_prob) for split, out in outputs.items()}
        scores.update(cache_scores(outputs, d.cache_window))
    else:
        scores = {
            split: evaluate_stream(model, data.splits[split], d.eval_batch_size, d.bptt)
            for split in splits
        }
    scores["checkpoint"] = str(checkpoint)
    (run_dir / "lm_scores.json").write_text(json.dumps(scores, indent=2))
    generator.model.to("cpu")
    prefix = "" if d.line_break == "eos" else "the"
    settings = GenerationSettings(max_len=60, top_p=0.9, num=show, seed=recipe.seed)
    samples = generator.generate(prefix, settings)
    (run_dir / "samples.txt").write_text("".join(line + "\n" for line in samples))
    for line in samples:
        logger.info("SAMPLE  %s", line)
    keys = ("valid", "test", "valid_cache", "test_cache")
    return {key: scores[key] for key in keys if key in scores}


SPEC = TaskSpec(
    name="language_model",
    data_config=LanguageModelData,
    prepare=prepare,
    build=LanguageModelTask,
    metrics={"loss": False},
    score=score_language_model,
    shardable=False,  # the hidden state runs through the stream in order
    ignores=("train.valid_max_sentences", "decode"),
    sides=("lm",),
)
