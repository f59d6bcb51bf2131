"""`seqlab serve` end to end: the real server in a subprocess on 127.0.0.1, a real HTTP client.

A tiny Transformer learns to reverse symbol sequences for a few seconds (once per module); the
server's translations must equal `seqlab translate`'s, concurrent requests must each get their
single-request answer, bad requests get JSON errors and the server serves on, and SIGTERM lets a
request in flight finish before the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

RECIPE = """
name = "tiny-transformer-reverse"
task = "translation"
seed = 1

[data]
corpus = "synthetic"
synthetic_task = "reverse"
synthetic_size = 400
synthetic_symbols = 12
tokenizer = "word"
lowercase = false
min_freq = 1
max_len = 16

[model]
kind = "transformer"
d_model = 16
num_heads = 2
num_encoder_layers = 1
num_decoder_layers = 1
d_ff = 32
dropout = 0.0
max_len = 40

[train]
max_steps = 300
max_tokens = 400
lr = 5e-3
valid_every = 300
valid_max_sentences = 10
device = "cpu"

[decode]
beam_size = 3
valid_beam_size = 1
max_len_a = 1.0
max_len_b = 3
"""

LINES = ["s3 s4 s5", "", "s7 s1 s2 s9 s10", "   ", "s2", "s11 s0 s6 s6 s8 s1 s4", "s5 s5"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from seqlab.config import load_recipe
    from seqlab.run import train_recipe

    folder = tmp_path_factory.mktemp("serve")
    (folder / "tiny.toml").write_text(RECIPE)
    train_recipe(load_recipe(folder / "tiny.toml"), folder / "run")
    return folder / "run" / "best.pt"


class Server:
    """`python -m seqlab serve CHECKPOINT --port 0 OPTIONS` with stderr in a file; `url` once
    GET /health answers."""

    def __init__(self, checkpoint: Path, log: Path, *options: str):
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "seqlab", "serve", str(checkpoint), "--port", "0"]
        with open(log, "w") as stderr:
            self.process = subprocess.Popen(
                [*command, "-v", "--threads", "1", *options],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        self.url = self._wait_until_up()

    def _wait_until_up(self, timeout: float = 60.0) -> str:
        deadline, url = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited:\n{self.stderr()}"
            found = re.search(r"serving on (http://\S+)", self.stderr())
            url = url or (found.group(1) if found else None)
            if url:
                try:
                    if httpx.get(f"{url}/health", timeout=5).json() == {"status": "ok"}:
                        return url
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not come up:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.log.read_text()

    def post(self, body, **kwargs) -> httpx.Response:
        if isinstance(body, bytes):
            kwargs.setdefault("headers", {"content-type": "application/json"})
            return httpx.post(f"{self.url}/translate", content=body, timeout=60, **kwargs)
        return httpx.post(f"{self.url}/translate", json=body, timeout=60, **kwargs)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    server = Server(
        checkpoint, tmp_path_factory.mktemp("log") / "server.log", "--max-wait-ms", "50"
    )
    yield server
    assert server.stop() == 0, server.stderr()


def translated_by_cli(checkpoint, lines, tmp_path, capsys, monkeypatch, *options) -> list[str]:
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in lines))
    args = ["translate", checkpoint, "-i", tmp_path / "in.txt", "-o", tmp_path / "out.txt", "-q"]
    code, _, err = run_cli([*args, *options], capsys, monkeypatch)
    assert code == 0, err
    return (tmp_path / "out.txt").read_text().splitlines()


@pytest.mark.parametrize("beam", [None, 1, 3])
def test_translations_equal_seqlab_translate(
    beam, server, checkpoint, tmp_path, capsys, monkeypatch
):
    options = [] if beam is None else ["--beam-size", str(beam)]
    expected = translated_by_cli(checkpoint, LINES, tmp_path, capsys, monkeypatch, *options)
    body = {"text": LINES} if beam is None else {"text": LINES, "beam_size": beam}
    response = server.post(body)
    assert response.status_code == 200, response.text
    assert response.json() == {"translations": expected}
    assert expected[1] == expected[3] == "" and len(set(expected)) > 3  # not a degenerate model
    assert re.search(
        rf"translate: {len(LINES)} lines, {sum(map(len, LINES))} chars", server.stderr()
    )


def test_search_is_exact_under_padding(checkpoint):
    """What batching relies on: each line translated in a padded batch with others gets the
    translation (and score) it gets alone, greedy and beam."""
    from seqlab.inference import Translator

    translator = Translator.from_checkpoint(checkpoint)
    lines = [line for line in LINES if line.strip()] * 2 + ["s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11"]
    for beam in (1, 3):
        together = translator.translate(lines, beam_size=beam)
        for line, hyps in zip(lines, together):
            (alone,) = translator.translate([line], beam_size=beam)
            assert hyps[0].text == alone[0].text and hyps[0].tokens == alone[0].tokens
            assert hyps[0].score == pytest.approx(alone[0].score, abs=1e-4)


def test_64_concurrent_requests_each_get_their_single_request_answer(server, checkpoint):
    from seqlab.inference import Translator

    pool = [line for line in LINES if line.strip()]
    requests = [
        {
            "text": [pool[(i + j) % len(pool)] for j in range(1 + i % 4)],
            "beam_size": 1 + 2 * (i % 2),
        }
        for i in range(64)
    ]
    translator = Translator.from_checkpoint(checkpoint)  # each request alone, in process
    alone = [
        [hyps[0].text if hyps else "" for hyps in translator.translate(r["text"], beam_size=b)]
        for r in requests
        for b in [r["beam_size"]]
    ]

    async def together():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/translate", json=r) for r in requests))

    responses = asyncio.run(together())
    for request, response, expected in zip(requests, responses, alone):
        assert response.status_code == 200, response.text
        assert response.json() == {"translations": expected}
        assert len(expected) == len(request["text"])
    merged = [int(n) for n in re.findall(r"batch: \d+ lines from (\d+) requests", server.stderr())]
    assert max(merged) > 1, "no two concurrent requests were batched together"


BAD = [
    (b'{"text": ["s1"', 400, "not valid JSON"),
    (b"not json at all", 400, "not valid JSON"),
    ({}, 422, "text: Field required"),
    ({"text": "s1 s2"}, 422, "text: Input should be a valid list"),
    ({"text": None}, 422, "text"),
    ({"text": ["s1", 3]}, 422, "text.1: Input should be a valid string"),
    ({"text": ["s1"], "beam_size": 0}, 422, "beam_size"),
    ({"text": ["s1"], "beam_size": -2}, 422, "beam_size"),
    ({"text": ["s1"], "beam_size": 2.5}, 422, "beam_size"),
    ({"text": ["s1"], "beam_size": "5"}, 422, "beam_size"),
    ({"text": ["s1"], "beam_size": 1000}, 422, "beam_size: 1000 is above 32"),
    ({"text": ["s1"], "beam": 2}, 422, "beam: Extra inputs"),
    ([["s1"]], 422, "body"),
    ({"text": ["s1"] * 1001}, 413, "1001 lines; at most 1000"),
    ({"text": ["s1", "s2 " * 3334]}, 413, "text[1] has 10002 characters; at most 10000"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD)
def test_a_bad_request_gets_a_json_error_and_the_server_serves_on(server, body, status, message):
    response = server.post(body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert f"refused a request ({status}): " in server.stderr()  # its one log line
    assert server.post({"text": ["s1 s2"]}).status_code == 200


def test_errors_outside_translate_are_json_too(server):
    assert httpx.get(f"{server.url}/nowhere").json() == {"detail": "Not Found"}
    form = httpx.post(f"{server.url}/translate", content=b'{"text": ["s1"]}')  # no content type
    assert form.status_code == 400 and "Content-Type: application/json" in form.json()["error"]


def test_the_limits_themselves_are_accepted(server):
    at_limit = server.post({"text": [""] * 999 + ["s1 " * 3333 + "s"]})  # 1000 lines, 10000 chars
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json()["translations"][:999] == [""] * 999


def test_sigterm_finishes_the_request_in_flight_then_exits_0(checkpoint, tmp_path):
    # a request waits up to 1.5 s for batch mates: SIGTERM arrives while it is queued
    server = Server(checkpoint, tmp_path / "server.log", "--max-wait-ms", "1500")
    expected = server.post({"text": ["s3 s4 s5"], "beam_size": 1}).json()
    answer: dict = {}

    def in_flight():
        answer["response"] = server.post({"text": ["s3 s4 s5"], "beam_size": 1})

    thread = threading.Thread(target=in_flight)
    thread.start()
    deadline = time.monotonic() + 30
    while server.stderr().count("queued 1 lines") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # until the server holds the request
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(httpx.TransportError):  # no longer accepting
        httpx.get(f"{server.url}/health", timeout=5)
    assert server.process.wait(timeout=30) == 0, server.stderr()
    thread.join()
    assert answer["response"].status_code == 200 and answer["response"].json() == expected
    assert "stopped after 2 batches" in server.stderr()


def test_a_missing_extra_or_a_taken_port_is_a_one_line_error(checkpoint, capsys, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(["serve", checkpoint, "--port", port], capsys, monkeypatch)
        assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err
        assert len(err.strip().splitlines()) == 1, err
    monkeypatch.delitem(sys.modules, "seqlab.inference.serve", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fails as if not installed
    code, _, err = run_cli(["serve", checkpoint], capsys, monkeypatch)
    assert code == 2 and "pip install 'seqlab[serve]'" in err and "Traceback" not in err


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, dict]:
    """Send `head` (request line and headers) and `body` over a plain socket; the status and
    JSON of the answer. Lets a test declare a Content-Length it never sends, or send chunks."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload)


