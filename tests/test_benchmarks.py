"""The benchmarks at tiny scale: each runs, writes valid JSON, and compares like with like."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchmarks import __main__ as bench
from benchmarks import (
    baselines,
    common,
    decode_throughput,
    prepare,
    serve_load,
    train_throughput,
    transformer_base,
)
from benchmarks.common import get_scale
from seqlab.models.rnn import RNNSeq2SeqConfig, build_rnn_seq2seq
from seqlab.models.transformer import TransformerConfig, build_transformer

HAS_HF = common.transformers_or_none() is not None


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def fake_peak(module, family, case, scale):
    return {"peak_mib": 1.0, "memory_method": "fake"}


def test_main_writes_json_and_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_throughput, "peak_in_child", fake_peak)
    monkeypatch.setattr(prepare, "prepare_in_child", prepare.prepare_in_process)  # seconds, not 40
    # serve_load starts real servers (20 s at tiny scale): its own slow test below
    monkeypatch.setattr(bench, "BENCHMARKS", [b for b in bench.BENCHMARKS if b != "serve_load"])
    assert bench.main(["--tiny", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in bench.BENCHMARKS:
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["benchmark"] == name
        assert result["environment"]["torch"] == torch.__version__
        assert f"### {name}" in out
    train = json.loads((tmp_path / "train_throughput.json").read_text())
    assert train["clock"] == "cpu" and train["threads"] == 1
    expected = {"transformer": 3, "rnn": 2, "bert": 2} if HAS_HF else {"transformer": 2, "rnn": 2}
    differs = []
    for family, count in expected.items():
        cases = train["families"][family]["cases"]
        assert len(cases) == count
        ours = cases["seqlab"]
        for case, entry in cases.items():
            assert len(entry["times_s"]) == get_scale("tiny").repeats
            assert entry["tokens"] == ours["tokens"] > 0, case  # like with like: the same batches
            assert entry["tokens_per_s"] == common.rate(entry["tokens"], entry["times_s"])
            # the speed-up is seqlab's time against this case's, repetition by repetition
            assert entry["seqlab_speedup"] == common.paired_ratio(ours["times_s"], entry["times_s"])
        differs += [
            entry["times_s"] != ours["times_s"] for c, entry in cases.items() if c != "seqlab"
        ]
    # each case timed on its own: not every case's times are seqlab's (at tiny scale two 3 ms
    # cases may round to the same times by chance, so not each case on its own)
    assert any(differs), "every case's times are copies of seqlab's"
    prepared = json.loads((tmp_path / "prepare.json").read_text())
    assert prepared["sizes"] == [200, 2000]
    assert set(prepared["cases"]) == {
        f"{t}/{n}" for t in ("word", "sentencepiece") for n in (200, 2000)
    }
    for key, case in prepared["cases"].items():
        assert case["pairs_per_s"] == round(int(key.split("/")[1]) / case["cpu_s"], 1)
    assert prepared["sentencepiece_encode_limit"]["pairs_per_s"] > 0
    assert "cached_wall_s" in prepared["cases"]["sentencepiece/2000"]
    decode = json.loads((tmp_path / "decode_throughput.json").read_text())
    assert [(m["beam"], m["batch"]) for m in decode["modes"]] == [(1, 1), (1, 64), (5, 1), (5, 64)]
    copies = []
    for mode in decode["modes"]:
        packed, unpacked = mode["seqlab"], mode[decode_throughput.PLAIN]
        assert mode["sentences"] == (64 if mode["batch"] == 64 else 2)
        steps = decode["forced_steps"]  # every output has exactly this length (checked in run)
        assert packed["tokens_per_s"] == common.rate(mode["sentences"] * steps, packed["times_s"])
        copies.append(packed["times_s"] == unpacked["times_s"])
        assert mode["optimize_speedup"] == common.paired_ratio(
            packed["times_s"], unpacked["times_s"]
        )
    # the optimized and plain models are timed apart (two tiny cases may round alike by chance)
    assert not all(copies), "the plain model's times are copies of the optimized one's"


def test_without_transformers_the_hf_cases_are_skipped(monkeypatch):
    monkeypatch.setattr(train_throughput, "transformers_or_none", lambda: None)
    monkeypatch.setattr(
        train_throughput, "FAMILIES", {"transformer": train_throughput.FAMILIES["transformer"]}
    )
    result = train_throughput.run("tiny", memory=False)
    cases = result["families"]["transformer"]["cases"]
    assert set(cases) == {"seqlab", "torch.nn.Transformer"}
    assert result["families"]["transformer"]["skipped"]


def test_peak_memory_sees_an_allocation():
    # 256 MiB, written so the pages are resident: large against what the rest of the test
    # process (a leftover thread, the allocator trimming) may free or take meanwhile
    def work():
        block = torch.ones(256 * 2**20 // 4)
        return float(block.sum())

    peak = common.measure_peak(work, repeats=1)
    assert 240 <= peak["peak_mib"] < 400, peak


def test_peak_in_child_runs_a_workload():
    peak = common.peak_in_child("train_throughput", "rnn", "d2l formulation", get_scale("tiny"))
    assert peak["memory_method"] == "peak RSS delta, child process"
    assert peak["peak_mib"] is not None and peak["peak_mib"] > 0


def test_interleaved_rotates_the_order():
    calls = []
    timings = common.interleaved({n: (lambda n=n: calls.append(n)) for n in "abc"}, repeats=3)
    assert calls == list("abc" + "abc" + "bca" + "cab")
    assert all(len(t) == 3 for t in timings.times.values())
    assert common.paired_ratio([1.0, 2.0, 1.0], [2.0, 6.0, 1.0]) == 2.0


def test_references_have_seqlabs_parameter_counts():
    transformer = TransformerConfig(32, 4, 2, 2, 64, share_embeddings=True)
    ours = build_transformer(transformer, 60, 60)
    theirs = baselines.TorchTransformerSeq2Seq(transformer, 60)
    assert common.count_parameters(ours) == common.count_parameters(theirs)
    rnn = RNNSeq2SeqConfig(embed_dim=8, hidden_size=16, num_layers=2)
    d2l = baselines.D2LBahdanauSeq2Seq(rnn, 40, 50)
    assert common.count_parameters(build_rnn_seq2seq(rnn, 40, 50)) == common.count_parameters(d2l)


def test_d2l_baseline_matches_seqlab_on_unpadded_batches():
    """Same weights, no padding: the d2l formulation computes seqlab's function."""
    torch.manual_seed(0)
    config = RNNSeq2SeqConfig(embed_dim=8, hidden_size=16, num_layers=1, dropout=0.0)
    ours, d2l = (
        build_rnn_seq2seq(config, 30, 30).eval(),
        baselines.D2LBahdanauSeq2Seq(config, 30, 30),
    )
    names = {
        "src_embed": "encoder.embedding",
        "encoder": "encoder.rnn.rnn",
        "bridge": "encoder.bridge.hidden",
        "tgt_embed": "decoder.embedding",
        "W_q": "decoder.attention.W_q",
        "W_k": "decoder.attention.W_k",
        "w_v": "decoder.attention.w_v",
        "decoder": "decoder.rnn.rnn",
        "output": "decoder.output",
    }
    state = ours.state_dict()
    mapped = {}
    for key in d2l.state_dict():
        head, _, rest = key.partition(".")
        mapped[key] = state[f"{names[head]}.{rest}"]
    d2l.load_state_dict(mapped)
    src, tgt = torch.randint(4, 30, (3, 7)), torch.randint(4, 30, (3, 5))
    mask = torch.ones_like(src, dtype=torch.bool)
    torch.testing.assert_close(d2l.eval()(src, mask, tgt), ours(src, mask, tgt))


