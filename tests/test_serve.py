"""Serving (issue 18): the Predictor interface, the JSON API, its limits and errors, dynamic batching, and the
demo page in a real headless Chromium. All on the contract test's tiny runs of every task."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'seqnlp[serve]'")
import httpx
from starlette.testclient import TestClient
from test_tasks_contract import tiny_runs  # noqa: F401  (the contract test's tiny run of every task)

import seqnlp
from seqnlp.predictor import Predictor
from seqnlp.serve import Batcher, ServeConfig, _named, create_app

TEXT = {"classify": "was good acting story wonderful movie", "translate": "a cat sleeps on the sofa",
        "tag": "Ana vive en Lima .", "generate": "to be"}
LIMITS = ServeConfig(max_texts=4, max_chars=50, max_length=100, max_beam=4, max_body_bytes=2000)


@pytest.fixture(scope="module")
def predictors(tiny_runs: dict[str, Path]) -> dict[str, Predictor]:  # noqa: F811
    return {p.operation: p for p in (Predictor.load(run, name=task) for task, run in sorted(tiny_runs.items()))}


@pytest.fixture(scope="module")
def client(predictors: dict[str, Predictor]):  # type: ignore[no-untyped-def]
    with TestClient(create_app(list(predictors.values()), LIMITS)) as c:
        yield c


def events(text: str) -> list[tuple[str, dict]]:
    """Server-sent events → [(event name, data)]."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# ====================================================================== the Predictor interface

def test_predictor_gives_every_task_one_interface(predictors: dict[str, Predictor], tiny_runs: dict[str, Path]) -> None:  # noqa: F811
    for operation, p in predictors.items():
        info = p.info()
        evaluation = json.loads((tiny_runs[p.task] / "evaluation_test.json").read_text())
        assert info["task"] == p.task and info["operation"] == operation and info["benchmark"] == evaluation["benchmark"]
        assert info["scores"] and all(info["scores"][m] == evaluation[m] for m in info["scores"])
        assert info["config"]["model"] == json.loads((tiny_runs[p.task] / "config.json").read_text())["model"]
        other = next(o for o in predictors if o != operation)
        with pytest.raises(seqnlp.SeqnlpError, match=f"is a {p.task} model: it answers {operation}, not {other}"):
            getattr(p, "generate_stream" if other == "generate" else other)(["x"])

    texts = [TEXT["classify"], "bad awful the a movie film"]
    classified = predictors["classify"].classify(texts)
    assert [r["label"] for r in classified] == predictors["classify"].model.predict_labels(texts)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in classified)

    lm = predictors["generate"]
    pieces = list(lm.generate_stream("to be", 30, temperature=0.9, top_k=5, top_p=0.95, seed=3))
    assert len(pieces) == 30 and "to be" + "".join(pieces) == lm.model.generate("to be", 30, 0.9, 5, 0.95, seed=3)
    with pytest.raises(seqnlp.SeqnlpError, match="never seen in training"):
        lm.generate_stream("@@", 5)  # checked at the call, before any character is asked for

    mt = predictors["translate"]
    sources = [TEXT["translate"], "a girl paints a picture"]
    rows = mt.translate(sources, beam_size=2, attention=True)
    assert [r["translation"] for r in rows] == mt.model.translate(sources, beam=2)
    for source, r in zip(sources, rows):
        assert len(r["attention"]) == len(r["target_tokens"]) and r["target_tokens"][-1] == "<eos>"
        assert all(len(row) == len(r["source_tokens"]) and abs(sum(row) - 1) < 1e-3 for row in r["attention"])
        alone = mt.model.attention(source, beam=2)  # the one-sentence method agrees with the batched one
        assert (alone[0], alone[1]) == (r["source_tokens"], r["target_tokens"])

    (tagged,) = predictors["tag"].tag([TEXT["tag"]])
    assert [t["tag"] for t in tagged["tokens"]] == predictors["tag"].model.predict_tags([TEXT["tag"].split()])[0]


def test_model_names_come_from_the_folder_or_name_equals(tiny_runs: dict[str, Path]) -> None:  # noqa: F811
    assert _named("sst=runs/a") == ("sst", "runs/a") and _named("runs/a=b/c") == (None, "runs/a=b/c")
    assert Predictor.load(tiny_runs["tagging"]).name == tiny_runs["tagging"].name
    with pytest.raises(seqnlp.SeqnlpError, match="model name 'a b' must be"):
        Predictor.load(tiny_runs["tagging"], name="a b")
    p = Predictor.load(tiny_runs["tagging"], name="x")
    with pytest.raises(seqnlp.SeqnlpError, match="two models have the same name"):
        create_app([p, p])


