"""ONNX export (seqnlp.export): every task's graphs answer as the PyTorch model does, within 1e-4, on padded batches
of other sizes and lengths than the one they were traced with, and the onnxruntime predictor answers the library
calls as seqnlp.load's does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import seqnlp
from seqnlp.data import pad
from seqnlp.tasks import KINDS
from test_tasks_contract import train_tiny

pytest.importorskip("onnxruntime")
from seqnlp import export  # after the skip: it needs the onnx extra

TEXTS = ["a great film", "bad", "a dull and boring film , really", "fine", "good good film"]
SENTENCES = [["Ana", "vive", "en", "Lima", "."], ["Hola"], ["El", "presidente", "de", "Francia"], ["Madrid"],
             ["Luis", "y", "Ana", "."]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """task → (tiny run folder, its ONNX export, made through the command line)."""
    out = {}
    for task, run in train_tiny(tmp_path_factory, sorted(KINDS)).items():
        onnx = tmp_path_factory.mktemp(task) / "onnx"
        assert export.main(["--model", str(run), "--format", "onnx", "--output", str(onnx)]) == 0
        out[task] = run, onnx
    return out


def _inputs(task: str, predictor, n: int) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs of each exported part for n rows of different lengths (padded), unlike the traced example."""
    g = torch.Generator().manual_seed(n)
    if task == "sentiment":
        from seqnlp.tasks.sentiment import encode_texts

        return {"classifier": pad(encode_texts(predictor.tokenizer, TEXTS[:n], predictor.model.config),
                                  predictor.tokenizer.pad_id)}
    if task == "tagging":
        batch = predictor.encoder.batch(SENTENCES[:n])
        return {"tagger": (batch.ids, batch.chars, batch.lengths)}
    if task == "generation":
        c = predictor.model.config
        state = [torch.randn(c.layers, n, c.hidden_size, generator=g) for _ in range(2 if c.cell == "lstm" else 1)]
        return {"step": (torch.randint(0, predictor.tokenizer.vocab_size, (n,), generator=g), *state)}
    ids, lengths = pad(predictor.source_tokenizer.encode_batch(TEXTS[:n]), 0)  # (n, T), (n,)
    hidden, _, _, memory, keys, mask = predictor.model.start(ids, lengths)
    rows = torch.arange(n).repeat_interleave(2)  # (2n,): two decoding rows per source, as in a beam
    states = hidden if isinstance(hidden, tuple) else (hidden,)
    states = tuple(torch.randn(s.shape[0], 2 * n, s.shape[2], generator=g) for s in states)  # (Ld, 2n, H)
    tokens = torch.randint(0, predictor.target_tokenizer.vocab_size, (2 * n,), generator=g)
    return {"encoder": (ids, lengths), "decoder": (tokens, rows, memory, keys, mask, *states)}


@pytest.mark.parametrize("task", sorted(KINDS))
def test_the_exported_graphs_equal_pytorch_on_padded_batches_of_any_size(task: str, exported) -> None:
    run, onnx = exported[task]
    manifest = json.loads((onnx / export.MANIFEST).read_text())
    assert manifest["task"] == task and all(p["max_abs_diff"] <= 1e-4 for p in manifest["parts"].values())
    assert (onnx / "config.json").read_bytes() == (run / "config.json").read_bytes() and (onnx / "README.md").exists()
    assert not list(onnx.glob("*.safetensors"))  # the folder stands alone without the PyTorch weights
    torch_predictor = seqnlp.load(run)
    sessions = {name: export.OnnxPart(onnx / p["file"], p["inputs"]) for name, p in manifest["parts"].items()}
    with export.fp32_encoders(torch_predictor.model), torch.no_grad():
        parts = torch_predictor.onnx_parts()
        for n in (1, 5):
            for name, inputs in _inputs(task, torch_predictor, n).items():
                named = dict(zip(manifest["parts"][name]["inputs"], inputs))
                if n == 5 and "lengths" in named:  # the batch really is padded
                    assert int(named["lengths"].min()) < int(named["lengths"].max()) == named["ids"].shape[1]
                expected = parts[name]["module"](*inputs)
                expected = expected if isinstance(expected, tuple) else (expected,)
                got = sessions[name](*inputs)
                assert len(got) == len(expected) == len(manifest["parts"][name]["outputs"])
                for e, o in zip(expected, got):
                    assert e.shape == o.shape and float((e.float() - o.float()).abs().max()) <= 1e-4, (name, n)

