"""Load dataset splits (local mirror → local files → Hugging Face hub), and batch them by length.

Where `load_split(source, split)` looks, in order:
1. a local path, when `source` names an existing file or a folder holding data files: a folder of
   `<split>.<ext>` files (parquet, jsonl, json, csv, tsv, txt; shards `<split>-00000-of-00002.<ext>` are
   concatenated), or one file, which is the train split. A .txt file is one row {"text": whole file}.
   Sources that look like paths ("./x", "/x", "a/b/c", "x.csv") are only looked for here.
2. the local mirror: `$SEQNLP_DATA_DIR/<name>/<split>.parquet` (or `data_dir=`), where <name> is the last
   part of a hub id ("stanfordnlp/imdb" → "imdb") or the source itself ("imdb"). Read without any network.
3. the Hugging Face hub through `datasets.load_dataset(hub_id, split=split)`, after a 1.5-second check that
   the hub answers; with no network the error comes at once instead of after ~24 s of retries.
   With HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 (set before start-up) only the `datasets` cache is used.

Input policy (every problem is one SeqnlpError line naming the file and the fix):
- Text files (csv, tsv, json, jsonl, txt) must be UTF-8; the first undecodable byte is reported with its byte
  offset and line (a UTF-8 byte-order mark is fine and is not part of the text; UTF-16 files are recognised
  and named as such).
- A split never comes back empty: a 0-byte or whitespace-only file, a csv with only a header, a json `[]`
  or a parquet file with no rows holds no examples, and a split made only of such files is refused.
  (Empty shards beside non-empty ones are skipped.)
- csv rows with more fields than the header are refused (pandas would silently turn the first column into an
  index and shift every column).
- Row values are not judged here: missing (None) and empty texts reach the tasks, which decide per task
  (sentiment and translation refuse them naming the row; generation skips empty rows, which hold no
  characters). `check_columns` names missing columns and lists the existing ones.

Batching: `BucketBatchSampler` groups examples of similar length, `pad` builds (ids, lengths) tensors,
`Batch` carries them through models and the trainer; `deal` cuts global batches into one part per process.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from itertools import chain
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets.table import InMemoryTable

from seqnlp.errors import SeqnlpError


@dataclass
class Batch:
    """A right-padded batch. Optional fields are set by the tasks that need them.

    ids:            (B, T) input token ids, right-padded with the tokenizer's pad id
    lengths:        (B,)   real lengths of `ids` rows (>= 1), on the same device as ids
    labels:         (B,)   class ids (classification)
    targets:        (B, T) next-token targets aligned with ids (language modelling)
    target_ids:     (B, U) target sequences with bos/eos (seq2seq), right-padded
    target_lengths: (B,)   real lengths of `target_ids` rows
    index:          (B,)   positions of the examples in their dataset (to restore order after bucketing)
    """

    ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    target_ids: torch.Tensor | None = None
    target_lengths: torch.Tensor | None = None
    index: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor field to `device`."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool, True at real positions of `ids`."""
        return torch.arange(self.ids.size(1), device=self.ids.device)[None, :] < self.lengths[:, None]

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) input tokens in the batch, for tokens/s."""
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return self.ids.size(0)


# ====================================================================== loading splits

DATA_DIR_ENV = "SEQNLP_DATA_DIR"
FORMATS = ("parquet", "jsonl", "json", "csv", "tsv", "txt")  # preference order when a split has several
HUB_CHECK_SECONDS = 1.5  # how long to wait for the hub to answer before declaring it unreachable
_SHARD = re.compile(r"^(.+?)-\d+(?:-of-\d+)?$")
_SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}
_TABLE_CACHE: OrderedDict[tuple[str, int, int], pa.Table] = OrderedDict()  # decoded parquet, by file identity
_TABLE_CACHE_SIZE = 8
_hub_state: dict[str, tuple[float, str]] = {}  # endpoint → (time, problem) of the last failed check


def _ordered(splits: Sequence[str]) -> list[str]:
    return sorted(set(splits), key=lambda s: (_SPLIT_ORDER.get(s, 3), s))


def mirror_name(source: str) -> str:
    """Folder name of `source` in the local mirror: the last part of a hub id ("stanfordnlp/imdb" → "imdb")."""
    return source.rstrip("/").rsplit("/", 1)[-1]


def _data_dir(data_dir: str | Path | None) -> Path | None:
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def _looks_like_path(source: str) -> bool:
    """True for sources that can only be local paths, never hub ids (hub ids are 'name' or 'owner/name')."""
    return (os.path.isabs(source) or source.startswith((".", "~")) or "\\" in source
            or source.rstrip("/").count("/") >= 2 or Path(source).suffix.lstrip(".").lower() in FORMATS)


def _split_files(folder: Path) -> dict[str, list[Path]]:
    """split name → its files in `folder` (one file, or sorted shards), taking the preferred format."""
    found: dict[str, dict[str, list[Path]]] = {}
    for path in sorted(folder.iterdir()):
        ext = path.suffix.lstrip(".").lower()
        if ext not in FORMATS or not path.is_file() or path.name.startswith("."):
            continue
        shard = _SHARD.match(path.stem)
        split = shard.group(1) if shard else path.stem  # train-00000-of-00002 → train
        found.setdefault(split, {}).setdefault(ext, []).append(path)
    return {split: next(by_ext[e] for e in FORMATS if e in by_ext) for split, by_ext in found.items()}


def _read_parquet(path: Path) -> pa.Table:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    table = _TABLE_CACHE.get(key)
    if table is None:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as err:
            raise SeqnlpError(f"{path} is not a readable parquet file ({err}); the file is corrupt or truncated") from None
        _TABLE_CACHE[key] = table
        while len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
            _TABLE_CACHE.popitem(last=False)
    _TABLE_CACHE.move_to_end(key)
    return table


def _utf8_problem(path: Path, chunk_size: int = 1 << 20) -> tuple[str | None, bool]:
    """(what is wrong with `path` as UTF-8 text or None, whether it holds any non-whitespace byte).

    Reads in chunks, so a large file never sits in memory twice; the problem names the first bad byte's
    offset and line.
    """
    has_content = False
    offset = line = 0  # of data[0]
    carry = b""  # an incomplete character cut by the chunk boundary
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "it is UTF-16 text (it starts with a UTF-16 byte-order mark)", True
        f.seek(0)
        while True:
            chunk = f.read(chunk_size)
            data = carry + chunk
            try:
                _, used = codecs.utf_8_decode(data, "strict", not chunk)
            except UnicodeDecodeError as err:
                line += data.count(b"\n", 0, err.start)
                return (f"byte 0x{data[err.start]:02x} at offset {offset + err.start} (line {line + 1}) is not "
                        "valid UTF-8"), True
            has_content = has_content or bool(data[:used].strip())
            line += data.count(b"\n", 0, used)
            offset += used
            carry = data[used:]
            if not chunk:
                return None, has_content


def _read_file(path: Path) -> datasets.Dataset | None:
    """One local file as a Dataset, or None when it holds no rows. Parquet is read in memory (ClassLabel names
    come back from its schema metadata); csv/json go through `datasets`' own readers; a .txt file is one row
    {"text": content}."""
    ext = path.suffix.lstrip(".").lower()
    if ext not in FORMATS:
        raise SeqnlpError(f"{path}: unsupported file type .{ext}; use one of {', '.join(FORMATS)}")
    if ext == "parquet":
        # A table of our own (no cache files): tables are immutable, so sharing the cached one is safe.
        table = _read_parquet(path)
        return datasets.Dataset(InMemoryTable(table)) if table.num_rows else None
    try:
        problem, has_content = _utf8_problem(path)
    except OSError as err:
        raise SeqnlpError(f"cannot read {path}: {err.strerror or err}") from None
    if problem is not None:
        encoding = "utf-16" if "UTF-16" in problem else "latin1"  # latin1: a guess, the commonest other encoding
        raise SeqnlpError(f"{path} is not UTF-8 text: {problem}; convert it to UTF-8, e.g. "
                          f"iconv -f {encoding} -t utf-8 {path.name} > fixed{path.suffix}")
    if not has_content:
        return None
    if ext == "txt":
        # Bytes, not read_text: universal-newline decoding would turn "\r\n" into "\n". A leading byte-order
        # mark (Windows editors write one) is not text: utf-8-sig drops it.
        text = path.read_bytes().decode("utf-8-sig")
        return datasets.Dataset.from_dict({"text": [text]}) if text.strip() else None
    try:
        ds = _quietly(path, ext)
    except Exception as err:  # the readers raise many kinds (ArrowInvalid, DatasetGenerationError, ...)
        cause: BaseException = err
        while cause.__cause__ is not None:  # DatasetGenerationError wraps the reader's own complaint
            cause = cause.__cause__
        if isinstance(err, ValueError) and "corresponds to no data" in str(err):
            return None  # a csv with only a header, a json []
        why = (str(cause).strip().splitlines() or [""])[0][:200]  # the whole first line: pandas puts the row last
        raise SeqnlpError(f"could not read {path}: {type(cause).__name__}: {why}; "
                          f"is it a valid {ext} file?") from None
    if ext in ("csv", "tsv") and "__index_level_0__" in ds.column_names:
        raise SeqnlpError(f"some rows of {path} have more fields than its header ({', '.join(ds.column_names[:-1])}); "
                          "quote fields that contain the separator, or fix the header")
    return ds if len(ds) else None


def _quietly(path: Path, ext: str) -> datasets.Dataset:
    """csv/tsv/json/jsonl through `datasets`' readers, without their progress bars and error log lines (the
    error is ours to report, in one line)."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        if ext in ("csv", "tsv"):
            return datasets.Dataset.from_csv(str(path), sep="\t" if ext == "tsv" else ",")
        return datasets.Dataset.from_json(str(path))
    finally:
        logger.setLevel(level)
        if not was_disabled:
            datasets.enable_progress_bars()


