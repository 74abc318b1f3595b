"""The model card (seqnlp.card) a run folder carries, and loading a run from the Hugging Face hub's cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from seqnlp.tasks import runner, spec
from test_tasks_contract import FIXTURES, train_tiny


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_tiny(tmp_path_factory, ("sentiment", "translation"))


def _results(card: ModelCard) -> dict[tuple[str, str], float]:
    """{(split, metric): value} of the card's model-index."""
    return {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}


@pytest.mark.parametrize("task", ["sentiment", "translation"])
def test_the_card_is_hub_metadata_with_the_evaluation_values(task: str, runs: dict[str, Path]) -> None:
    run = runs[task]
    text = (run / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "seqnlp" and front["license"] == "mit" and task in front["tags"]
    card = ModelCard.load(run / "README.md")
    evaluation = json.loads((run / "evaluation_test.json").read_text())
    assert card.data.pipeline_tag == {"sentiment": "text-classification", "translation": "translation"}[task]
    assert card.data.datasets == [evaluation["benchmark"]]  # a fixture benchmark: no hub id to name
    metrics = {"sentiment": ["accuracy", "macro_f1"], "translation": ["bleu", "chrf", "perplexity"]}[task]
    assert _results(card) == {("test", m): round(evaluation[m], 4) for m in metrics}
    assert {r.dataset_name for r in card.data.eval_results} == {evaluation["benchmark"]}
    assert card.data.to_dict()["training_hardware"] and "## Training" in text and '"task": "' + task in text
    assert 'seqnlp.load("user/repo")' in text and f"python -m seqnlp.tasks.{task}" in text
    if task == "translation":  # sacreBLEU's signature, as the evaluation JSON carries it
        assert evaluation["signatures"]["bleu"].replace("|", "\\|") in text


def test_evaluate_refreshes_the_card(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQNLP_TASKS_DIR", str(FIXTURES))
    run = tmp_path / "run"
    shutil.copytree(runs["sentiment"], run)
    before = ModelCard.load(run / "README.md")
    assert runner.main(spec("sentiment"), ["evaluate", "--model", str(run), "--split", "validation"]) == 0
    after = ModelCard.load(run / "README.md")
    validation = json.loads((run / "evaluation_validation.json").read_text())
    assert _results(after) == {**_results(before), **{(validation["split"], m): round(validation[m], 4)
                                                     for m in ("accuracy", "macro_f1")}}
    assert after.data.to_dict()["training_hardware"] == before.data.to_dict()["training_hardware"]
    # an evaluation written elsewhere leaves the run's card as it was
    assert runner.main(spec("sentiment"), ["evaluate", "--model", str(run), "--output", str(tmp_path / "e")]) == 0
    assert ModelCard.load(run / "README.md").content == after.content and not (tmp_path / "e" / "README.md").exists()


def _cache_repo(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay `folder` out in `cache` as huggingface_hub does: blobs, snapshots/<commit>/<file> links, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    for file in folder.iterdir():
        if not file.is_file() or file.name.startswith("."):
            continue
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / file.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_load_a_repo_id_from_the_hub_cache_offline(runs: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    import seqnlp

    cache, work = tmp_path / "hub", tmp_path / "work"
    _cache_repo(cache, "someone/tiny-sentiment", runs["sentiment"])
    work.mkdir()
    # what HF_HUB_CACHE=... HF_HUB_OFFLINE=1 set when huggingface_hub is imported (it reads them then)
    for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", True)):
        monkeypatch.setenv(name, str(value))
        monkeypatch.setattr(constants, name, value)
    monkeypatch.chdir(work)
    expected = seqnlp.load(runs["sentiment"]).predict(["a great film"])
    assert seqnlp.load("someone/tiny-sentiment").predict(["a great film"]) == expected
    assert seqnlp.run_folder("someone/tiny-sentiment").parent == cache / "models--someone--tiny-sentiment" / "snapshots"
    with pytest.raises(seqnlp.SeqnlpError) as err:
        seqnlp.load("someone/not-cached")
    message = str(err.value)
    assert "someone/not-cached is neither a local folder nor in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE is set" in message and "\n" not in message
    shutil.copytree(runs["sentiment"], work / "someone" / "tiny-sentiment")  # a local folder named as the repo
    assert seqnlp.run_folder("someone/tiny-sentiment") == Path("someone") / "tiny-sentiment"  # the local path wins