@pytest.mark.skipif(not HAS_HF, reason="transformers (the bench extra) is not installed")
def test_decode_forces_the_same_length_on_both():
    result = decode_throughput.run("tiny")
    assert result["forced_steps"] == get_scale("tiny").decode_steps
    for mode in result["modes"]:
        assert mode["hf generate"]["tokens_per_s"] > 0 and mode["seqlab_speedup"] > 0
        assert mode[decode_throughput.PLAIN]["tokens_per_s"] > 0 and mode["optimize_speedup"] > 0


def test_transformer_base_flops_are_what_torch_counts():
    """Model FLOPs of a training step, 3 x `forward_flops`, equal torch's FLOP counter on an
    unpadded batch (SDPA's math backend, which the counter sees as matrix products)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from seqlab.data.batch import collate

    config = dataclasses.replace(transformer_base.TINY, dropout=0.0, num_decoder_layers=2)
    model = build_transformer(config, 50, 50)
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randint(4, 50, (7,), generator=g).tolist(),
              torch.randint(4, 50, (4,), generator=g).tolist()) for _ in range(3)]  # fmt: skip
    batch = collate(pairs)
    assert transformer_base.batch_pairs(batch) == [(8, 5)] * 3
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(batch.src, batch.src_mask, batch.tgt_in).float().logsumexp(-1).sum().backward()
    ours = transformer_base.forward_flops(config, 50, transformer_base.batch_pairs(batch))
    assert counter.get_total_flops() == 3 * ours


def test_transformer_base_counts_real_tokens_only():
    config = transformer_base.TINY
    short = transformer_base.forward_flops(config, 50, [(5, 4)])
    assert transformer_base.forward_flops(config, 50, [(5, 4), (5, 4)]) == 2 * short
    assert transformer_base.forward_flops(config, 50, [(6, 4)]) > short


def test_transformer_base_runs_at_tiny_scale(monkeypatch):
    monkeypatch.setenv(transformer_base.PEAK_ENV, "100")
    result = transformer_base.run("tiny")
    eager = result["training"]["eager"]
    assert eager["target_tokens_per_s"] > 0 and eager["model_flops"] > 0
    assert eager["mfu"] == pytest.approx(eager["model_flops"] / eager["seconds"] / 100e12, abs=1e-3)
    assert 0.0 <= eager["target_padding"] < 1.0
    assert result["decoding"] == {"skipped": "tiny scale"}
    assert "| eager (fp32) |" in transformer_base.markdown(result)
    assert transformer_base.peak_flops("anything") == 100e12
    monkeypatch.delenv(transformer_base.PEAK_ENV)
    assert transformer_base.peak_flops("NVIDIA H200") == 989e12
    assert transformer_base.peak_flops("a CPU") is None


def test_precision_compares_bf16_and_fused_adamw_against_fp32(monkeypatch):
    from benchmarks import precision

    built, real_step = [], precision._train_step

    def recording_step(config, vocab, rows, steps, bf16, fused, batches):
        built.append((bf16, fused))
        return real_step(config, vocab, rows, steps, bf16, fused, batches)

    monkeypatch.setattr(precision, "_train_step", recording_step)
    result = precision.run("tiny")
    # each case is its own training step, built with its own precision and optimizer
    assert built == list(precision.CASES.values())
    assert list(result["cases"]) == list(precision.CASES)
    base = result["cases"]["fp32, foreach AdamW"]["times_s"]
    for name, entry in result["cases"].items():
        assert len(entry["times_s"]) == get_scale("tiny").repeats
        assert entry["tokens_per_s"] == common.rate(
            result["tokens_per_repetition"], entry["times_s"]
        )
        assert entry["speedup"] == common.paired_ratio(entry["times_s"], base), name
    assert set(result["matmul_gflops"]) == {"float32", "bfloat16"}
    assert "bf16, fused AdamW" in precision.markdown(result)


@pytest.mark.slow
def test_prepare_measures_a_child_process(tmp_path):
    """The real `seqlab prepare` child of benchmarks/prepare.py: its summary, stage time, RSS."""
    prefix = prepare.write_corpus(tmp_path, 300)
    case = prepare.prepare_in_child(prefix, "word", tmp_path / "cache", "tiny")
    assert case["summary"][0].startswith("train pairs: kept 200")
    assert case["cpu_s"] > 0 and 100 < case["peak_rss_mib"] < 4000
    assert 50 < case["peak_anon_mib"] <= case["peak_rss_mib"]
    assert case["own_peak_rss_mib"] <= case["peak_rss_mib"] and case["child_peak_rss_mib"] is None
    trained = prepare.prepare_in_child(prefix, "sentencepiece", tmp_path / "sp", "tiny")
    # the SentencePiece trainer is a process of its own, smaller than the prepare process
    assert 5 < trained["child_peak_rss_mib"] < trained["own_peak_rss_mib"] / 2, trained
    assert trained["peak_rss_mib"] >= trained["own_peak_rss_mib"]


def test_deploy_times_whole_commands_on_a_tiny_model(transformer_checkpoint):
    """benchmarks/deploy.py on the tiny Transformer: every engine and thread count is a real
    `seqlab translate` process, with BLEU, agreement and peak memory beside its time."""
    pytest.importorskip("ctranslate2")
    from benchmarks import deploy

    assert "deploy" in bench.BENCHMARKS
    assert "skipped" in deploy.run("tiny")  # the tests' scale needs an explicit checkpoint
    sources = ["s1 s2 s3", "s4 s5", "s6 s7 s8 s9", "s10 s11"]
    references = [" ".join(reversed(line.split())) for line in sources]
    result = deploy.run(
        "tiny", checkpoint=transformer_checkpoint, sources=sources, references=references
    )
    engines = ["seqlab (PyTorch)", "CTranslate2 float32", "CTranslate2 int8"]
    assert [(r["engine"], r["threads"]) for r in result["cases"]] == [
        (engine, threads) for threads in (1, 2) for engine in engines
    ]
    for row in result["cases"]:
        assert row["median_s"] > 0 and row["peak_mib"] > 10 and 0 <= row["bleu"] <= 100
        if row["engine"] != "CTranslate2 int8":
            assert row["same_as_pytorch"] == 1.0  # float32 translates as PyTorch does
            assert row["greedy_same_as_pytorch"] == 1.0
    pytorch = [r for r in result["cases"] if r["engine"] == "seqlab (PyTorch)"]
    assert all(r["speedup"] == 1.0 for r in pytorch)
    assert "| CTranslate2 int8 | 2 |" in deploy.markdown(result)
    assert deploy.markdown({"skipped": "no checkpoint"}) == "skipped: no checkpoint"


def test_serve_load_statistics():
    assert serve_load.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5  # numpy's linear default
    assert serve_load.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    level = serve_load.summarize([0.010, 0.020, 0.030, 0.040], seconds=0.05)
    assert level["requests_per_s"] == 80.0 and level["p50_ms"] == 25.0 and level["p95_ms"] == 38.5
    assert "serve_load" in bench.BENCHMARKS


def test_serve_load_skips_without_a_model(tmp_path):
    result = serve_load.run("quick", model=tmp_path / "missing.pt")
    assert "no model at" in result["skipped"] and "skipped" in serve_load.markdown(result)


@pytest.mark.slow
def test_serve_load_runs_at_tiny_scale():
    pytest.importorskip("fastapi")
    result = serve_load.run("tiny")
    assert set(result["modes"]) == {"batching on", "batching off"}
    for mode in result["modes"].values():
        assert list(mode["levels"]) == ["1", "8", "32"]
        for level in mode["levels"].values():
            assert level["requests"] == serve_load.REQUESTS["tiny"] and level["requests_per_s"] > 0
            assert 0 < level["p50_ms"] <= level["p95_ms"]
    table = serve_load.markdown(result)
    assert table.count("| 32 |") == 2