def _read_files(paths: list[Path]) -> datasets.Dataset:
    parts = [ds for ds in (_read_file(p) for p in paths) if ds is not None]
    if not parts:
        names = ", ".join(str(p) for p in paths)
        raise SeqnlpError(f"{names} {'holds' if len(paths) == 1 else 'hold'} no rows (an empty file, a csv header "
                          "only, or a table without rows); a split needs at least one example")
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _local_splits(path: Path) -> dict[str, list[Path]]:
    if path.is_dir():
        return _split_files(path)
    return {"train": [path]}


def _unknown_split(source: str, split: str, available: Sequence[str]) -> SeqnlpError:
    return SeqnlpError(f"dataset {source!r} has no split {split!r}; available splits: "
                       f"{', '.join(_ordered(available)) or 'none'}")


def _offline_env() -> str | None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants
        return str(constants.ENDPOINT)
    except Exception:  # pragma: no cover - huggingface_hub always comes with datasets
        return "https://huggingface.co"


def _hub_problem(endpoint: str | None = None, timeout: float = HUB_CHECK_SECONDS) -> str | None:
    """None when the hub answers an HTTP HEAD of its front page with a 2xx/3xx status within `timeout` seconds,
    else what went wrong ("no answer within 1.5 s", "HTTP 404", "name resolution failed", ...).

    Runs in a daemon thread so that a stalled DNS lookup cannot hold the caller past the timeout. Error
    statuses count as failures because sandboxes often answer every address with a 403/404 of their own.
    Proxies from the environment are honoured (urllib reads HTTPS_PROXY). Failures are remembered 30 s.
    """
    endpoint = endpoint or _hub_endpoint()
    failed = _hub_state.get(endpoint)
    if failed is not None and time.monotonic() - failed[0] < 30:
        return failed[1]
    result: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            result.append(None)
        except urllib.error.HTTPError as err:
            result.append(f"it answered HTTP {err.code}")
        except urllib.error.URLError as err:
            result.append(f"it could not be reached ({err.reason})")
        except Exception as err:
            result.append(f"it could not be reached ({type(err).__name__}: {err})")

    thread = threading.Thread(target=probe, daemon=True, name="seqnlp-hub-check")
    thread.start()
    thread.join(timeout)
    problem = result[0] if result else f"it did not answer within {timeout:g} s"
    if problem is not None:
        _hub_state[endpoint] = (time.monotonic(), problem)
    return problem


