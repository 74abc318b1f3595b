"""Tag schemes for sequence labelling (IOB1, IOB2, BIOES) and the entity spans they mark, read the conlleval way.

Models train and predict IOB2 tags (B- opens every entity, I- continues it). `detect_scheme` recognises IOB1
(B- only between two adjacent entities of one type), IOB2 and BIOES (S- single, E- end); `to_iob2` converts
one sequence; `read_tags` reads a dataset's tag column (ClassLabel ids or names) into IOB2. `spans` reads entities from IOB2 tags as conlleval does: an I-X after O, at the start or after
another type opens a new entity, so even an invalid sequence has one reading. `allowed_transitions` and
`allowed_starts` say which IOB2 sequences are valid (for a constrained CRF).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from seqnlp.data import check_texts
from seqnlp.errors import SeqnlpError

SCHEMES = ("IOB1", "IOB2", "BIOES")


def _split(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIESLU":
        return tag[0], tag[2:]
    raise SeqnlpError(f"tag {tag!r} is neither O nor <prefix>-<type> with prefix B, I, E or S")


def detect_scheme(tag_lists: Iterable[Sequence[str]]) -> str:
    """'BIOES' when any S-/E- tag occurs; 'IOB1' when an I-X opens an entity (at the start, after O or after
    another type) somewhere; else 'IOB2'. (Data valid in both IOB1 and IOB2 reads the same either way.)"""
    iob1 = False
    for tags in tag_lists:
        prev_kind, prev_type = "O", ""
        for tag in tags:
            kind, kind_type = _split(tag)
            if kind in "ESLU":
                return "BIOES"
            if kind == "I" and (prev_kind == "O" or prev_type != kind_type):
                iob1 = True
            prev_kind, prev_type = kind, kind_type
    return "IOB1" if iob1 else "IOB2"


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """One tag sequence in `scheme` (IOB1, IOB2, BIOES; BILOU's L/U read as E/S) converted to IOB2.

    IOB1 and IOB2 are both repaired the conlleval way: an I-X that opens an entity becomes B-X.
    """
    if scheme not in SCHEMES:
        raise SeqnlpError(f"unknown tag scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    out: list[str] = []
    prev_kind, prev_type = "O", ""
    for tag in tags:
        kind, kind_type = _split(tag)
        if kind == "O":
            out.append("O")
        elif kind in "BSU":
            out.append(f"B-{kind_type}")
        else:  # I, E, L: continue an entity of the same type, or open one
            opens = prev_kind in ("O", "E", "S", "L", "U") or prev_type != kind_type
            out.append(f"{'B' if opens else 'I'}-{kind_type}")
        prev_kind, prev_type = kind, kind_type
    return out


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities (type, start, end exclusive) of IOB2 tags, read as conlleval does: an I-X after O, at the
    start or after another type opens a new entity; B-X always opens one."""
    found: list[tuple[str, int, int]] = []
    start, current = -1, ""
    for i, tag in enumerate(tags):
        kind, kind_type = _split(tag)
        continues = kind == "I" and start >= 0 and kind_type == current
        if start >= 0 and not continues:
            found.append((current, start, i))
            start, current = -1, ""
        if kind in ("B", "I") and not continues:
            start, current = i, kind_type
    if start >= 0:
        found.append((current, start, len(tags)))
    return found


def allowed_transitions(tags: Sequence[str]) -> torch.Tensor:
    """(C, C) bool: allowed[i, j] is False where tag j may not follow tag i in IOB2 (I-X only after B-X or I-X)."""
    parts = [_split(t) for t in tags]
    allowed = torch.ones(len(tags), len(tags), dtype=torch.bool)  # (C, C)
    for j, (kind, kind_type) in enumerate(parts):
        if kind == "I":
            for i, (prev_kind, prev_type) in enumerate(parts):
                allowed[i, j] = prev_kind in ("B", "I") and prev_type == kind_type
    return allowed


def allowed_starts(tags: Sequence[str]) -> torch.Tensor:
    """(C,) bool: False for I- tags, which may not open a sentence in IOB2."""
    return torch.tensor([_split(t)[0] != "I" for t in tags], dtype=torch.bool)  # (C,)


def read_tags(values: Sequence[Any], feature: Any, where: str, scheme: str = "auto",
              known: Sequence[str] | None = None) -> list[list[str]]:
    """Each row's tags as IOB2 names (from ClassLabel ids or strings); SeqnlpError naming the first bad row."""
    names = getattr(getattr(feature, "feature", None), "names", None)
    rows: list[list[str]] = []
    for i, row in enumerate(values):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise SeqnlpError(f"{where}: row {i}: the tag column holds {type(row).__name__}, not a list of tags "
                              "(choose the tag column with --tags-column)")
        if names is not None and all(isinstance(t, int) and 0 <= t < len(names) for t in row):
            rows.append([names[t] for t in row])
        elif all(isinstance(t, str) for t in row):
            rows.append(list(row))
        else:
            raise SeqnlpError(f"{where}: row {i} has tags {row[:5]!r}, not tag names or the column's ClassLabel ids")
    try:
        scheme = detect_scheme(rows) if scheme == "auto" else scheme
        iob2 = [to_iob2(r, scheme) for r in rows]
    except SeqnlpError as err:
        raise SeqnlpError(f"{where}: {err}") from None
    if known is not None:
        for i, row in enumerate(iob2):
            bad = next((t for t in row if t not in known), None)
            if bad is not None:
                raise SeqnlpError(f"{where}: row {i} has tag {bad!r}, which the model does not know "
                                  f"({', '.join(known)})")
    return iob2


def check_sentences(tokens: Sequence[Any], tags: Sequence[Sequence[str]] | None, where: str) -> list[list[str]]:
    """The token lists; SeqnlpError for a row that is not a list of strings, empty, or of another length than its tags."""
    out = []
    for i, row in enumerate(tokens):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise SeqnlpError(f"{where}: row {i}: the tokens column holds {type(row).__name__}, not a list of "
                              "tokens (choose it with --tokens-column)")
        if not row:
            raise SeqnlpError(f"{where}: row {i} is an empty sentence; remove it")
        out.append(check_texts(row, f"{where}: row {i}", what="token", column="tokens"))
        if tags is not None and len(tags[i]) != len(row):
            raise SeqnlpError(f"{where}: row {i} has {len(row)} tokens but {len(tags[i])} tags; they must pair up")
    return out