def test_a_padded_row_scores_as_it_does_alone(exported) -> None:
    """The encoder stays exact on padded batches: a short row in a padded batch equals the row alone."""
    onnx = export.load_onnx(exported["sentiment"][1])
    alone = torch.cat([onnx.probabilities([t]) for t in TEXTS])  # (5, C), no padding
    assert float((onnx.probabilities(TEXTS) - alone).abs().max()) <= 1e-6
    tagger = export.load_onnx(exported["tagging"][1])
    batch = tagger.encoder.batch(SENTENCES)
    scores = tagger.model.part(batch.ids, batch.chars, batch.lengths)[0]  # (5, T, C)
    for i, words in enumerate(SENTENCES):
        one = tagger.encoder.batch([words])
        single = tagger.model.part(one.ids, one.chars, one.lengths)[0][0]  # (T_i, C)
        assert float((scores[i, :len(words)] - single).abs().max()) <= 1e-5


def test_the_onnx_predictor_answers_the_library_calls_as_pytorch(exported) -> None:
    loaded = {task: (seqnlp.load(run), export.load_onnx(onnx)) for task, (run, onnx) in exported.items()}
    for torch_predictor, _ in loaded.values():
        for m in torch_predictor.model.modules():  # compare against the fp32 recurrence the graphs hold
            if hasattr(m, "precision"):
                m.precision = "fp32"
    pt, ox = loaded["sentiment"]
    assert [r["label"] for r in ox.predict(TEXTS)] == [r["label"] for r in pt.predict(TEXTS)]
    assert float((ox.probabilities(TEXTS) - pt.probabilities(TEXTS)).abs().max()) <= 1e-5
    pt, ox = loaded["tagging"]
    assert ox.tag(["Ana vive en Lima ."]) == pt.tag(["Ana vive en Lima ."])
    assert ox.predict_tags(SENTENCES) == pt.predict_tags(SENTENCES)
    pt, ox = loaded["generation"]
    assert ox.generate("to", 40, temperature=0.8, seed=3) == pt.generate("to", 40, temperature=0.8, seed=3)
    assert ox.log_prob("to be or not to be") == pytest.approx(pt.log_prob("to be or not to be"), abs=1e-3)
    pt, ox = loaded["translation"]
    for beam in (1, 2):
        assert ox.translate(TEXTS, beam=beam) == pt.translate(TEXTS, beam=beam)
    assert ox.target_nll(TEXTS, TEXTS) == pytest.approx(pt.target_nll(TEXTS, TEXTS), rel=1e-4)
    with pytest.raises(seqnlp.SeqnlpError, match="is an ONNX export, which translates but has no attention"):
        ox.attention(TEXTS[0])
    assert pt.attention(TEXTS[0])[2].shape[1] > 0


def test_load_onnx_of_a_run_folder_and_export_of_nothing_are_one_line_errors(exported, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(seqnlp.SeqnlpError, match="holds no onnx.json; export a run first"):
        export.load_onnx(exported["sentiment"][0])
    assert export.main(["--model", str(tmp_path / "nothing"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--model", str(exported["sentiment"][0]), "--format", "tflite", "--output", "o"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice" in err


def test_export_on_a_machine_with_no_cached_precision_decisions(exported, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A user's first export: nothing fixed or cached, so no kernel or precision probe may run inside the trace.
    monkeypatch.delenv("SEQNLP_AUTO_PRECISION", raising=False)
    monkeypatch.setenv("SEQNLP_CACHE_DIR", str(tmp_path / "cache"))
    from seqnlp import precision

    precision.forget()
    try:
        for task in ("sentiment", "tagging"):
            run, _ = exported[task]
            assert export.main(["--model", str(run), "--format", "onnx", "--output", str(tmp_path / task)]) == 0
    finally:
        precision.forget()


def test_an_ensemble_language_model_exports_and_answers_as_pytorch(tmp_path: Path) -> None:
    from test_generation import FIXTURE, TINY

    from seqnlp.tasks import generation

    run, onnx = tmp_path / "run", tmp_path / "onnx"
    assert generation.main(["--dataset", str(FIXTURE), *TINY, "--ensemble", "2", "--max-steps", "4",
                            "--output", str(run)]) == 0
    assert export.main(["--model", str(run), "--format", "onnx", "--output", str(onnx)]) == 0
    pt, ox = seqnlp.load(run), export.load_onnx(onnx)
    assert ox.generate("Love", 40, temperature=0.8, seed=3) == pt.generate("Love", 40, temperature=0.8, seed=3)
    assert ox.log_prob("Love is not love") == pytest.approx(pt.log_prob("Love is not love"), abs=1e-3)