def test_the_command_line_refuses_bad_arguments_in_one_line(tiny_runs: dict[str, Path], tmp_path: Path,  # noqa: F811
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from seqnlp.serve import main

    run = str(tiny_runs["sentiment"])
    for argv, needle in [(["--model", str(tmp_path / "nope")], "does not exist"),
                         (["--model", run, "--max-batch", "0"], "--max-batch must be at least 1"),
                         (["--model", run, "--model", run], "two models have the same name")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ====================================================================== the API

def test_api_answers_every_task_as_the_predictor_does(client: TestClient, predictors: dict[str, Predictor]) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == 4 and set(health["batches"]) == {"sentiment", "translation", "tagging"}
    listed = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert listed == {p.name: json.loads(json.dumps(p.info())) for p in predictors.values()}
    assert client.get("/models/sentiment").json()["operation"] == "classify"

    texts = [TEXT["classify"], "movie terrible was film dreadful the"]
    r = client.post("/models/sentiment/classify", json={"texts": texts})
    assert r.status_code == 200 and r.json()["results"] == predictors["classify"].classify(texts)
    r = client.post("/models/translation/translate", json={"texts": [TEXT["translate"]], "beam_size": 2, "attention": True})
    assert r.json()["results"] == predictors["translate"].translate([TEXT["translate"]], beam_size=2, attention=True)
    r = client.post("/models/translation/translate", json={"texts": [TEXT["translate"]]})
    assert r.json()["results"] == [{"translation": predictors["translate"].model.translate([TEXT["translate"]])[0]}]
    r = client.post("/models/tagging/tag", json={"texts": [TEXT["tag"]]})
    assert r.json()["results"] == predictors["tag"].tag([TEXT["tag"]])

    body = {"prime": "to be", "length": 25, "temperature": 0.8, "top_p": 0.9, "seed": 7}
    r = client.post("/models/generation/generate", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = events(r.text)
    expected = predictors["generate"].generate("to be", 25, 0.8, None, 0.9, seed=7)
    assert got[0] == ("start", {"model": "generation", "seed": 7, "prime": "to be"})
    assert [name for name, _ in got[1:-1]] == ["token"] * 25 and got[-1] == ("done", {"text": expected})
    assert "to be" + "".join(d["text"] for _, d in got[1:-1]) == expected
    # no seed given: the server draws one and says which, so the text can be had again
    seed = events(client.post("/models/generation/generate", json={"length": 5}).text)[0][1]["seed"]
    again = events(client.post("/models/generation/generate", json={"length": 5, "seed": seed}).text)
    assert again[-1][1]["text"] == predictors["generate"].generate("", 5, seed=seed)

    page = client.get("/")
    assert page.status_code == 200 and "<script>" in page.text and page.headers["content-type"].startswith("text/html")


def _chunks(size: int):  # type: ignore[no-untyped-def]
    yield b'{"texts": ["'
    yield b"a" * size
    yield b'"]}'


J = {"content-type": "application/json"}
CLS, GEN, MT = "/models/sentiment/classify", "/models/generation/generate", "/models/translation/translate"
# (case, method, path, json body or raw bytes, headers, status, field the error names)
BAD = [
    ("not JSON content type", "POST", CLS, b'{"texts": ["a"]}', {"content-type": "text/plain"}, 415, "content-type"),
    ("invalid JSON", "POST", CLS, b'{"texts": [', J, 400, "body"),
    ("invalid UTF-8", "POST", CLS, b'{"texts": ["\xff"]}', J, 400, "body"),
    ("body not an object", "POST", CLS, [1, 2], None, 422, "body"),
    ("body over the size limit", "POST", CLS, {"texts": ["a" * 3000]}, None, 413, "body"),
    ("chunked body over the size limit", "POST", CLS, "chunks", J, 413, "body"),
    ("texts missing", "POST", CLS, {}, None, 422, "texts"),
    ("texts a string", "POST", CLS, {"texts": "a good film"}, None, 422, "texts"),
    ("texts empty", "POST", CLS, {"texts": []}, None, 422, "texts"),
    ("too many texts", "POST", CLS, {"texts": ["a"] * 5}, None, 422, "texts"),
    ("text too long", "POST", CLS, {"texts": ["a" * 51]}, None, 422, "texts.0"),
    ("text not a string", "POST", CLS, {"texts": ["a", 3]}, None, 422, "texts.1"),
    ("blank text", "POST", "/models/tagging/tag", {"texts": ["   "]}, None, 422, "texts.0"),
    ("unknown field", "POST", CLS, {"texts": ["a"], "text": "a"}, None, 422, "text"),
    ("unknown model", "POST", "/models/nope/classify", {"texts": ["a"]}, None, 404, "model"),
    ("another task's operation", "POST", "/models/sentiment/tag", {"texts": ["a"]}, None, 404, "operation"),
    ("unknown operation", "POST", "/models/sentiment/summarize", {"texts": ["a"]}, None, 404, "operation"),
    ("GET on a POST endpoint", "GET", CLS, None, None, 405, None),
    ("unknown path", "GET", "/nothing", None, None, 404, None),
    ("generation too long", "POST", GEN, {"length": 101}, None, 422, "length"),
    ("length a string", "POST", GEN, {"length": "10"}, None, 422, "length"),
    ("length a float", "POST", GEN, {"length": 10.5}, None, 422, "length"),
    ("temperature zero", "POST", GEN, {"temperature": 0}, None, 422, "temperature"),
    ("top-p over 1", "POST", GEN, {"top_p": 1.5}, None, 422, "top_p"),
    ("top-k zero", "POST", GEN, {"top_k": 0}, None, 422, "top_k"),
    ("negative seed", "POST", GEN, {"seed": -1}, None, 422, "seed"),
    ("prime too long", "POST", GEN, {"prime": "to be " * 10}, None, 422, "prime"),
    ("prime with unseen characters", "POST", GEN, {"prime": "QZ@"}, None, 422, "prime"),
    ("beam too wide", "POST", MT, {"texts": ["a cat"], "beam_size": 5}, None, 422, "beam_size"),
    ("beam a boolean", "POST", MT, {"texts": ["a cat"], "beam_size": True}, None, 422, "beam_size"),
    ("attention not a boolean", "POST", MT, {"texts": ["a cat"], "attention": "yes"}, None, 422, "attention"),
]


@pytest.mark.parametrize(("case", "method", "path", "body", "headers", "status", "field"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_is_a_4xx_naming_the_field_and_the_server_goes_on(client: TestClient, case: str, method: str,
                                                                         path: str, body, headers, status: int,
                                                                         field: str | None) -> None:
    if body == "chunks":
        r = client.request(method, path, content=_chunks(3000), headers=headers)
    elif isinstance(body, bytes):
        r = client.request(method, path, content=body, headers=headers)
    else:
        r = client.request(method, path, json=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()
    assert error["field"] == field and isinstance(error["error"], str) and error["error"]
    assert "Traceback" not in r.text and "\n" not in error["error"]
    if field not in (None, "body", "content-type", "model", "operation"):
        assert field.split(".")[0] in error["error"]  # the message names the field too
    ok = client.post(CLS, json={"texts": ["a good film"]})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1


def test_the_limits_are_options(predictors: dict[str, Predictor]) -> None:
    with TestClient(create_app([predictors["classify"]], ServeConfig(max_texts=100, max_chars=5000))) as c:
        assert c.post(CLS, json={"texts": ["a good film " * 300] * 80}).status_code == 200
        assert c.post(CLS, json={"texts": ["a"] * 101}).status_code == 422


def test_an_app_serves_requests_from_one_event_loop_after_another(predictors: dict[str, Predictor]) -> None:
    c = TestClient(create_app([predictors["classify"]]))  # without `with`, each request runs in a loop of its own
    assert [c.post(CLS, json={"texts": ["a good film"]}).status_code for _ in range(2)] == [200, 200]


# ====================================================================== dynamic batching

def _counting(p: Predictor, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every classify call the server makes on `p`."""
    sizes: list[int] = []
    real = p.classify

    def classify(texts):  # type: ignore[no-untyped-def]
        sizes.append(len(texts))
        return real(texts)

    monkeypatch.setattr(p, "classify", classify)
    return sizes


async def _concurrently(app, bodies: list[dict]) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        return await asyncio.gather(*(c.post(CLS, json=b) for b in bodies))


def test_concurrent_requests_share_one_forward_pass(predictors: dict[str, Predictor],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    p = predictors["classify"]
    texts = [f"{w} film acting story" for w in ("good", "bad", "wonderful", "awful", "boring", "great", "dull", "fine")]
    alone = [p.classify([t])[0] for t in texts]
    sizes = _counting(p, monkeypatch)
    # A long wait: the batch closes because it is full (8 texts), never on a timer.
    app = create_app([p], ServeConfig(max_batch=8, max_wait_ms=10_000))
    responses = asyncio.run(_concurrently(app, [{"texts": [t]} for t in texts]))
    assert sizes == [8] and all(r.status_code == 200 for r in responses)
    assert app.state.batchers["sentiment"].calls == 1 and app.state.batchers["sentiment"].items == 8
    for r, expected in zip(responses, alone):  # each request gets its own text's answer back
        (got,) = r.json()["results"]
        assert got["label"] == expected["label"]
        assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)

    sizes.clear()
    app = create_app([p], ServeConfig(max_batch=1))
    assert all(r.status_code == 200 for r in asyncio.run(_concurrently(app, [{"texts": [t]} for t in texts[:4]])))
    assert sizes == [1, 1, 1, 1]  # --max-batch 1: no batching


def test_batches_are_bounded_requests_never_split_and_a_bad_one_fails_alone() -> None:
    from seqnlp.errors import SeqnlpError

    calls: list[list[str]] = []

    def fn(items: list[str], key: object) -> list[str]:
        calls.append(list(items))
        if "bad" in items:
            raise SeqnlpError("row has a bad text")
        return [f"{key}:{i}" for i in items]

    async def direct(f, *args):  # type: ignore[no-untyped-def]
        return f(*args)

    async def main() -> list:
        batcher = Batcher(fn, direct, max_batch=3, max_wait=10.0)  # full batches only: no timer decides
        requests = [(["a"], 1), (["b"], 1), (["c", "d"], 1), (["e"], 2), (["f", "g", "h", "i"], 1), (["j"], 1),
                    (["bad"], 1), (["k"], 1)]
        tasks = [asyncio.ensure_future(batcher(items, key)) for items, key in requests]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    # [a b] then c+d would overflow 3: it starts the next batch; e (another key) shares that turn in its own
    # call; f-i is over the bound and runs alone; j bad k: one failed call, then each alone.
    assert calls == [["a", "b"], ["c", "d"], ["e"], ["f", "g", "h", "i"], ["j", "bad", "k"], ["j"], ["bad"], ["k"]]
    assert results[:6] == [["1:a"], ["1:b"], ["1:c", "1:d"], ["2:e"], ["1:f", "1:g", "1:h", "1:i"], ["1:j"]]
    assert isinstance(results[6], SeqnlpError) and results[7] == ["1:k"]


# ====================================================================== a real server, a real browser

@pytest.fixture(scope="module")
def server(predictors: dict[str, Predictor]):  # type: ignore[no-untyped-def]
    """uvicorn serving the four tiny models on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(create_app(list(predictors.values())), host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)


class Gate:
    """Wraps generate_stream so the stream stalls after `first` characters until `open()` (set by the test)."""

    def __init__(self, p: Predictor, first: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.released, self.first, real = threading.Event(), first, p.generate_stream

        def generate_stream(*args, **kwargs):  # type: ignore[no-untyped-def]
            stream = real(*args, **kwargs)

            def gated():  # type: ignore[no-untyped-def]
                for i, piece in enumerate(stream):
                    if i == self.first:
                        assert self.released.wait(30), "the test never opened the gate"
                    yield piece

            return gated()

        monkeypatch.setattr(p, "generate_stream", generate_stream)

    def open(self) -> None:
        self.released.set()


def test_generation_streams_each_character_as_it_is_sampled(server: str, predictors: dict[str, Predictor],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(predictors["generate"], 3, monkeypatch)
    seen: list[tuple[str, dict]] = []
    with httpx.stream("POST", f"{server}{GEN}", json={"prime": "to", "length": 12, "seed": 2}, timeout=30) as r:
        buffer = ""
        for chunk in r.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                seen += events(block)
                if len(seen) == 4:  # start + 3 characters arrived, and the 4th cannot be sampled until now
                    gate.open()
    assert gate.released.is_set() and [n for n, _ in seen] == ["start"] + ["token"] * 12 + ["done"]
    assert seen[-1][1]["text"] == predictors["generate"].generate("to", 12, seed=2)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1100,1700"]


@pytest.fixture()
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


def test_the_demo_page_in_a_real_browser(server: str, browser, predictors: dict[str, Predictor], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes")
    cards = {c.get_attribute("data-operation"): c for c in browser.find_elements(By.CSS_SELECTOR, "section.model")}
    assert set(cards) == {"classify", "generate", "translate", "tag"}
    assert "tiny_sentiment · accuracy" in cards["classify"].find_element(By.CLASS_NAME, "meta").text

    def submit(operation: str, values: dict[str, str]) -> None:
        card = cards[operation]
        for name, value in values.items():
            box = card.find_element(By.NAME, name)
            box.clear()
            box.send_keys(value)
        card.find_element(By.CSS_SELECTOR, "button.run").click()

    def finished(operation: str) -> object:
        output = cards[operation].find_element(By.CLASS_NAME, "output")
        wait.until(lambda d: output.get_attribute("data-state") in ("done", "error"))
        assert cards[operation].find_element(By.CLASS_NAME, "error").text == ""
        return output

    # sentiment: one bar per class, as wide as its probability, the predicted class marked
    submit("classify", {"text": TEXT["classify"]})
    (expected,) = predictors["classify"].classify([TEXT["classify"]])
    rows = finished("classify").find_elements(By.CLASS_NAME, "bar-row")
    assert [r.find_element(By.CLASS_NAME, "bar-label").text for r in rows] == list(expected["probabilities"])
    for row, p in zip(rows, expected["probabilities"].values()):
        assert row.find_element(By.CLASS_NAME, "fill").get_attribute("style") == f"width: {100 * p:.2f}%;"
    assert cards["classify"].find_element(By.CSS_SELECTOR, ".bar-row.top .bar-label").text == expected["label"]

    # generation: the text appears while it is sampled (stalled after 5 characters), then completes
    full = predictors["generate"].generate("to be", 40, 0.8, None, 0.9, seed=4)
    gate = Gate(predictors["generate"], 5, monkeypatch)
    submit("generate", {"prime": "to be", "length": "40", "seed": "4", "top_p": "0.9"})

    def generated() -> str:  # the generated text shown so far ("" before the first event)
        found = cards["generate"].find_elements(By.CLASS_NAME, "generated")
        return found[0].text if found else ""

    wait.until(lambda d: len(generated()) >= len("to be") + 5)
    out = cards["generate"].find_element(By.CLASS_NAME, "output")
    assert generated() == full[:len("to be") + 5] and out.get_attribute("data-state") == "streaming"
    gate.open()
    assert finished("generate").find_element(By.CLASS_NAME, "generated").text == full

    # translation: the output, and the attention heatmap with one row per output token, one column per source token
    submit("translate", {"text": TEXT["translate"], "beam_size": "2"})
    (r,) = predictors["translate"].translate([TEXT["translate"]], beam_size=2, attention=True)
    output = finished("translate")
    assert output.find_element(By.CLASS_NAME, "translation").text == r["translation"]
    heat = output.find_elements(By.CSS_SELECTOR, ".heatmap tbody tr")
    assert [row.find_element(By.TAG_NAME, "th").text for row in heat] == [t.strip() for t in r["target_tokens"]]
    assert all(len(row.find_elements(By.TAG_NAME, "td")) == len(r["source_tokens"]) for row in heat)

    # tagging: each entity highlighted with its type
    submit("tag", {"text": TEXT["tag"]})
    (tagged,) = predictors["tag"].tag([TEXT["tag"]])
    marks = finished("tag").find_elements(By.CSS_SELECTOR, "mark.ent")
    assert [(m.text, m.get_attribute("data-type")) for m in marks] == [(e["text"], e["type"]) for e in tagged["entities"]]
    assert finished("tag").find_element(By.CLASS_NAME, "tagged").text == TEXT["tag"]  # the text, whole, around them

    shot = tmp_path / "serve_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot of the demo page: {shot}")

    # a bad request shows its error on the page and the page keeps working
    submit("generate", {"prime": "@@"})
    error = cards["generate"].find_element(By.CLASS_NAME, "error")
    wait.until(lambda d: error.text != "")
    assert "never seen in training" in error.text
    assert not cards["generate"].find_elements(By.CLASS_NAME, "generated")
    submit("generate", {"prime": "to be"})
    assert finished("generate").find_element(By.CLASS_NAME, "generated").text == full