def _first_sentence(text: str, limit: int = 160) -> str:
    """The first line/sentence of a library's error message, so ours stays one readable line."""
    text = text.strip().splitlines()[0] if text.strip() else ""
    cut = text.find(". ")
    text = text[:cut + 1] if cut > 0 else text
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _hub_unavailable(source: str, split: str | None, tried: list[str], why: str) -> SeqnlpError:
    what = f"dataset {source!r}" + (f" split {split!r}" if split else "")
    return SeqnlpError(f"cannot load {what}: tried {'; '.join(tried)}; {why}. Fix: set {DATA_DIR_ENV} to a folder "
                       f"holding {mirror_name(source)}/<split>.parquet (like ../shared/data), give a local path, "
                       "or connect to the internet")


def _check_hub(source: str, split: str | None, tried: list[str]) -> None:
    """Raise at once when the hub cannot be used, instead of letting `datasets` retry for ~24 s."""
    endpoint = _hub_endpoint()
    flag = _offline_env()
    if flag and not datasets.config.HF_HUB_OFFLINE:
        # Set after `datasets` was imported, so it would still go to the network: honour the flag ourselves.
        raise _hub_unavailable(source, split, tried, f"{flag} is set, so the hub ({endpoint}) is not asked")
    problem = None if flag else _hub_problem(endpoint)
    if problem is not None:
        raise _hub_unavailable(source, split, [*tried, f"the hub ({endpoint})"], f"the hub is unavailable: {problem}")


