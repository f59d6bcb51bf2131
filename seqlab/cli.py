"""The `seqlab` command: argparse subcommands that wire the library together, nothing more.

Results go to stdout; logs, progress bars and errors to stderr. An error caused by input the user
can fix (`SeqlabError`) is printed as one line naming the file, line or key, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def _count(low: int):
    """An argparse type: an integer of at least `low` (argparse names the flag on error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _number(low: float | None = None):
    """An argparse type: a finite number, of at least `low` when given."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _corpora_list(args: argparse.Namespace) -> int:
    from seqlab.data.corpus import list_corpora

    for m in list_corpora():
        if args.names:
            print(m.name)
        else:
            print(f"{m.name}\t{','.join(m.languages)}\t{','.join(m.splits)}\t{m.licence}")
    return 0


def _corpora_fetch(args: argparse.Namespace) -> int:
    from seqlab.data.corpus import fetch_corpus

    print(fetch_corpus(args.name, progress=not args.quiet))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from seqlab.config import load_recipe
    from seqlab.tasks import get_task

    recipe = load_recipe(args.recipe, args.overrides)
    prepared = get_task(recipe.task).prepare(recipe)
    print(f"recipe: {recipe.name} ({recipe.task}, corpus {recipe.data.corpus})")
    print(prepared.summary())
    return 0


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seqlab.config import load_recipe
    from seqlab.distributed import is_main
    from seqlab.run import train_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    run_dir = Path(args.run_dir or Path("runs") / recipe.name)
    summary = train_recipe(recipe, run_dir, resume=args.resume)
    if is_main():  # under torchrun: once, from rank 0
        print(json.dumps(summary, indent=2))
    return 0


def _read_lines(path: str | None) -> list[str]:
    from seqlab.data.readers import read_lines

    return list(read_lines("-" if path is None else path, strip=False))


def _write_lines(path: str | None, lines: list[str]) -> None:
    """To stdout, or atomically to `path` (a temp file renamed into place once complete)."""
    text = "".join(line + "\n" for line in lines)
    if path is None or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from seqlab.data.atomic import atomic_file

    with atomic_file(path) as f:
        f.write(text)


def _plotted_line(args: argparse.Namespace, lines: list[str]) -> int | None:
    """Index of the one line `--attention-plot` draws (None without the flag); checks the flags."""
    from seqlab.errors import ConfigError

    if args.attention_plot is None:
        if args.attention_layer is not None or args.attention_head is not None:
            raise ConfigError("--attention-layer and --attention-head need --attention-plot FILE")
        return None
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if len(filled) != 1:
        raise ConfigError(
            f"--attention-plot needs exactly one non-empty input line, got {len(filled)}"
        )
    return filled[0]


def _attention_plot(
    args: argparse.Namespace, translator, line: str, number: int, hyps: list
) -> None:
    """Draw where the best hypothesis of `line` looked in the source, to args.attention_plot."""
    from seqlab.plot import cross_attention, plot_attention, token_labels

    src_ids = translator.encode_line(line, number)
    out_ids = list(hyps[0].tokens) if hyps else []
    weights = cross_attention(
        translator.model, src_ids, out_ids, args.attention_layer, args.attention_head
    )  # (T, S)
    words = translator.src.tokenizer.tokenize(line)[: len(src_ids)]
    src_tokens = [*words, "<eos>"] if len(words) == len(src_ids) else None
    plot_attention(
        weights,
        src_tokens or token_labels(translator.src.vocab, src_ids),
        token_labels(translator.tgt.vocab, out_ids),
        args.attention_plot,
        title=line if len(line) <= 80 else line[:77] + "...",
    )


def _translate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from seqlab.errors import ConfigError
    from seqlab.inference import open_translator

    translator = open_translator(
        args.checkpoint,
        engine=args.engine,
        device=args.device,
        threads=args.threads,
        optimize=not args.no_optimize,
    )
    if args.attention_plot is not None and translator.engine != "torch":
        raise ConfigError(f"--attention-plot needs the torch engine, not {translator.engine}")
    lines = _read_lines(args.input)
    plotted = _plotted_line(args, lines)
    nbest = max(args.nbest, 1)
    beam = max(args.beam_size or translator.decode.beam_size, nbest)
    bar = tqdm(total=len(lines), desc="translate", file=sys.stderr, disable=args.quiet or None)
    with bar:
        results = translator.translate(
            lines,
            beam_size=beam,
            nbest=nbest,
            length_penalty=args.length_penalty,
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
            progress=bar,
        )
    if nbest == 1:
        out = [hyps[0].text if hyps else "" for hyps in results]
    else:  # n-best: "LINE<TAB>RANK<TAB>SCORE<TAB>TEXT", line and rank counted from 1; an empty
        # input line gets `nbest` empty rows, so every line has the same number of rows
        out = [
            f"{n}\t{r}\t{h.score:.4f}\t{h.text}" if h else f"{n}\t{r}\t0.0000\t"
            for n, hyps in enumerate(results, 1)
            for r, h in enumerate(hyps or [None] * nbest, 1)
        ]
    if plotted is not None:
        _attention_plot(args, translator, lines[plotted], plotted + 1, results[plotted])
    _write_lines(args.output, out)
    return 0


def _average_inputs(args: argparse.Namespace) -> list:
    """The checkpoint paths to average: as given, or the last N numbered ones of a run folder."""
    from pathlib import Path

    from seqlab.checkpoint import CheckpointManager
    from seqlab.errors import CheckpointError, ConfigError

    if args.last is None:
        return [Path(p) for p in args.checkpoints]
    if len(args.checkpoints) != 1:
        raise ConfigError(f"--last N takes one RUN_DIR, got {len(args.checkpoints)} paths")
    if args.last < 1:
        raise ConfigError(f"--last must be at least 1, got {args.last}")
    run_dir = Path(args.checkpoints[0])
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    numbered = CheckpointManager(run_dir).checkpoints()
    if args.last > len(numbered):
        raise CheckpointError(
            f"{run_dir}: --last {args.last} asks for more checkpoints than the "
            f"{len(numbered)} numbered ones (checkpoint_<step>.pt) it holds"
        )
    return numbered[-args.last :]


def _average(args: argparse.Namespace) -> int:
    from seqlab.checkpoint import average_checkpoints, inference_only, save_checkpoint

    paths = _average_inputs(args)
    payload = average_checkpoints(paths)
    payload["averaged_from"] = [str(p) for p in paths]
    if args.weights_only:
        payload = inference_only(payload)
    save_checkpoint(payload, args.output)
    logger.info("averaged %d checkpoints: %s", len(paths), ", ".join(map(str, paths)))
    print(args.output)
    return 0


def _export(args: argparse.Namespace) -> int:
    from seqlab.inference.export import export_model

    print(
        export_model(
            args.checkpoint,
            args.outdir,
            args.format,
            quantization=args.quantization,
            force=args.force,
        )
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seqlab.inference.evaluate import evaluate_translation

    scores = evaluate_translation(
        Path(args.checkpoint),
        _read_lines(args.src),
        _read_lines(args.ref),
        beam_size=args.beam_size,
        show=0,
        device=args.device,
        optimize=not args.no_optimize,
        engine=args.engine,
        threads=args.threads,
    )
    for key in ("bleu", "chrf", "bleu_tok_lc"):
        if key in scores and (key != "bleu_tok_lc" or args.tok_lc):
            print(f"{key}\t{scores[key]['score']:.2f}\t{scores[key]['signature']}")
    if args.json:
        _write_lines(args.json, [json.dumps(scores, indent=2)])
    return 0


def _generate(args: argparse.Namespace) -> int:
    from seqlab.generate import GenerationSettings, TextGenerator

    settings = GenerationSettings(
        max_len=args.max_len,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num=args.num,
        seed=args.seed,
    )
    settings.check()
    generator = TextGenerator.from_checkpoint(args.checkpoint, device=args.device)
    _write_lines(None, generator.generate(args.prefix, settings))
    return 0


def _perplexity(args: argparse.Namespace) -> int:
    from seqlab.errors import ConfigError
    from seqlab.evaluation.neural_cache import (
        CacheSettings,
        cache_scores,
        perplexity_of,
        stream_outputs,
    )
    from seqlab.generate import TextGenerator
    from seqlab.tasks.language_model_data import corpus_streams, text_stream

    if args.tune_cache and (args.cache_lambda is not None or args.cache_theta is not None):
        raise ConfigError("give --tune-cache or --cache-theta/--cache-lambda, not both")
    if args.cache_theta is not None and args.cache_lambda is None:
        raise ConfigError("--cache-theta needs --cache-lambda (or use --tune-cache)")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be at least 1")
    generator = TextGenerator.from_checkpoint(args.checkpoint, device=args.device)
    model, data = generator.model, generator.data
    batch_size = data.eval_batch_size if args.batch_size is None else args.batch_size
    window = args.cache_window if args.cache_window is not None else data.cache_window or 2000
    cached = args.tune_cache or args.cache_lambda is not None
    settings = None
    if cached and not args.tune_cache:
        theta = CacheSettings.theta if args.cache_theta is None else args.cache_theta
        settings = CacheSettings(window, theta, args.cache_lambda)
    if args.files:
        target = "text"
        streams = {"text": text_stream(generator.side, data, args.files)}
        if args.tune_cache:
            streams["valid"] = corpus_streams(generator.side, data, ["valid"])["valid"]
    else:
        target = args.split
        names = [args.split, "valid"] if args.tune_cache else [args.split]
        streams = corpus_streams(generator.side, data, names)
    if cached:
        outputs = {
            name: stream_outputs(model, stream, batch_size, data.bptt)
            for name, stream in streams.items()
        }
        scores = cache_scores(outputs, window, settings)
        result = scores[f"{target}_cache"]
        if args.tune_cache and target != "valid":
            tuned = scores["valid_cache"]
            result["tuned_on_valid"] = {"ppl": tuned["ppl"], "model_ppl": tuned["model_ppl"]}
    else:
        outputs = stream_outputs(model, streams[target], batch_size, data.bptt)
        result = perplexity_of(outputs.log_prob)
    result = {"text": " ".join(args.files) if args.files else target, **result}
    print(json.dumps(result, indent=2))
    return 0


def _classified_line(prediction, labels: tuple[str, ...], probs: bool) -> str:
    """The output line of one input line: its label, or with `probs` one JSON object
    {"label": LABEL, "probs": {LABEL: P, ...}} (every label, in the checkpoint's order, P rounded
    to 6 decimals); "" for an empty input line, so outputs stay aligned with inputs."""
    if prediction is None:
        return ""
    if not probs:
        return prediction.label
    scores = {label: round(p, 6) for label, p in zip(labels, prediction.probs)}
    return json.dumps({"label": prediction.label, "probs": scores}, ensure_ascii=False)


def _classify(args: argparse.Namespace) -> int:
    from seqlab.inference import Classifier

    classifier = Classifier.from_checkpoint(args.checkpoint, device=args.device)
    lines = _read_lines(args.input)
    results = classifier.classify(lines, batch_size=args.batch_size)
    out = [_classified_line(p, classifier.labels, args.probs) for p in results]
    _write_lines(args.output, out)
    return 0


def _add_classify(sub) -> None:
    classify = sub.add_parser(
        "classify", help="label sentences with a classifier (one label per input line)"
    )
    classify.add_argument("checkpoint")
    classify.add_argument("input", nargs="?", help="one sentence per line (default or '-': stdin)")
    classify.add_argument(
        "-o", "--output", help="output file, written atomically (default: stdout)"
    )
    classify.add_argument(
        "--probs",
        action="store_true",
        help='print one JSON object per line instead: {"label": ..., "probs": {LABEL: P, ...}}',
    )
    classify.add_argument(
        "--batch-size", type=_count(1), default=64, help="sentences per batch (default 64)"
    )
    classify.add_argument("--device", default="cpu")
    classify.set_defaults(func=_classify)


def _add_perplexity(sub) -> None:
    perplexity = sub.add_parser(
        "perplexity",
        help="a language model's perplexity on text files or its corpus, optionally with a cache",
    )
    perplexity.add_argument("checkpoint")
    perplexity.add_argument(
        "files",
        nargs="*",
        help="text files, read like the training text ('-': stdin); "
        "none: --split of the recipe's corpus",
    )
    perplexity.add_argument(
        "--split", default="test", choices=("valid", "test"), help="corpus split (default test)"
    )
    perplexity.add_argument(
        "--batch-size",
        type=_count(1),
        help="rows the text is read in (default: data.eval_batch_size)",
    )
    perplexity.add_argument(
        "--tune-cache",
        action="store_true",
        help="add a continuous cache (Grave et al. 2017), theta and lambda tuned on the corpus's "
        "validation text",
    )
    perplexity.add_argument(
        "--cache-window",
        type=_count(1),
        help="positions the cache keeps (default: the recipe's data.cache_window, else 2000)",
    )
    perplexity.add_argument(
        "--cache-theta", type=_number(), help="inverse temperature of the cache's attention (0.3)"
    )
    perplexity.add_argument(
        "--cache-lambda", type=_number(0.0), help="cache weight: score with these settings untuned"
    )
    perplexity.add_argument("--device", default="cpu")
    perplexity.set_defaults(func=_perplexity)


_MODEL_HELP = "a checkpoint file, or a folder written by `seqlab export` (seqlab or ctranslate2)"


def _add_engine_flags(parser) -> None:
    parser.add_argument(
        "--engine",
        choices=("torch", "ctranslate2"),
        help="default: what the model path holds (a checkpoint or seqlab folder: torch; a "
        "CTranslate2 folder: ctranslate2); ctranslate2 on a checkpoint converts it at start-up",
    )
    parser.add_argument(
        "--threads",
        type=_count(1),
        help="torch: intra-op threads; ctranslate2: batches translated in parallel, one thread "
        "each (default: every core)",
    )


def _add_export(sub) -> None:
    from seqlab.inference.ct2 import QUANTIZATIONS

    export = sub.add_parser(
        "export", help="export a model for deployment: a CTranslate2 or a portable seqlab folder"
    )
    export.add_argument("checkpoint", help="checkpoint file or seqlab folder")
    export.add_argument("outdir", help="output folder, written atomically")
    export.add_argument(
        "--format",
        required=True,
        choices=("ctranslate2", "seqlab"),
        help="ctranslate2: a CTranslate2 model (Transformer translation models); seqlab: "
        "safetensors weights + JSON, loaded without unpickling",
    )
    export.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        help="CTranslate2 weight type (default float32; int8 is smallest and fastest on CPU)",
    )
    export.add_argument("--force", action="store_true", help="replace a non-empty OUTDIR")
    export.set_defaults(func=_export)


def _add_generate(sub) -> None:
    generate = sub.add_parser(
        "generate", help="continue a prefix with a language model (one line per sample)"
    )
    generate.add_argument("checkpoint")
    generate.add_argument("--prefix", default="", help="text to continue (default: none)")
    generate.add_argument(
        "--max-len", type=_count(1), default=100, help="tokens to generate at most (default 100)"
    )
    generate.add_argument(
        "--temperature", type=_number(0.0), default=1.0, help="sampling temperature; 0 = greedy"
    )
    generate.add_argument("--top-k", type=_count(0), default=0, help="sample among the k likeliest")
    generate.add_argument(
        "--top-p", type=_number(), default=1.0, help="sample in the nucleus of mass p"
    )
    generate.add_argument("--seed", type=int, help="random seed (same seed, same samples)")
    generate.add_argument("--num", type=_count(1), default=1, help="number of samples (default 1)")
    generate.add_argument("--device", default="cpu")
    generate.set_defaults(func=_generate)


def _serve(args: argparse.Namespace) -> int:
    from seqlab.errors import SeqlabError

    try:  # the `serve` extra, checked before the model is loaded
        from seqlab.inference.serve import ServeSettings, serve
    except ImportError as error:
        if error.name not in ("fastapi", "uvicorn", "starlette", "pydantic"):
            raise
        raise SeqlabError(
            f"seqlab serve needs FastAPI and uvicorn ({error.name} is not installed): "
            "pip install 'seqlab[serve]'"
        ) from None
    from seqlab.inference.engines import open_translator

    translator = open_translator(
        args.model, engine=args.engine, device=args.device, threads=args.threads
    )
    settings = ServeSettings(
        max_batch_tokens=args.max_batch_tokens,
        max_wait_ms=args.max_wait_ms,
        batching=not args.no_batching,
        max_lines=args.max_lines,
        max_chars=args.max_chars,
        max_beam_size=args.max_beam_size,
        max_body_bytes=args.max_body_bytes,
    )
    level = "warning" if args.quiet else "debug" if args.verbose > 1 else "info"
    return serve(translator, settings, host=args.host, port=args.port, log_level=level)


def _add_serve(sub) -> None:
    serve = sub.add_parser(
        "serve",
        help="an HTTP JSON translation service with dynamic batching (the serve extra)",
        description='POST /translate {"text": [...], "beam_size": 5} -> {"translations": '
        "[...]}; GET /health. Stops gracefully on SIGTERM. See docs/deploy.md.",
    )
    serve.add_argument("model", help="a checkpoint file or an exported model folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_count(0), default=8000, help="0: any free port")
    serve.add_argument("--engine", help="translation engine (default: what MODEL holds)")
    serve.add_argument("--device", default="cpu")
    serve.add_argument("--threads", type=_count(1), help="CPU threads of the engine")
    serve.add_argument(
        "--max-batch-tokens",
        type=_count(1),
        default=2048,
        help="source tokens (words + 1 a line) of requests batched together",
    )
    serve.add_argument(
        "--max-wait-ms",
        type=_number(0.0),
        default=10.0,
        help="how long a request may wait for batch mates (0: only those already queued)",
    )
    serve.add_argument(
        "--no-batching", action="store_true", help="translate each request alone (to compare)"
    )
    serve.add_argument("--max-lines", type=_count(1), default=1000, help="lines per request")
    serve.add_argument("--max-chars", type=_count(1), default=10_000, help="characters per line")
    serve.add_argument("--max-beam-size", type=_count(1), default=32, help="largest beam_size")
    serve.add_argument(
        "--max-body-bytes",
        type=_count(1),
        help="longest request body read (default: the longest the line limits admit)",
    )
    serve.set_defaults(func=_serve)


class _Parser(argparse.ArgumentParser):
    """A parser taking -v/-q, so that they are accepted before or after any subcommand (in
    subcommands they default to SUPPRESS, leaving the main parser's values unless given), and
    reporting usage errors as one line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=argparse.SUPPRESS,
            help="more log messages (-vv: also other libraries' debug messages)",
        )
        self.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            default=argparse.SUPPRESS,
            help="log warnings and errors only (translate, corpora fetch: no progress bar)",
        )

    def error(self, message: str):
        """Usage errors become `UsageError`s, printed by `main` as one line like every error."""
        from seqlab.errors import UsageError

        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from seqlab import __version__

    parser = _Parser(prog="seqlab", description=__doc__.splitlines()[0])
    parser.set_defaults(verbose=0, quiet=False)
    parser.add_argument("--version", action="version", version=f"seqlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    corpora = sub.add_parser("corpora", help="list or fetch the known corpora")
    corpora_sub = corpora.add_subparsers(dest="corpora_command", required=True, metavar="ACTION")
    listing = corpora_sub.add_parser(
        "list", help="one line per corpus: name, languages, splits, licence"
    )
    listing.add_argument("--names", action="store_true", help="print names only")
    listing.set_defaults(func=_corpora_list)
    fetch = corpora_sub.add_parser(
        "fetch", help="make a corpus available locally; print its folder"
    )
    fetch.add_argument("name")
    fetch.set_defaults(func=_corpora_fetch)

    prepare = sub.add_parser("prepare", help="fetch, tokenize and cache a recipe's corpus")
    prepare.add_argument("recipe", help="recipe TOML file")
    prepare.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.min_freq=3")
    prepare.set_defaults(func=_prepare)

    train = sub.add_parser("train", help="train a recipe, then score its best checkpoint on test")
    train.add_argument("recipe", help="recipe TOML file")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=200")
    train.add_argument("--run-dir", help="output folder (default: runs/<recipe name>)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir exactly"
    )
    train.set_defaults(func=_train)

    translate = sub.add_parser("translate", help="translate lines (stdin to stdout by default)")
    translate.add_argument("checkpoint", help=_MODEL_HELP)
    translate.add_argument("-i", "--input", help="input file (default: stdin)")
    translate.add_argument(
        "-o", "--output", help="output file, written atomically (default: stdout)"
    )
    translate.add_argument("--beam-size", type=_count(1), help="beam size (default: the recipe's)")
    translate.add_argument(
        "--nbest",
        type=_count(1),
        default=1,
        help="hypotheses per line; >1 prints LINE<TAB>RANK<TAB>SCORE<TAB>TEXT",
    )
    size = translate.add_mutually_exclusive_group()
    size.add_argument("--batch-size", type=_count(1), help="sentences per batch")
    size.add_argument("--max-tokens", type=_count(1), help="source tokens per batch")
    translate.add_argument(
        "--length-penalty", type=_number(0.0), help="GNMT alpha (default: the recipe's)"
    )
    translate.add_argument("--device", default="cpu")
    translate.add_argument(
        "--no-optimize",
        action="store_true",
        help="search on the plain model, without the CPU speed-ups of optimize_for_inference "
        "(the same translations, slower; to compare, or to save the packed weights' memory)",
    )
    _add_engine_flags(translate)
    translate.add_argument(
        "--attention-plot",
        metavar="FILE.png",
        help="with exactly one input line: draw where the best output looked in the source",
    )
    translate.add_argument(
        "--attention-layer", type=int, help="Transformer decoder layer to plot (default: last)"
    )
    translate.add_argument(
        "--attention-head", type=int, help="Transformer head to plot (default: mean of heads)"
    )
    translate.set_defaults(func=_translate)

    average = sub.add_parser(
        "average", help="average checkpoints' weights into one checkpoint (fairseq-style)"
    )
    average.add_argument(
        "checkpoints", nargs="+", metavar="CKPT", help="checkpoints, or one RUN_DIR with --last"
    )
    average.add_argument(
        "--last", type=int, metavar="N", help="the last N numbered checkpoints of RUN_DIR"
    )
    average.add_argument("-o", "--output", required=True, help="averaged checkpoint to write")
    average.add_argument(
        "--weights-only",
        action="store_true",
        help="leave out the optimizer and other training state: a smaller file for translate, "
        "evaluate and generate that cannot be resumed (one CKPT: just strip it)",
    )
    average.set_defaults(func=_average)

    evaluate = sub.add_parser("evaluate", help="BLEU and chrF (sacrebleu) of a model on files")
    evaluate.add_argument("checkpoint", help=_MODEL_HELP)
    evaluate.add_argument("--src", required=True)
    evaluate.add_argument("--ref", required=True)
    evaluate.add_argument("--beam-size", type=_count(1))
    evaluate.add_argument("--tok-lc", action="store_true", help="also tokenized-lowercased BLEU")
    evaluate.add_argument("--json", help="write all scores to this JSON file")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument(
        "--no-optimize",
        action="store_true",
        help="search the plain model (default on CPU: its optimize_for_inference copy)",
    )
    _add_engine_flags(evaluate)
    evaluate.set_defaults(func=_evaluate)
    _add_export(sub)
    _add_classify(sub)
    _add_generate(sub)
    _add_perplexity(sub)
    _add_serve(sub)
    return parser


def _options_in(words: list[str]) -> bool:
    return any(word.startswith("-") and word != "-" for word in words)


class _TqdmHandler(logging.Handler):
    """Writes records through `tqdm.write` to the current `sys.stderr`, so that a message does not
    break a progress bar (and a test capturing stderr sees it)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class _Formatter(logging.Formatter):
    """Info messages as they are; warnings and errors prefixed with their level; with -v, every
    message with the time and the logger's name."""

    def __init__(self, verbose: bool):
        super().__init__("%(asctime)s %(name)s %(levelname)s: %(message)s" if verbose else None)
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.verbose or record.levelno < logging.WARNING:
            return text
        return f"{record.levelname.lower()}: {text}"


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """The `seqlab` loggers at INFO (-q: WARNING, -v: DEBUG) on stderr, once per CLI call; other
    libraries' loggers (datasets) at ERROR unless -vv. The library itself configures nothing."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("seqlab")
    for handler in [h for h in root.handlers if isinstance(h, _TqdmHandler)]:
        root.removeHandler(handler)
    handler = _TqdmHandler()
    handler.setFormatter(_Formatter(verbose > 0))
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("datasets",):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    from seqlab.errors import SeqlabError

    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and getattr(args, "files", None) is not None and not _options_in(extra):
            args.files += extra  # `perplexity CKPT --device cpu a.txt`: files after options too
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        configure_logging(args.verbose, args.quiet)
        if getattr(args, "device", "cpu") != "cpu":  # before loading anything onto it (the
            # CPU needs no check, and torch is not imported for a CTranslate2 model on it)
            from seqlab.distributed import resolve_device

            resolve_device(args.device, "--device")
        return args.func(args)
    except SeqlabError as error:
        print(f"seqlab: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`): not an error of ours
        return 0
    except OSError as error:  # unreadable input, unwritable output: name the file, no traceback
        print(f"seqlab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