def test_a_body_past_its_limit_is_refused_before_it_is_read(server):
    # 1,000 lines of 10,000 characters, each JSON-escaped as 6 bytes, fit; a declared gigabyte
    # is refused from its header while the client has sent none of it
    head = "POST /translate HTTP/1.1\nHost: x\nContent-Type: application/json\n"
    status, error = raw_request(server.url, head + "Content-Length: 1000000000\n")
    assert status == 413 and "the body has 1000000000 bytes; at most 60008096" in error["error"]
    assert server.post({"text": ["s1 s2"]}).status_code == 200


def test_the_body_limit_admits_every_request_within_the_line_limits():
    from seqlab.inference.serve import ServeSettings

    settings = ServeSettings(max_lines=3, max_chars=7)
    largest = {"text": ["\u0001" * 7] * 3, "beam_size": 10**9}
    assert len(json.dumps(largest).encode()) <= settings.body_limit
    assert ServeSettings(max_body_bytes=5).body_limit == 5


def test_a_chunked_body_is_cut_off_at_its_limit(checkpoint, tmp_path):
    server = Server(checkpoint, tmp_path / "server.log", "--max-body-bytes", "2000")
    try:
        head = "POST /translate HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        chunked = head + "Transfer-Encoding: chunked\n"
        body = b'{"text": ["' + b"s1 " * 1000 + b'"]}'
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1500], body[1500:])
        )
        status, error = raw_request(server.url, chunked, chunks + b"0\r\n\r\n")
        assert status == 413 and "more than 2000 bytes; at most 2000" in error["error"], error
        status, error = raw_request(server.url, head + f"Content-Length: {len(body)}\n", body)
        assert status == 413 and f"the body has {len(body)} bytes" in error["error"]
        small = b'{"text": ["s3 s4 s5"], "beam_size": 1}'
        status, answer = raw_request(
            server.url, chunked, b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)
        )
        assert status == 200 and len(answer["translations"]) == 1
        assert "refused a request (413): the body has more than 2000 bytes" in server.stderr()
    finally:
        assert server.stop() == 0, server.stderr()