def _is_local_data(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and bool(_split_files(path)))


def _where(source: str, data_dir: str | Path | None) -> tuple[str, Path | str, list[str]]:
    """('local', path) | ('mirror', folder) | ('hub', hub id), with the places tried before it.

    Data that exists on disk as given wins (as in `datasets.load_dataset`), so that a user's own folder is
    never swapped for a mirror copy with the same last name; then the mirror; then the hub.
    """
    tried: list[str] = []
    path = Path(source).expanduser()
    if _is_local_data(path):
        return "local", path, tried
    if _looks_like_path(source):
        raise SeqnlpError(f"dataset path {source} does not exist or holds no data files; give a file or a folder "
                          f"of <split>.<ext> files ({', '.join(FORMATS)}), or a hub id like 'stanfordnlp/imdb'")
    tried.append(f"local path {source} ({'a folder without data files' if path.is_dir() else 'missing'})")
    root = _data_dir(data_dir)
    if root is None:
        tried.append(f"no mirror ({DATA_DIR_ENV} is unset)")
    else:
        folder = root / mirror_name(source)
        if folder.is_dir():
            return "mirror", folder, tried
        tried.append(f"mirror folder {folder} (missing)")
    return "hub", source, tried


def load_split(source: str, split: str, *, data_dir: str | Path | None = None) -> datasets.Dataset:
    """Load one split of a dataset as a `datasets.Dataset` (see the module docstring for where it looks).

    source: mirror name ("imdb"), hub id ("stanfordnlp/imdb"), a folder of <split>.<ext> files, or one file
        (parquet/csv/tsv/json/jsonl, or .txt → one row {"text": content}); a single file is the "train" split.
    split: a split name, or several joined by "+" ("train+unsupervised"), read one after another (as the hub's
        `datasets.load_dataset` reads that spelling).
    data_dir: the mirror folder; defaults to $SEQNLP_DATA_DIR.
    Raises SeqnlpError (one line) for unknown splits, unreadable or non-UTF-8 files, splits without rows, and
    when nothing can be reached.
    """
    kind, where, tried = _where(str(source), data_dir)
    if "+" in split and kind in ("mirror", "local"):  # "train+unsupervised": the splits one after another
        parts = [load_split(source, part, data_dir=data_dir) for part in split.split("+")]
        try:
            return datasets.concatenate_datasets(parts)
        except ValueError as err:
            raise SeqnlpError(f"{source!r}: the splits of {split!r} do not share their columns ({err})") from None
    if kind in ("mirror", "local"):
        folder = Path(where)
        files = _split_files(folder) if kind == "mirror" else _local_splits(folder)
        if kind == "mirror":
            files = {s: f for s, f in files.items() if f[0].suffix == ".parquet"}
        if split not in files:
            if kind == "local" and folder.is_file():
                raise SeqnlpError(f"{folder} is a single file, which is the 'train' split only; there is no "
                                  f"{split!r} split (carve one with carve_validation, or give a folder of "
                                  "<split>.<ext> files)")
            raise _unknown_split(source, split, list(files))
        return _read_files(files[split])
    _check_hub(source, split, tried)
    try:
        ds = datasets.load_dataset(str(where), split=split)
    except ValueError as err:
        if "split" in str(err).lower():
            try:
                names = datasets.get_dataset_split_names(str(where))
            except Exception:
                names = []
            if names and split not in names:
                raise _unknown_split(source, split, names) from None
        raise SeqnlpError(f"could not load {source!r} split {split!r} from the hub: {_first_sentence(str(err))}") from None
    except Exception as err:  # hub errors come in many types (ConnectionError, DatasetNotFoundError, ...)
        msg = _first_sentence(str(err))
        raise _hub_unavailable(source, split, [*tried, f"the hub ({_hub_endpoint()})"],
                               f"the hub load failed with {type(err).__name__}: {msg} (is the name right?)") from None
    if len(ds) == 0:
        raise SeqnlpError(f"dataset {source!r} split {split!r} on the hub holds no rows; choose another split")
    return ds


