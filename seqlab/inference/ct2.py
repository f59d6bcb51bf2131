"""CTranslate2 export and engine for Transformer translation models.

`export_ctranslate2` fills a `ctranslate2.specs.TransformerSpec` from our weights, as
CTranslate2's own fairseq and OpenNMT-py converters do, and writes it with our tokenizer files and
`seqlab.json` (`folder.py`). `CTranslate2Translator` translates with such a folder through the
same `translate(lines, ...)` as `Translator`, tokenizing with our own sides.

What makes the conversion exact (teacher-forced log-probabilities equal to float precision,
greedy and beam output identical), each a convention of seqlab that CTranslate2 must be told:
- our sinusoidal table interleaves sin and cos (PE[:, 0::2] = sin, PE[:, 1::2] = cos), where
  CTranslate2's built-in table puts them side by side: the table is passed explicitly, as are
  learned position embeddings;
- token embeddings are scaled by sqrt(d_model); LayerNorm epsilon is torch's 1e-5;
- the source ends with `<eos>` (`add_source_eos`) and the decoder starts from `<bos>`;
- pre-LN (with a final LayerNorm per stack) or post-LN, as the recipe says;
- search: `min_decoding_length=0`, and our per-sentence output cap `int(max_len_a * (len + 1) +
  max_len_b)` (len + 1: the source's `<eos>` counts), which CTranslate2 takes once per call, so
  sentences are grouped by cap;
- the length penalty: CTranslate2 divides a hypothesis's log-probability by length^alpha, our
  `average` kind. A recipe using `gnmt` ((5 + len) / 6)^alpha decodes slightly differently there;
  the export warns.
ctranslate2 is an optional extra, imported only inside these functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqlab.errors import CheckpointError, ConfigError, SeqlabError
from seqlab.inference.folder import (
    atomic_folder,
    describe,
    read_meta,
    read_sides,
    write_meta,
    write_sides,
)
from seqlab.inference.results import Translation, length_batches, source_ids

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")  # fmt: skip
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which every seqlab LayerNorm uses


def import_ctranslate2():
    """The ctranslate2 module, or a `SeqlabError` saying how to install it."""
    try:
        import ctranslate2
    except ImportError:
        raise SeqlabError(
            "CTranslate2 is not installed: pip install 'seqlab[ct2]' (or: pip install ctranslate2)"
        ) from None
    return ctranslate2


# -- export ---------------------------------------------------------------------------------------


def _array(tensor) -> Any:
    """A float32 numpy copy of a (possibly shared) weight tensor."""
    return tensor.detach().float().cpu().numpy().copy()


def _set_linear(spec, linear) -> None:
    spec.weight = _array(linear.weight)
    if linear.bias is not None:
        spec.bias = _array(linear.bias)


def _set_norm(spec, norm) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def _set_fused(spec, linears: Sequence) -> None:
    """One CTranslate2 linear from several of ours stacked on the output axis (q|k|v, k|v)."""
    import numpy as np

    spec.weight = np.concatenate([_array(lin.weight) for lin in linears])
    if all(lin.bias is not None for lin in linears):
        spec.bias = np.concatenate([_array(lin.bias) for lin in linears])


def _set_attention(spec, attention, self_attention: bool) -> None:
    if self_attention:  # linear[0] = q|k|v, linear[1] = out
        _set_fused(spec.linear[0], [attention.q_proj, attention.k_proj, attention.v_proj])
    else:  # linear[0] = q, linear[1] = k|v, linear[2] = out
        _set_linear(spec.linear[0], attention.q_proj)
        _set_fused(spec.linear[1], [attention.k_proj, attention.v_proj])
    _set_linear(spec.linear[-1], attention.out_proj)


def _set_ffn(spec, ffn, norm) -> None:
    _set_norm(spec.layer_norm, norm)
    _set_linear(spec.linear_0, ffn.linear1)
    _set_linear(spec.linear_1, ffn.linear2)


def _set_inputs(spec, embedding, positional) -> None:
    """Token embeddings (scaled by sqrt(d_model)) and our position table, passed explicitly."""
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = _array(embedding.weight)
    spec.scale_embeddings = embedding.scale != 1.0  # ours: sqrt(d_model), as CTranslate2's
    table = positional.table if hasattr(positional, "table") else positional.embed.weight
    spec.position_encodings.encodings = _array(table)  # (max_len, H), row p = position p


def transformer_spec(model: Any, config: Any):
    """A `ctranslate2.specs.TransformerSpec` holding `model`'s weights (a `TransformerSeq2Seq`
    built from `config`, a `TransformerConfig`)."""
    import_ctranslate2()  # a missing extra says how to install it
    from ctranslate2.specs import common_spec, transformer_spec

    activation = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU}
    spec = transformer_spec.TransformerSpec.from_config(
        (config.num_encoder_layers, config.num_decoder_layers),
        config.num_heads,
        pre_norm=config.norm_first,
        activation=activation[config.activation],
    )
    encoder, decoder = model.encoder, model.decoder
    _set_inputs(spec.encoder, encoder.embedding, encoder.positional)
    for layer_spec, layer in zip(spec.encoder.layer, encoder.stack.layers, strict=True):
        _set_attention(layer_spec.self_attention, layer.self_attn, self_attention=True)
        _set_norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _set_ffn(layer_spec.ffn, layer.ffn, layer.norm2)
    _set_inputs(spec.decoder, decoder.embedding, decoder.positional)
    for layer_spec, layer in zip(spec.decoder.layer, decoder.stack.layers, strict=True):
        _set_attention(layer_spec.self_attention, layer.self_attn, self_attention=True)
        _set_norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _set_attention(layer_spec.attention, layer.cross_attn, self_attention=False)
        _set_norm(layer_spec.attention.layer_norm, layer.norm2)
        _set_ffn(layer_spec.ffn, layer.ffn, layer.norm3)
    if config.norm_first:  # pre-LN stacks end with a LayerNorm
        _set_norm(spec.encoder.layer_norm, encoder.stack.final_norm)
        _set_norm(spec.decoder.layer_norm, decoder.stack.final_norm)
    _set_linear(spec.decoder.projection, decoder.output)  # tied: the same array, aliased on save
    spec.config.layer_norm_epsilon = LAYER_NORM_EPS
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = "<unk>", "<bos>", "<eos>"
    spec.config.decoder_start_token = "<bos>"
    spec.config.add_source_bos, spec.config.add_source_eos = False, True
    return spec


def export_ctranslate2(
    loaded: Any, outdir: str | Path, quantization: str | None = None, force: bool = False
) -> Path:
    """Write `loaded` (a `LoadedModel` of a Transformer translation model) as a CTranslate2 folder
    with our tokenizer files and `seqlab.json`; weights quantized as `quantization` says.

    Raises:
        CheckpointError: the model is not a Transformer (CTranslate2 has no recurrent seq2seq).
        ConfigError: an unknown quantization.
    """
    kind = loaded.recipe.model.kind
    if kind != "transformer" or loaded.recipe.task != "translation":
        raise CheckpointError(
            f"CTranslate2 export needs a Transformer translation model; this checkpoint holds a "
            f"'{kind}' {loaded.recipe.task} model (CTranslate2 runs no recurrent seq2seq model); "
            "use --format seqlab for a portable folder"
        )
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConfigError(
            f"--quantization {quantization!r} is not one of: {', '.join(QUANTIZATIONS)}"
        )
    decode = loaded.recipe.decode
    if decode.length_penalty_kind == "gnmt" and decode.length_penalty != 0:
        logger.warning(
            "the recipe ranks beam hypotheses with the 'gnmt' length penalty, which CTranslate2 "
            "does not have: the export uses 'average' (log-prob / length^%g), so beam output can "
            "differ slightly from seqlab's (greedy output does not); set decode."
            "length_penalty_kind = 'average' when training for identical beam output",
            decode.length_penalty,
        )
    spec = transformer_spec(loaded.model, loaded.recipe.model.config)
    src, tgt = loaded.sides["src"], loaded.sides["tgt"]
    spec.register_source_vocabulary(list(src.vocab.tokens))
    spec.register_target_vocabulary(list(tgt.vocab.tokens))
    spec.validate()
    spec.optimize(quantization=quantization)
    with atomic_folder(outdir, force) as tmp:
        spec.save(str(tmp))
        meta = describe(loaded, "ctranslate2")
        meta["quantization"] = quantization or "float32"
        meta["sides"] = write_sides(loaded.sides, tmp)
        write_meta(tmp, meta)
    return Path(outdir)


# -- engine ---------------------------------------------------------------------------------------


def output_cap(length: int, decode: Any, max_target_len: int | None) -> int:
    """Our output cap for a source of `length` tokens (without `<eos>`): `search.max_lengths`."""
    cap = max(0, int(decode.max_len_a * (length + 1) + decode.max_len_b))
    return cap if max_target_len is None else min(cap, max_target_len)


def default_threads() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def decode_config(raw: dict, source: str):
    """The `DecodeConfig` that `seqlab.json` recorded."""
    from seqlab.config import DecodeConfig, build_dataclass

    return build_dataclass(DecodeConfig, raw, "decode", source)


def _device(name: str) -> tuple[str, int]:
    """CTranslate2's (device, index) for a torch-style name: "cuda:1" -> ("cuda", 1)."""
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "auto") or (index and not index.isdigit()):
        raise ConfigError(f"--device {name!r}: CTranslate2 runs on cpu, cuda, cuda:N or auto")
    return kind, int(index or 0)


