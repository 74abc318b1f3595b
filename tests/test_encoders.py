"""RNNEncoder and Pooler: exact parity with packed nn.LSTM/GRU/RNN and per-sequence runs, masking, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqnlp.encoders as encoders
from seqnlp.encoders import (POOL_MODES, Dropout, LockedDropout, Pooler, RNNEncoder, detach_state, keep_mask,
                             plan_segments, reverse_within_lengths)
from seqnlp.errors import SeqnlpError

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
E, H = 5, 7
LENGTHS = torch.tensor([6, 1, 3, 6, 2])  # includes a length-1 row and rows shorter than T


def torch_module(cell: str, layers: int, bidirectional: bool) -> nn.RNNBase:
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, batch_first=True)
    if cell == "lstm":
        return nn.LSTM(E, H, **kwargs)
    if cell == "gru":
        return nn.GRU(E, H, **kwargs)
    return nn.RNN(E, H, nonlinearity=cell.split("_")[1], **kwargs)


def packed_run(module: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, D)
    return out, state


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(as_tuple(a), as_tuple(b)))


def batch(lengths=LENGTHS, time: int | None = None) -> torch.Tensor:
    return torch.randn(len(lengths), time or int(lengths.max()), E)  # (B, T, E)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_shapes_and_parity_with_packed(cell: str, layers: int, bidirectional: bool) -> None:
    module = torch_module(cell, layers, bidirectional)
    encoder = RNNEncoder.from_torch(module)
    x = batch(time=8)  # two extra padded steps beyond the longest row
    outputs, state = encoder(x, LENGTHS)
    dirs = 2 if bidirectional else 1
    assert encoder.output_dim == H * dirs
    assert outputs.shape == (5, 8, H * dirs) and outputs.dtype == torch.float32
    for part in as_tuple(state):
        assert part.shape == (layers * dirs, 5, H)
    assert len(as_tuple(state)) == (2 if cell == "lstm" else 1)
    ref_out, ref_state = packed_run(module, x, LENGTHS)
    assert max_diff(outputs, ref_out) <= 1e-5
    assert max_diff(state, ref_state) <= 1e-5
    padded = torch.arange(8) >= LENGTHS.unsqueeze(1)  # (B, T)
    assert outputs[padded].abs().max() == 0


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parity_with_per_sequence_runs(cell: str, bidirectional: bool) -> None:
    encoder = RNNEncoder(cell, E, H, num_layers=2, bidirectional=bidirectional, precision="fp32")
    x = batch()
    outputs, state = encoder(x, LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        one_out, one_state = encoder(x[b : b + 1, :length], torch.tensor([length]))
        assert (outputs[b, :length] - one_out[0]).abs().max() <= 1e-5
        for part, one_part in zip(as_tuple(state), as_tuple(one_state)):
            assert (part[:, b] - one_part[:, 0]).abs().max() <= 1e-5


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gradients_match_packed_and_reach_every_parameter(cell: str) -> None:
    module = torch_module(cell, 2, True)
    encoder = RNNEncoder.from_torch(module)
    x = batch()
    weights = torch.randn(5, int(LENGTHS.max()), 2 * H)  # (B, T, D) random loss weights
    out, state = encoder(x, LENGTHS)
    ref_out, ref_state = packed_run(module, x, LENGTHS)
    # The loss reads the outputs and every final state (c included), so the hold trick's gradient is checked.
    loss = (out * weights).sum() + sum(s.pow(2).sum() for s in as_tuple(state))
    ref_loss = (ref_out * weights).sum() + sum(s.pow(2).sum() for s in as_tuple(ref_state))
    loss.backward()
    ref_loss.backward()
    ref_grads = dict(module.named_parameters())
    for name, param in encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert (param.grad - ref_grads[name].grad).abs().max() <= 1e-4, name


@pytest.mark.parametrize("cell", CELLS)
def test_padding_never_changes_real_positions(cell: str) -> None:
    encoder = RNNEncoder(cell, E, H, num_layers=2, bidirectional=True, precision="fp32")
    x = batch()
    out, state = encoder(x, LENGTHS)
    noisy = torch.cat([x, torch.randn(5, 4, E)], dim=1) * 1.0  # (B, T+4, E) four more padded steps
    padded = torch.arange(noisy.shape[1]) >= LENGTHS.unsqueeze(1)  # (B, T+4)
    noisy[padded] = torch.randn(int(padded.sum()), E) * 100  # (N, E) large garbage in padding
    noisy_out, noisy_state = encoder(noisy, LENGTHS)
    assert (noisy_out[:, : x.shape[1]] - out).abs().max() <= 1e-6
    assert noisy_out[:, x.shape[1] :].abs().max() == 0
    assert max_diff(noisy_state, state) <= 1e-6


@pytest.mark.parametrize("cell", CELLS)
def test_state_carries_over_between_chunks(cell: str) -> None:
    encoder = RNNEncoder(cell, E, H, num_layers=2, precision="fp32")
    first_len = torch.tensor([3, 1, 4])
    second_len = torch.tensor([2, 4, 1])
    first, second = torch.randn(3, 4, E), torch.randn(3, 4, E)  # (B, T, E) each
    _, state = encoder(first, first_len)
    out2, state2 = encoder(second, second_len, state=detach_state(state))
    for b in range(3):
        a, c = int(first_len[b]), int(second_len[b])
        whole = torch.cat([first[b, :a], second[b, :c]]).unsqueeze(0)  # (1, a+c, E)
        ref_out, ref_state = encoder(whole, torch.tensor([a + c]))
        assert (out2[b, :c] - ref_out[0, a:]).abs().max() <= 1e-5
        for part, ref_part in zip(as_tuple(state2), as_tuple(ref_state)):
            assert (part[:, b] - ref_part[:, 0]).abs().max() <= 1e-5


def test_detach_state_cuts_history() -> None:
    encoder = RNNEncoder("lstm", E, H)
    _, state = encoder(batch(), LENGTHS)
    assert all(s.requires_grad for s in state)
    assert not any(s.requires_grad for s in detach_state(state))
    assert detach_state(None) is None


def test_bad_lengths_and_state_are_clear_errors() -> None:
    encoder = RNNEncoder("gru", E, H)
    with pytest.raises(SeqnlpError, match="length 0"):
        encoder(batch(), torch.tensor([6, 0, 3, 6, 2]))
    with pytest.raises(SeqnlpError, match="exceeds"):
        encoder(batch(), torch.tensor([7, 1, 3, 6, 2]))
    with pytest.raises(SeqnlpError, match="shape"):
        encoder(batch(), torch.tensor([6, 1]))
    with pytest.raises(SeqnlpError, match="state"):
        encoder(batch(), LENGTHS, state=torch.zeros(2, 5, H))
    with pytest.raises(SeqnlpError, match="unknown cell"):
        RNNEncoder("transformer", E, H)
    with pytest.raises(SeqnlpError, match="precision"):
        RNNEncoder("lstm", E, H, precision="fp16")


def test_state_dict_interchanges_with_torch_modules() -> None:
    encoder = RNNEncoder("lstm", E, H, num_layers=2, bidirectional=True)
    module = nn.LSTM(E, H, num_layers=2, bidirectional=True, batch_first=True)
    module.load_state_dict(encoder.state_dict())  # same names and shapes both ways
    assert list(encoder.state_dict()) == list(module.state_dict())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_directions_in_one_call_match_the_per_row_reversal(precision: str) -> None:
    # A bidirectional LSTM from no state runs the kernel's own reverse pass over the padded batch; an explicit
    # zero state takes the per-row reversal instead. Outputs, states and gradients must agree.
    torch.manual_seed(0)
    encoder = RNNEncoder("lstm", E, H, num_layers=2, bidirectional=True, precision=precision)
    x = batch(time=8).requires_grad_()
    zeros = torch.zeros(4, len(LENGTHS), H)
    weights = torch.randn(len(LENGTHS), 8, 2 * H)  # (B, T, D)
    results = []
    for state in (None, (zeros, zeros)):
        encoder.zero_grad()
        x.grad = None
        out, final = encoder(x, LENGTHS, state)
        ((out * weights).sum() + sum(s.pow(2).sum() for s in final)).backward()
        results.append((out.detach(), [s.detach() for s in final], x.grad.clone(),
                        {n: p.grad.clone() for n, p in encoder.named_parameters()}))
    (out_a, final_a, gx_a, grads_a), (out_b, final_b, gx_b, grads_b) = results
    tol = 1e-5 if precision == "fp32" else 2e-2
    assert (out_a - out_b).abs().max() <= tol
    assert max_diff(tuple(final_a), tuple(final_b)) <= tol
    assert (gx_a - gx_b).abs().max() <= 10 * tol
    for name in grads_a:
        assert (grads_a[name] - grads_b[name]).abs().max() <= 10 * tol, name


def test_bf16_outputs_only_for_a_bf16_caller() -> None:
    encoder = RNNEncoder("lstm", E, H, bidirectional=True, precision="bf16", fp32_outputs=False)
    x = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, (h, c) = encoder(x, LENGTHS)
    assert low.dtype == torch.bfloat16 and h.dtype == c.dtype == torch.float32
    padded = torch.arange(x.shape[1]) >= LENGTHS.unsqueeze(1)  # (B, T)
    assert low[padded].abs().max() == 0
    plain, _ = encoder(x, LENGTHS)  # no autocast around the call: fp32, or the caller's fp32 layers break
    assert plain.dtype == torch.float32 and (plain - low.float()).abs().max() < 0.05


def test_dropout_masks_keep_the_expected_share_and_scale() -> None:
    torch.manual_seed(0)
    mask = keep_mask((200, 300), 0.4, torch.ones(1))
    assert torch.allclose(mask.unique(), torch.tensor([0.0, 1 / 0.6]))
    assert abs((mask > 0).float().mean().item() - 0.6) < 0.01
    x = torch.randn(8, 5, 16)
    drop, locked = Dropout(0.5), LockedDropout(0.5)
    out = locked(x)
    kept = out != 0  # (B, T, E): the same features of a row are dropped at every step
    assert torch.equal(kept, kept[:, :1].expand_as(kept))
    assert torch.allclose(out[kept], 2 * x[kept])
    dropped = drop(x)
    assert torch.allclose(dropped[dropped != 0], 2 * x[dropped != 0]) and (dropped == 0).any()
    drop.eval()
    locked.eval()
    assert torch.equal(drop(x), x) and torch.equal(locked(x), x)


def test_dropout_only_in_training() -> None:
    encoder = RNNEncoder("lstm", E, H, num_layers=2, dropout=0.5, precision="fp32")
    x = batch()
    encoder.eval()
    a, _ = encoder(x, LENGTHS)
    b, _ = encoder(x, LENGTHS)
    assert torch.equal(a, b)
    encoder.train()
    c, _ = encoder(x, LENGTHS)
    assert not torch.allclose(a, c)


def test_residual_adds_layer_input() -> None:
    plain = RNNEncoder("gru", E, H, num_layers=2, precision="fp32")
    residual = RNNEncoder("gru", E, H, num_layers=2, precision="fp32", residual=True)
    residual.load_state_dict(plain.state_dict())
    x = batch()
    out, _ = plain(x, LENGTHS)
    res_out, _ = residual(x, LENGTHS)
    layer1 = RNNEncoder("gru", E, H, num_layers=1, precision="fp32")
    layer1.load_state_dict({k: v for k, v in plain.state_dict().items() if k.endswith("l0")})
    first, _ = layer1(x, LENGTHS)
    assert (res_out - (out + first)).abs().max() <= 1e-6


def test_precision_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    x = batch()
    fp32 = RNNEncoder("lstm", E, H, num_layers=2, bidirectional=True, precision="fp32")
    reference, ref_state = fp32(x, LENGTHS)
    # "fp32" ignores a surrounding autocast.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside, _ = fp32(x, LENGTHS)
    assert inside.dtype == torch.float32 and torch.equal(inside, reference)
    bf16 = RNNEncoder("lstm", E, H, num_layers=2, bidirectional=True, precision="bf16")
    bf16.load_state_dict(fp32.state_dict())
    low, low_state = bf16(x, LENGTHS)
    assert low.dtype == torch.float32 and all(s.dtype == torch.float32 for s in low_state)
    assert not torch.equal(low, reference)  # really ran in bf16 ...
    assert (low - reference).abs().max() < 0.05  # ... and still computes the same function
    padded = torch.arange(x.shape[1]) >= LENGTHS.unsqueeze(1)  # (B, T)
    assert low[padded].abs().max() == 0
    # "auto": whatever the machine's decision for the cell is (measured; fixed here per cell).
    monkeypatch.setenv("SEQNLP_AUTO_PRECISION", "lstm=bf16,gru=fp32")
    assert RNNEncoder("lstm", E, H).uses_bf16("cpu") is True
    assert RNNEncoder("gru", E, H).uses_bf16("cpu") is False
    monkeypatch.setenv("SEQNLP_AUTO_PRECISION", "fp32,gru=bf16")
    assert RNNEncoder("lstm", E, H).uses_bf16("cpu") is False
    assert RNNEncoder("gru", E, H).uses_bf16("cpu") is True
    assert RNNEncoder("gru", E, H, precision="bf16").uses_bf16("cpu") is True
    assert RNNEncoder("lstm", E, H, precision="fp32").uses_bf16("cpu") is False


def test_reverse_within_lengths_is_an_involution() -> None:
    x = torch.arange(12.0).view(2, 6)  # (B, T)
    lengths = torch.tensor([4, 6])
    flipped = reverse_within_lengths(x, lengths)
    assert flipped.tolist() == [[3, 2, 1, 0, 4, 5], [11, 10, 9, 8, 7, 6]]
    assert torch.equal(reverse_within_lengths(flipped, lengths), x)


# ---- pooling ------------------------------------------------------------------------------------------


def test_pool_last_uses_own_last_position_of_each_direction() -> None:
    encoder = RNNEncoder("lstm", E, H, num_layers=2, bidirectional=True, precision="fp32")
    out, state = encoder(batch(), LENGTHS)
    from_state = Pooler("last", encoder.output_dim)(out, LENGTHS, state)
    from_outputs = Pooler("last", encoder.output_dim, bidirectional=True)(out, LENGTHS)
    assert from_state.shape == (5, 2 * H)
    assert torch.equal(from_state[:, :H], state[0][2]) and torch.equal(from_state[:, H:], state[0][3])
    assert (from_state - from_outputs).abs().max() == 0
    uni = RNNEncoder("gru", E, H, precision="fp32")
    uni_out, uni_state = uni(batch(), LENGTHS)
    assert torch.equal(Pooler("last", H)(uni_out, LENGTHS, uni_state), uni_state[-1])
    assert torch.equal(Pooler("last", H)(uni_out, LENGTHS), uni_state[-1])


def test_pool_known_values() -> None:
    outputs = torch.tensor([[[1.0, -2.0], [3.0, -4.0], [99.0, 99.0]], [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]]])
    lengths = torch.tensor([2, 1])
    assert Pooler("mean", 2)(outputs, lengths).tolist() == [[2.0, -3.0], [5.0, 6.0]]
    assert Pooler("max", 2)(outputs, lengths).tolist() == [[3.0, -2.0], [5.0, 6.0]]
    assert Pooler("last", 2)(outputs, lengths).tolist() == [[3.0, -4.0], [5.0, 6.0]]


@pytest.mark.parametrize("mode", ["last", "mean", "max", "attention"])
def test_pooling_ignores_padding(mode: str) -> None:
    pooler = Pooler(mode, 6, bidirectional=True)
    outputs = torch.randn(5, 6, 6)  # (B, T, D)
    pooled = pooler(outputs, LENGTHS)
    noisy = torch.cat([outputs, torch.randn(5, 3, 6)], dim=1)  # (B, T+3, D)
    padded = torch.arange(9) >= LENGTHS.unsqueeze(1)  # (B, T+3)
    noisy[padded] = 1e4  # huge values in padding must not leak into any mode
    assert (pooler(noisy, LENGTHS) - pooled).abs().max() <= 1e-6
    assert pooled.shape == (5, 6) and pooler.output_dim == 6


def test_attention_pooling_trains_and_weights_real_steps() -> None:
    pooler = Pooler("attention", 4)
    outputs = torch.randn(3, 5, 4, requires_grad=True)  # (B, T, D)
    lengths = torch.tensor([5, 1, 3])
    pooled = pooler(outputs, lengths)
    assert torch.allclose(pooled[1], outputs[1, 0])  # one real step gets all the weight
    pooled.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pooler.parameters())
    assert outputs.grad[1, 1:].abs().max() == 0


def test_pooler_rejects_unknown_mode() -> None:
    with pytest.raises(SeqnlpError, match="pooling"):
        Pooler("sum", 4)


def test_bf16_lstm_keeps_cell_state_through_padding() -> None:
    # The hold column must saturate the gates under bf16 too: a padded row's c equals its run alone.
    encoder = RNNEncoder("lstm", E, H, num_layers=2, bidirectional=True, precision="bf16")
    x = batch(time=8)
    _, (h, c) = encoder(x, LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        _, (one_h, one_c) = encoder(x[b : b + 1, :length], torch.tensor([length]))
        assert (c[:, b] - one_c[:, 0]).abs().max() <= 2e-2
        assert (h[:, b] - one_h[:, 0]).abs().max() <= 2e-2


@pytest.mark.parametrize("layers", [1, 2])
def test_zero_padding_false_changes_only_the_padded_outputs(layers: int) -> None:
    torch.manual_seed(0)
    zeroed = RNNEncoder("lstm", 4, 3, num_layers=layers, bidirectional=True)
    raw = RNNEncoder("lstm", 4, 3, num_layers=layers, bidirectional=True, zero_padding=False)
    raw.load_state_dict(zeroed.state_dict())
    x = torch.randn(5, 6, 4, requires_grad=True)  # (B, T, E)
    lengths = torch.tensor([6, 2, 4, 1, 3])
    out_zeroed, state_zeroed = zeroed(x, lengths)
    out_raw, state_raw = raw(x, lengths)
    real = torch.arange(6) < lengths.unsqueeze(1)  # (B, T)
    assert torch.equal(out_raw[real], out_zeroed[real]) and torch.equal(state_raw[0], state_zeroed[0])
    assert torch.all(out_zeroed[~real] == 0) and torch.any(out_raw[~real] != 0)  # the kernel's leftovers
    for mode in POOL_MODES:  # every pooler masks them itself: same pooled vectors and gradients
        pooler = Pooler(mode, 6, bidirectional=True)
        a, = torch.autograd.grad(pooler(out_zeroed, lengths).sum(), x, retain_graph=True)
        b, = torch.autograd.grad(pooler(out_raw, lengths).sum(), x, retain_graph=True)
        assert torch.allclose(pooler(out_raw, lengths), pooler(out_zeroed, lengths), atol=1e-6)
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("layout", ["batch-major", "time-major"])
def test_max_pooling_matches_torch_max_values_and_gradients(layout: str) -> None:
    torch.manual_seed(0)
    base = torch.randn(5, 6, 4) if layout == "batch-major" else torch.randn(6, 5, 4).transpose(0, 1)  # (B, T, D)
    ours_in = base.clone().requires_grad_(True) if layout == "batch-major" else \
        base.transpose(0, 1).clone().requires_grad_(True)
    outputs = ours_in if layout == "batch-major" else ours_in.transpose(0, 1)  # (B, T, D), either memory layout
    pooled = Pooler("max", 4)(outputs, LENGTHS)
    weights = torch.randn(5, 4)
    grad, = torch.autograd.grad((pooled * weights).sum(), ours_in)
    reference_in = base.clone().requires_grad_(True)
    real = (torch.arange(6) < LENGTHS.unsqueeze(1)).unsqueeze(2)  # (B, T, 1)
    expected = reference_in.masked_fill(~real, float("-inf")).max(1).values
    reference_grad, = torch.autograd.grad((expected * weights).sum(), reference_in)
    assert torch.equal(pooled, expected)
    got = grad if layout == "batch-major" else grad.transpose(0, 1)
    assert torch.equal(got, reference_grad)  # all of each gradient on its argmax step, none on padding


def _single_layer(encoder: RNNEncoder, layer: int, input_size: int) -> RNNEncoder:
    """Layer `layer` of `encoder` as its own one-layer encoder (same weights)."""
    one = RNNEncoder(encoder.cell, input_size, encoder.hidden_size, precision="fp32")
    one.load_state_dict({f"{name}_l0": getattr(encoder, f"{name}_l{layer}")
                         for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    return one


def test_weight_dropout_runs_the_recurrence_with_one_masked_hidden_matrix_per_call() -> None:
    torch.manual_seed(0)
    encoder = RNNEncoder("lstm", E, H, precision="fp32", weight_dropout=0.5)
    x = batch()
    encoder.eval()
    plain = _single_layer(encoder, 0, E).eval()
    assert torch.equal(encoder(x, LENGTHS)[0], plain(x, LENGTHS)[0])  # no dropout at evaluation
    encoder.train()
    torch.manual_seed(1)
    out, _ = encoder(x, LENGTHS)
    torch.manual_seed(1)
    mask = keep_mask(tuple(encoder.weight_hh_l0.shape), 0.5, encoder.weight_hh_l0)  # the same draw
    with torch.no_grad():
        plain.weight_hh_l0.mul_(mask)
    assert torch.allclose(out, plain(x, LENGTHS)[0], atol=1e-6)
    out.sum().backward()
    assert encoder.weight_hh_l0.grad is not None and bool((encoder.weight_hh_l0.grad[mask == 0] == 0).all())


def test_variational_dropout_between_layers_drops_the_same_features_at_every_step() -> None:
    torch.manual_seed(0)
    encoder = RNNEncoder("gru", E, H, num_layers=2, dropout=0.5, variational=True, precision="fp32").train()
    x = batch()
    torch.manual_seed(3)
    out, _ = encoder(x, LENGTHS)
    first, second = _single_layer(encoder, 0, E), _single_layer(encoder, 1, H)
    torch.manual_seed(3)
    mid, _ = first(x, LENGTHS)  # (B, T, H)
    mask = keep_mask((x.shape[0], 1, H), 0.5, mid)  # one draw per row and feature
    expected, _ = second(mid * mask, LENGTHS)
    assert torch.allclose(out, expected, atol=1e-6)


SPREAD = torch.tensor([40, 1, 33, 7, 19, 2, 25, 12, 38, 5, 3, 29, 16, 9, 22, 31, 4, 11, 36, 14, 8, 27, 6, 18])


def test_spread_lengths_run_in_segments_that_cover_the_real_steps() -> None:
    plan = plan_segments(SPREAD.tolist(), 40)
    assert plan is not None and len(plan) > 1
    assert plan[0][0] == 0 and plan[-1][1] == 40
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))  # contiguous cuts
    assert [n for *_, n in plan] == sorted((n for *_, n in plan), reverse=True)  # a shrinking prefix of rows
    for t0, _, n in plan:
        assert n >= int((SPREAD > t0).sum())  # every row still going at t0 runs
    assert sum((t1 - t0) * n for t0, t1, n in plan) < 0.8 * 40 * len(SPREAD)
    assert plan_segments([40, 39, 38, 40] * 6, 40) is None  # bucketed: one call
    assert plan_segments(SPREAD.tolist()[:8], 40) is None  # 8 rows: row counts round up to 8, nothing saved


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_segmented_runs_match_packed(cell: str, bidirectional: bool, with_state: bool,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Segments serve LSTMs only, where they pay; the code is cell-generic and kept exact for every cell.
    monkeypatch.setattr(encoders, "_SEGMENT_CELLS", tuple(CELLS))
    calls: list[int] = []
    original = RNNEncoder._run_segments
    monkeypatch.setattr(RNNEncoder, "_run_segments", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    module = torch_module(cell, 2, bidirectional)
    encoder = RNNEncoder.from_torch(module)
    x = batch(SPREAD, time=42)  # (B, T, E)
    dirs = 2 if bidirectional else 1
    state = None
    if with_state:
        h0 = torch.randn(2 * dirs, len(SPREAD), H)
        state = (h0, torch.randn_like(h0)) if cell == "lstm" else h0
    outputs, final = encoder(x, SPREAD, state)
    assert calls, "the spread batch did not take the segmented path"
    packed = pack_padded_sequence(x, SPREAD, batch_first=True, enforce_sorted=False)
    ref_out, ref_state = module(packed, state)
    ref_out, _ = pad_packed_sequence(ref_out, batch_first=True, total_length=42)
    assert max_diff(outputs, ref_out) <= 1e-5
    assert max_diff(final, ref_state) <= 1e-5
    padded = torch.arange(42) >= SPREAD.unsqueeze(1)  # (B, T)
    assert outputs[padded].abs().max() == 0
    # gradients flow through every segment's carried state as through packing
    grads = torch.autograd.grad(outputs.sum() + sum(s.sum() for s in as_tuple(final)), list(encoder.parameters()))
    ref_grads = torch.autograd.grad(ref_out.sum() + sum(s.sum() for s in as_tuple(ref_state)), list(module.parameters()))
    assert max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(grads, ref_grads)) <= 1e-5


def test_segmented_bf16_stays_close_to_fp32() -> None:
    fp32 = RNNEncoder("lstm", E, H, num_layers=2, bidirectional=True, precision="fp32")
    bf16 = RNNEncoder("lstm", E, H, num_layers=2, bidirectional=True, precision="bf16")
    bf16.load_state_dict(fp32.state_dict())
    x = batch(SPREAD)
    (out32, (h32, c32)), (out16, (h16, c16)) = fp32(x, SPREAD), bf16(x, SPREAD)
    assert max_diff((out32, h32, c32), (out16, h16, c16)) < 0.05
    assert not torch.equal(out32, out16)


@pytest.mark.parametrize("kernel", ["onednn", "native"])
def test_both_fp32_lstm_kernels_match_packed(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQNLP_AUTO_PRECISION", f"lstm_fp32={kernel}")
    module = torch_module("lstm", 2, True)
    encoder = RNNEncoder.from_torch(module)
    for lengths in (SPREAD, LENGTHS):  # in segments, and in one call for both directions
        x = batch(lengths)
        outputs, final = encoder(x, lengths)
        ref_out, ref_state = packed_run(module, x, lengths)
        assert max_diff(outputs, ref_out) <= 1e-5 and max_diff(final, ref_state) <= 1e-5