def available_splits(source: str, *, data_dir: str | Path | None = None) -> list[str]:
    """Split names of `source` (train, validation, test first), found the same way as `load_split`."""
    kind, where, tried = _where(str(source), data_dir)
    if kind == "mirror":
        return _ordered([s for s, f in _split_files(Path(where)).items() if f[0].suffix == ".parquet"])
    if kind == "local":
        return _ordered(list(_local_splits(Path(where))))
    _check_hub(source, None, tried)
    try:
        return _ordered(datasets.get_dataset_split_names(str(where)))
    except Exception as err:
        msg = _first_sentence(str(err)) or type(err).__name__
        raise SeqnlpError(f"could not list the splits of {source!r} on the hub ({msg}); check the name") from None


def carve_validation(train: datasets.Dataset, fraction: float = 0.1,
                     seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split `train` into (train, validation) for datasets that ship no validation split.

    Deterministic: the validation rows are the first round(fraction · N) entries of
    `numpy.random.default_rng(seed).permutation(N)` (at least 1, at most N - 1); both parts keep the
    original row order. The same (N, fraction, seed) always gives the same rows.
    """
    n = len(train)
    if not 0.0 < fraction < 1.0:
        raise SeqnlpError(f"validation fraction must be between 0 and 1 (exclusive), got {fraction}")
    if n < 2:
        raise SeqnlpError(f"cannot carve a validation split from {n} row(s); need at least 2 (add examples, "
                          "or give the dataset a validation split: a validation.<ext> file beside train)")
    n_val = min(max(int(round(fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)  # (N,)
    val_idx = np.sort(perm[:n_val])  # (N_val,)
    train_idx = np.sort(perm[n_val:])  # (N - N_val,)
    return train.select(train_idx), train.select(val_idx)


def carve_sentences(train: datasets.Dataset, column: str, fraction: float = 0.1,
                    seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split a train set of sentences *and their phrases* (SST's) into (train, validation) by sentence.

    Carving random rows from such a set leaks: most phrases of a held-out row sit, as parts of longer
    rows, in train (on SST-2, 88% of a random 10% do), so validation measures recall of seen phrases (93%
    accuracy where unseen sentences get 86%). Here, with texts compared as whitespace-separated words:
    - sentences are the texts that no other text contains;
    - validation is round(fraction · number of sentences) of them, chosen by
      `numpy.random.default_rng(seed)` among the distinct sentence texts (every row of a chosen text goes);
    - train is every other row, less the phrases found only inside validation sentences (a phrase that
      also occurs in a train sentence stays, as common phrases of the scored sentences are in train too).
    Deterministic for the same rows, fraction and seed; both parts keep the original row order.
    """
    if not 0.0 < fraction < 1.0:
        raise SeqnlpError(f"validation fraction must be between 0 and 1 (exclusive), got {fraction}")
    check_columns(train, [column])
    key = (train._fingerprint, column, fraction, seed)  # loading train and validation carves once
    if key not in _CARVED:
        _CARVED.clear()
        _CARVED[key] = _carve_sentences(train, column, fraction, seed)
    train_idx, val_idx = _CARVED[key]
    return train.select(train_idx), train.select(val_idx)


_CARVED: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}