class CTranslate2Translator:
    """`Translator`'s `translate` over a CTranslate2 export folder, with our own tokenizers.

    Args:
        path: a folder written by `seqlab export --format ctranslate2`.
        device: "cpu", "cuda", "cuda:N" or "auto".
        threads: CTranslate2's `inter_threads`, batches translated in parallel (default: every
            core this process may use), each on one thread (`intra_threads=1`): on a small CPU
            that is the fastest setting measured.

    Raises:
        CheckpointError: `path` is not a CTranslate2 export, or CTranslate2 cannot load it.
    """

    engine = "ctranslate2"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        ctranslate2 = import_ctranslate2()
        self.path = Path(path)
        meta = read_meta(self.path, "ctranslate2")
        sides = read_sides(self.path, meta)
        self.src, self.tgt = sides["src"], sides["tgt"]
        self.decode = decode_config(meta["decode"], str(self.path / "seqlab.json"))
        self.max_source_len: int | None = meta.get("max_source_len")
        self.max_target_len: int | None = meta.get("max_target_len")
        self.quantization: str = meta.get("quantization", "float32")
        self.threads = threads or default_threads()
        kind, index = _device(device)
        try:
            self.ct2 = ctranslate2.Translator(
                str(self.path),
                device=kind,
                device_index=index,
                inter_threads=self.threads,
                intra_threads=1,
            )
        except (RuntimeError, ValueError) as error:
            raise CheckpointError(f"{self.path}: CTranslate2 cannot load it: {error}") from error

    def encode_line(self, line: str, number: int) -> list[int]:
        """Source ids of `line` (without `<eos>`), truncated as `Translator.encode_line` does."""
        return source_ids(self.src, line, number, self.max_source_len)

    def batches(self, ids: list[list[int]], batch_size: int, max_tokens: int | None):
        """Indices of non-empty inputs sorted by length, cut into batches of one output cap each
        (CTranslate2 takes one `max_decoding_length` per call)."""
        return length_batches(ids, batch_size, max_tokens, group=self.cap)

    def cap(self, length: int) -> int:
        return output_cap(length, self.decode, self.max_target_len)

    def translate(
        self,
        lines: list[str],
        *,
        beam_size: int | None = None,
        nbest: int = 1,
        length_penalty: float | None = None,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        progress=None,
    ) -> list[list[Translation]]:
        """One list of up to `nbest` translations per input line (empty for an empty line).

        Every batch is handed to CTranslate2 at once (asynchronously), so `threads` batches are
        translated in parallel; results are collected in input order.
        """
        d = self.decode
        beam_size = beam_size or d.beam_size
        if nbest > beam_size:
            raise ConfigError(f"nbest = {nbest} must not exceed beam_size = {beam_size}")
        alpha = d.length_penalty if length_penalty is None else length_penalty
        if d.length_penalty_kind == "none" or (beam_size == 1 and nbest == 1):
            alpha = 0.0  # greedy: the score is the plain log-probability, as ours
        ids = [self.encode_line(line, n) if line.strip() else [] for n, line in enumerate(lines, 1)]
        tokens = self.src.vocab.tokens
        results: list[list[Translation]] = [[] for _ in lines]
        pending = []
        for batch in self.batches(ids, batch_size or d.batch_size, max_tokens):
            cap = self.cap(len(ids[batch[0]]))
            if cap == 0:  # no step allowed: an empty hypothesis, as our search gives
                pending.append((batch, None))
                continue
            submitted = self.ct2.translate_batch(
                [[tokens[t] for t in ids[i]] for i in batch],
                beam_size=beam_size,
                num_hypotheses=nbest,
                length_penalty=alpha,
                max_decoding_length=cap,
                min_decoding_length=0,
                return_scores=True,
                asynchronous=True,
            )
            pending.append((batch, submitted))
        for batch, submitted in pending:
            for n, i in enumerate(batch):
                if submitted is None:
                    results[i] = [self._translation([], 0.0)]
                    continue
                result = submitted[n].result()
                results[i] = [
                    self._translation(h, s) for h, s in zip(result.hypotheses, result.scores)
                ]
            if progress is not None:
                progress.update(len(batch))
        return results

    def _translation(self, pieces: list[str], score: float) -> Translation:
        vocab = self.tgt.vocab
        ids = [vocab.token_to_id(piece) for piece in pieces]
        return Translation(
            self.tgt.tokenizer.detokenize(vocab.decode(ids)), float(score), tuple(ids)
        )