def _carve_sentences(train: datasets.Dataset, column: str, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    words = [tuple(str(t).split()) for t in train[column]]
    texts = set(words)

    def parts(w: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        """The proper sub-spans of w that are texts of the set."""
        n = len(w)
        for i in range(n):
            for j in range(i + 1, n + 1 if i else n):
                if w[i:j] in texts:
                    yield w[i:j]

    phrases = {w: set(parts(w)) for w in texts}  # each text's sub-phrases, found once
    contained = set().union(*phrases.values())
    sentences = sorted(texts - contained)  # sorted: the choice must not depend on set order
    if len(sentences) < 2:
        raise SeqnlpError(f"cannot carve validation sentences: {len(sentences)} text(s) are not part of "
                          "another; use validation_unit = \"row\"")
    n_val = min(max(int(round(fraction * len(sentences))), 1), len(sentences) - 1)
    held = {sentences[i] for i in np.random.default_rng(seed).permutation(len(sentences))[:n_val]}
    in_train_sentences = set().union(*(phrases[s] for s in sentences if s not in held))
    only_held = set().union(*(phrases[s] for s in held)) - in_train_sentences
    val_idx = [i for i, w in enumerate(words) if w in held]
    train_idx = [i for i, w in enumerate(words) if w not in held and w not in only_held]
    return train_idx, val_idx


def carve_characters(rows: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """Split rows at `1 - fraction` of their characters: (head rows, tail rows); a row at the cut is split."""
    total = sum(len(r) for r in rows)
    cut = int(round(total * (1 - fraction)))
    head: list[str] = []
    tail: list[str] = []
    pos = 0
    for r in rows:
        if pos + len(r) <= cut:
            head.append(r)
        elif pos >= cut:
            tail.append(r)
        else:
            head.append(r[:cut - pos])
            tail.append(r[cut - pos:])
        pos += len(r)
    return head, tail


def dataset_of(columns: dict[str, list[Any]]) -> datasets.Dataset:
    """A `datasets.Dataset` of the given columns (for parts made in memory, such as a carved text)."""
    return datasets.Dataset.from_dict(columns)


_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)  # IMDB reviews keep their HTML line breaks verbatim


def clean(text: str) -> str:
    """The one text normalisation of review-like text before word or subword tokenizing (training, scoring and
    prediction alike): HTML line breaks become spaces."""
    return _BREAK.sub(" ", text)


def check_texts(values: Sequence[Any], where: str, *, what: str = "text", column: str = "text",
                missing_ok: bool = False, blank_ok: bool = False) -> list[str]:
    """The values as strings (missing ones dropped when `missing_ok`); SeqnlpError naming the first row that is
    missing (None), not a string, or (unless `blank_ok`) blank, and the --<column>-column flag that picks it."""
    noun = f"{what} text" if what != "text" else "text"
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, (Sequence, Iterator)):
        raise SeqnlpError(f"{where}: expected a list of {noun}s, not {type(values).__name__} {values!r:.60}")
    values = list(values)
    for i, value in enumerate(values):
        if value is None and missing_ok:
            continue
        if value is None:
            raise SeqnlpError(f"{where}: row {i} has an empty {noun} (a missing value); remove or fill the empty rows")
        if not isinstance(value, str):
            raise SeqnlpError(f"{where}: row {i} has a {type(value).__name__} {noun} ({value!r}), not a string; fix "
                              f"the column (or choose another with --{column}-column)")
        if not blank_ok and not value.strip():
            raise SeqnlpError(f"{where}: row {i} has an empty {noun}; remove or fill the empty rows")
    return [v for v in values if v is not None]


def check_columns(ds: datasets.Dataset, names: Sequence[str], *, source: str | None = None) -> None:
    """Raise a SeqnlpError naming the missing columns and listing the existing ones."""
    missing = [n for n in names if n not in ds.column_names]
    if missing:
        where = f"dataset {source!r}" if source else "the dataset"
        raise SeqnlpError(f"{where} has no column {', '.join(repr(m) for m in missing)}; its columns are: "
                          f"{', '.join(ds.column_names)}; name one of them with the task's column flag "
                          "(--text-column, --label-column, --source-column, --target-column)")


def select_columns(ds: datasets.Dataset, mapping: dict[str, str], *, source: str | None = None) -> datasets.Dataset:
    """Keep only the mapped columns, renamed: {"text": "sentence"} turns column "sentence" into "text"."""
    check_columns(ds, list(mapping.values()), source=source)
    ds = ds.select_columns(list(dict.fromkeys(mapping.values())))
    renames = {old: new for new, old in mapping.items() if old != new}
    return ds.rename_columns(renames) if renames else ds


# ====================================================================== batching

def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id sequences into (ids (B, T) long, lengths (B,) long), T = the longest (at least 1).

    One numpy scatter for the whole batch; no per-token Python work.
    """
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))  # (B,)
    width = max(int(lengths.max(initial=0)), 1)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)  # (B, T)
    flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))  # (sum of lengths,)
    # Row-major boolean indexing visits the real positions row by row, in the order of `flat`.
    ids[np.arange(width)[None, :] < lengths[:, None]] = flat
    return torch.from_numpy(ids), torch.from_numpy(lengths)  # (B, T), (B,)


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of example indices with similar lengths, so that little of each batch is padding.

    shuffle=True: each epoch draws a random permutation, cuts it into pools of pool_batches · batch_size
    examples, sorts every pool by length (stable), cuts the pools into batches and shuffles the order of
    all batches. shuffle=False: all examples sorted by length (stable, shortest first), for evaluation.
    max_tokens: batches are also capped at batch size × longest length ≤ max_tokens (an example longer
    than max_tokens gets a batch of its own); batch_size still caps the number of sequences.
    drop_last: drop the one short batch of an epoch (without max_tokens only).
    Randomness comes only from numpy.random.default_rng([seed, epoch]): `batches(epoch)` is the same on
    every run and every process, and the global RNGs are never touched.
    Usable as a DataLoader batch_sampler; call `set_epoch(e)` before iterating each epoch.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray | torch.Tensor, batch_size: int, *,
                 max_tokens: int | None = None, pool_batches: int = 50, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        if batch_size < 1:
            raise SeqnlpError(f"batch_size must be >= 1, got {batch_size}")
        if max_tokens is not None and max_tokens < 1:
            raise SeqnlpError(f"max_tokens must be >= 1, got {max_tokens}")
        if pool_batches < 1:
            raise SeqnlpError(f"pool_batches must be >= 1, got {pool_batches}")
        if isinstance(lengths, torch.Tensor):
            lengths = lengths.cpu().numpy()
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)  # (N,)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.pool_batches = pool_batches
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self._cached: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch that `__iter__` and `__len__` describe."""
        self.epoch = epoch

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        """Cut indices already sorted by length into batches."""
        if self.max_tokens is None:
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        # Ascending lengths: the example being added is the batch's longest, so the padded size of the
        # batch with it is (count + 1) × its length. A per-example loop; sequences are never split.
        batches, start = [], 0
        lens = self.lengths[order]  # (N_pool,)
        for i in range(1, len(order) + 1):
            if i == len(order) or i - start >= self.batch_size or (i - start + 1) * lens[i] > self.max_tokens:
                batches.append(order[start:i])
                start = i
        return batches

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of `epoch` (default: the current one), as lists of example indices."""
        epoch = self.epoch if epoch is None else epoch
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        n = len(self.lengths)
        if not self.shuffle:
            out = self._cut(np.argsort(self.lengths, kind="stable"))
        else:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(n)  # (N,)
            pool = self.pool_batches * self.batch_size  # a multiple of batch_size: only the last batch is short
            out = []
            for start in range(0, n, pool):
                chunk = perm[start:start + pool]
                out.extend(self._cut(chunk[np.argsort(self.lengths[chunk], kind="stable")]))
            out = [out[i] for i in rng.permutation(len(out))]
        if self.drop_last and self.max_tokens is None:
            out = [b for b in out if len(b) == self.batch_size]
        result = [b.tolist() for b in out]
        self._cached = (epoch, result)
        return result

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch))

    def __len__(self) -> int:
        if self.max_tokens is None:
            n = len(self.lengths)
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return len(self.batches(self.epoch))


def deal(batches: Sequence[Sequence[int]], parts: int) -> list[list[int]]:
    """Global batches of indices → `parts` consecutive pieces of each, for that many processes (torchrun).

    The result lists piece 0, ..., piece parts-1 of the first batch, then of the second, ..., so process r
    (which the trainer gives every parts-th batch from r on) trains on piece r of every global batch, and one
    step of `parts` processes sees the rows of one batch of a single process. Pieces differ in size by one at
    most; a batch with fewer indices than `parts` (an epoch's short last one) is left out.
    """
    if parts <= 1:
        return [list(b) for b in batches]
    return [piece.tolist() for b in batches if len(b) >= parts
            for piece in np.array_split(np.asarray(b, dtype=np.int64), parts)]


def padding_fraction(lengths: Sequence[int] | np.ndarray, batches: Sequence[Sequence[int]]) -> float:
    """Share of padding in the padded batches: 1 - real tokens / (Σ batch size × longest in batch)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = padded = 0
    for b in batches:
        lens = lengths[np.asarray(b, dtype=np.int64)]
        real += int(lens.sum())
        padded += len(b) * int(lens.max())
    return 1.0 - real / padded if padded else 0.0
