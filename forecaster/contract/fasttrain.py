"""A faster *training* forward for pytorch-forecasting's TFT: the library's math, gradients included.

Why it exists: at the default size (hidden 32, 8 heads, 288 + 96 steps, batch 64) a training
step through the library's ``forward`` costs about 1.1 s of one core (forward and backward,
measured with the machine otherwise quiet; ~40 windows/s end to end in
``benchmarks/training_throughput.py`` on a busy one). Timed stage by stage, three parts took
95 % of it:

* the LSTMs (~335 ms): the library packs every batch (``pack_padded_sequence``), and a packed
  LSTM's backward on a CPU runs step by step through generic autograd (``cat``, ``add_``,
  ``fill_``), seven times what the fused kernel takes for the same sequences;
* the encoder's variable selection (~365 ms): eleven tiny per-variable networks one after the
  other, each with 16-wide embeddings, interpolated residuals and LayerNorms;
* the interpretable attention (~320 ms): eight heads in a Python loop, each materialising and
  masking its own [N, D, T] weights.

:mod:`forecaster.contract.fastpath` fixes the last two for inference by collapsing weights once
under ``torch.no_grad()``, so it cannot train. :func:`train_forward` does the same algebra on
the *live* parameters inside every forward (stacking and collapsing them costs ~3 ms next to a
~330 ms step), so autograd carries the gradients back to the library network's own parameters:
the optimizer, the checkpoints and ``model.safetensors`` all see the library's state dict,
unchanged. All of it is exact algebra on the same weights (differences are float rounding):

* ``fc1(prescaler(x)) = x * a + c`` and the resampled residual is affine in ``x``, as in
  ``fastpath``; the residual's LayerNorm comes from the closed-form mean and variance of an
  affine function of one scalar (float64 for the variance, as ``fastpath`` does). The
  per-variable networks run as batched matmuls over stacked weights, on a CPU in blocks of
  rows with a hand-written backward (:class:`_SelectedSum`): ~115 ms instead of ~365 ms.
* The LSTMs run unpacked, through the fused kernel (~45 ms): a batch whose encoders all have
  the same length is one call; otherwise it runs in segments between consecutive distinct
  lengths, each on the sequences still running, from the state where the previous segment
  stopped. Every sequence sees exactly its own steps, as packing gives, its final state is the
  one after its last real step, and outputs past its end are zero, as ``pad_packed_sequence``
  leaves them.
* The attention runs all heads in one fused ``F.scaled_dot_product_attention`` (~165 ms; with
  4-wide heads its cost is per score, softmax and bookkeeping rather than arithmetic).
* Gates, enrichment and feed-forward are the library's modules' own arithmetic, re-stated so
  that the static context is projected once per series instead of once per step, and the
  step-wise enrichment runs on the encoder's and the decoder's steps apart (only the
  attention's keys and values need them joined), so no gradient flows through a slice.
* Dropout sits where the library has it (after ``fc2`` of every gated residual network, in
  every gated linear unit, on every head's output and after ``w_h``), with the modules' rate,
  active exactly when the network is in ``train()`` mode. The masks are drawn by
  :func:`_dropout_mask`, one 31-bit integer for two elements, about a fifth of ``F.dropout``'s cost,
  at the rate rounded up to a multiple of 2**-15; the random stream differs from the
  library's, so two runs with the same seed through the two paths see different masks.

Static selection and contexts (per series, cheap) call the library's modules. Where
:func:`supports_training` is False (a structure this does not reproduce) :func:`train_forward`
calls the library's ``forward``. ``tests/test_trainer_fastforward.py`` holds outputs and the
gradients of every parameter to the library's, with dropout on and off.
"""

from __future__ import annotations

import logging
import math
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forecaster.contract.fastpath import _interp_matrix, _selection_softmax, static_contexts, supports

log = logging.getLogger(__name__)


def supports_training(network: nn.Module) -> bool:
    """True when :func:`train_forward` reproduces ``network``'s training forward exactly.

    On top of :func:`fastpath.supports` (the inference structure): every per-variable network of
    a selection must drop out with the same ``nn.Dropout`` (the batched networks apply one), and
    the LSTMs must be unidirectional and batch-first (the segmented run relies on both).
    """
    if not supports(network):
        return False
    net: Any = network
    try:
        for vsn in (net.encoder_variable_selection, net.decoder_variable_selection):
            drops = [vsn.single_variable_grns[n].gate_norm.glu.dropout for n in vsn.input_sizes]
            if not all(map(_dropout_ok, drops)) or len({None if d is None else (type(d), d.p) for d in drops}) != 1:
                return False
            if not _dropout_ok(vsn.flattened_grn.gate_norm.glu.dropout):
                return False
        for lstm in (net.lstm_encoder, net.lstm_decoder):
            if not isinstance(lstm, nn.LSTM) or lstm.bidirectional or not lstm.batch_first or lstm.proj_size:
                return False
        mha = net.multihead_attn
        return (isinstance(mha.dropout, nn.Dropout) and mha.attention.dropout is None and mha.attention.scale
                and all(_glu_ok(m) for m in (net.post_lstm_gate_encoder, net.post_lstm_gate_decoder))
                and all(_add_norm_ok(m) for m in (net.post_lstm_add_norm_encoder, net.post_lstm_add_norm_decoder))
                and _grn_ok(net.static_enrichment, context=True) and _grn_ok(net.pos_wise_ff, context=False)
                and _gate_add_norm_ok(net.post_attn_gate_norm) and _gate_add_norm_ok(net.pre_output_gate_norm))
    except AttributeError:
        return False


def _glu_ok(m: Any) -> bool:
    from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import GatedLinearUnit

    return isinstance(m, GatedLinearUnit) and isinstance(m.fc, nn.Linear) and _dropout_ok(m.dropout)


def _add_norm_ok(m: Any) -> bool:
    from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import AddNorm

    return isinstance(m, AddNorm) and m.input_size == m.skip_size and isinstance(m.norm, nn.LayerNorm)


def _gate_add_norm_ok(m: Any) -> bool:
    from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import GateAddNorm

    return isinstance(m, GateAddNorm) and _glu_ok(m.glu) and _add_norm_ok(m.add_norm)


def _grn_ok(m: Any, context: bool) -> bool:
    """A ``GatedResidualNetwork`` whose residual is its input (no resampling), as :func:`_grn` runs it."""
    from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import GatedResidualNetwork

    return (isinstance(m, GatedResidualNetwork) and m.input_size == m.output_size
            and (m.context_size is not None) == context and isinstance(m.elu, nn.ELU) and m.elu.alpha == 1.0
            and _gate_add_norm_ok(m.gate_norm))


def _dropout_ok(module: Any) -> bool:
    """No dropout, or an ``nn.Dropout`` (:func:`_dropout` draws its mask)."""
    return module is None or isinstance(module, nn.Dropout)


def _dropout(module: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for the library's dropout modules, with the mask of :func:`_dropout_mask`."""
    if module is None:
        return x
    if type(module) is not nn.Dropout:
        return module(x)
    mask = _dropout_mask(module, tuple(x.shape), x)
    return x if mask is None else x * mask


_INTERP: dict[tuple[int, int, str], torch.Tensor] = {}


def _interp(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """The constant resampling matrix (float64), built once per size and device."""
    key = (n_in, n_out, str(like.device))
    m = _INTERP.get(key)
    if m is None:
        m = _INTERP[key] = _interp_matrix(n_in, n_out).double().to(like.device)
    return m


class _LiveVSN:
    """One variable selection network's weights, collapsed from its live parameters.

    Same quantities as ``fastpath._VSNWeights`` (see there), computed with autograd on, so every
    tensor here is a differentiable function of the library's parameters.
    """

    def __init__(self, vsn: Any, x_reals: list[str]) -> None:
        names = list(vsn.input_sizes)
        grns = [vsn.single_variable_grns[n] for n in names]
        pres = [vsn.prescalers[n] for n in names]
        self.columns = [x_reals.index(n) for n in names]
        self.dropout = grns[0].gate_norm.glu.dropout

        def stack(get: Any) -> torch.Tensor:
            return torch.stack([get(g) for g in grns])

        pw = torch.stack([p.weight[:, 0] for p in pres])  # [V, d]
        pb = torch.stack([p.bias for p in pres])  # [V, d]
        V, d = pw.shape
        H = grns[0].output_size
        fc1_w = stack(lambda g: g.fc1.weight)  # [V, hg, d]
        self.a1 = torch.einsum("vhd,vd->vh", fc1_w, pw)[:, None, :]
        self.c1 = (torch.einsum("vhd,vd->vh", fc1_w, pb) + stack(lambda g: g.fc1.bias))[:, None, :]
        self.w2 = stack(lambda g: g.fc2.weight).transpose(1, 2)
        self.b2 = stack(lambda g: g.fc2.bias)[:, None, :]
        self.wg = stack(lambda g: g.gate_norm.glu.fc.weight).transpose(1, 2)
        self.bg = stack(lambda g: g.gate_norm.glu.fc.bias)[:, None, :]

        m = _interp(d, H, pw)
        gates = stack(lambda g: torch.sigmoid(g.resample_norm.mask)).double() * 2.0  # [V, H]
        ra = (pw.double() @ m) * gates
        rb = (pb.double() @ m) * gates
        ra_c = ra - ra.mean(dim=1, keepdim=True)
        rb_c = rb - rb.mean(dim=1, keepdim=True)
        self.r_quad = torch.stack([(ra_c * ra_c).mean(1), 2 * (ra_c * rb_c).mean(1), (rb_c * rb_c).mean(1)], dim=1)
        r_gamma = stack(lambda g: g.resample_norm.norm.weight)
        r_beta = stack(lambda g: g.resample_norm.norm.bias)
        self.r_coef = torch.stack([ra_c.float() * r_gamma, rb_c.float() * r_gamma, r_beta], dim=1)  # [V, 3, H]
        self.o_gamma = stack(lambda g: g.gate_norm.add_norm.norm.weight)[:, None, :]
        self.o_beta = stack(lambda g: g.gate_norm.add_norm.norm.bias)[:, None, :]
        self.r_eps = float(grns[0].resample_norm.norm.eps)
        self.o_eps = float(grns[0].gate_norm.add_norm.norm.eps)

        flat = vsn.flattened_grn
        f1w = flat.fc1.weight  # [n, V*d]
        n = f1w.shape[0]
        # concat(prescalers)(x) = x @ P + p0 with P block-diagonal; fc1 and the resampled
        # residual of the flattened GRN act on it, so both collapse to a [V, n] matrix.
        self.f_k1 = torch.einsum("vd,nvd->vn", pw, f1w.view(n, V, d))
        self.f_c1 = f1w @ pb.reshape(-1) + flat.fc1.bias
        mf = _interp(V * d, flat.output_size, pw).float()
        fgate = torch.sigmoid(flat.resample_norm.mask) * 2.0
        self.f_kr = torch.einsum("vd,vdn->vn", pw, mf.view(V, d, -1)) * fgate
        self.f_cr = (pb.reshape(-1) @ mf) * fgate
        self.flat = flat

    def take(self, idx: torch.Tensor) -> _LiveVSN:
        """The per-variable tensors of a subset of variables (the selection part is kept whole)."""
        sub = object.__new__(_LiveVSN)
        sub.__dict__.update(self.__dict__)
        for name in ("a1", "c1", "w2", "b2", "wg", "bg", "r_quad", "r_coef", "o_gamma", "o_beta"):
            setattr(sub, name, getattr(self, name)[idx])
        return sub


def _variable_outputs(w: _LiveVSN, xv: torch.Tensor) -> torch.Tensor:
    """Each variable's network on its scalar inputs ``xv`` [V, R]: [V, R, H] (plain autograd)."""
    h = F.elu(torch.baddbmm(w.c1, xv.unsqueeze(-1), w.a1))
    h = _dropout(w.dropout, torch.baddbmm(w.b2, h, w.w2))
    g = F.glu(torch.baddbmm(w.bg, h, w.wg), dim=-1)
    rstd = _residual_rstd(w.r_quad, xv.double(), w.r_eps).to(xv.dtype)
    coef = torch.stack([xv * rstd, rstd, torch.ones_like(rstd)], dim=-1)  # [V, R, 3]
    y = F.layer_norm(torch.baddbmm(g, coef, w.r_coef), g.shape[-1:], eps=w.o_eps)
    return y * w.o_gamma + w.o_beta


def _residual_rstd(r_quad: torch.Tensor, x64: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / std of the resampled residual ``x * ra + rb`` per row, from its closed-form variance (float64)."""
    var = (r_quad[:, 0:1] * x64 + r_quad[:, 1:2]) * x64 + r_quad[:, 2:3]
    return torch.rsqrt(var.clamp_min(0.0) + eps)


#: Rows per block of :class:`_SelectedSum`. Measured at the default size (11 variables, 18,432
#: rows), forward and backward: 512 rows 204 ms, 1,024 rows 192 ms, 2,048 rows 199 ms; smaller
#: blocks pay more per-op overhead, larger ones spill the intermediates out of the caches.
BLOCK_ROWS = 1024


class _SelectedSum(torch.autograd.Function):
    """``sum_v weights[v] * network_v(x[v])`` over the per-variable networks, block by block.

    Plain autograd over [V, rows, 64] tensors (11 x 18,432 rows for the encoder at the default
    size) keeps about ten of them for the backward pass and streams each through memory several
    times: ~410 ms forward and backward, measured. Here the forward keeps nothing but its inputs
    (and the dropout mask), and the backward recomputes each block's forward while it is still
    in cache and applies the chain rule by hand: ~110 ms, mask included (~140 ms before the
    LayerNorm's means were taken from products the backward already has). (Keeping the forward's
    intermediates instead of recomputing them measured the same.) The gradients are the ones autograd gives
    for :func:`_variable_outputs`; ``tests/test_trainer_fastforward.py`` compares both with the
    library's.
    """

    @staticmethod
    def forward(ctx: Any, xv: torch.Tensor, wv: torch.Tensor, mask: torch.Tensor | None, r_eps: float,
                o_eps: float, *params: torch.Tensor) -> torch.Tensor:
        R = xv.shape[1]
        o_gamma, o_beta = params[-2], params[-1]
        out = xv.new_empty(R, o_gamma.shape[-1])
        for lo in range(0, R, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, R)
            w = wv[:, lo:hi]
            yhat = _block(xv[:, lo:hi], None if mask is None else mask[:, lo:hi], r_eps, o_eps, params,
                          keep=False)[-2]
            torch.sum(yhat.mul_(o_gamma).mul_(w.unsqueeze(-1)), dim=0, out=out[lo:hi])
            out[lo:hi].addmm_(w.t(), o_beta[:, 0])
        ctx.save_for_backward(xv, wv, mask, *params)
        ctx.eps = (r_eps, o_eps)
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> Any:
        xv, wv, mask, *params = ctx.saved_tensors
        w2, wa, wb, r_coef, o_gamma, o_beta = params[2], params[4], params[6], params[9], params[10], params[11]
        r_eps, o_eps = ctx.eps
        R, H = xv.shape[1], o_gamma.shape[-1]
        grads = [torch.zeros_like(p) for p in params]
        g_a1, g_c1, g_w2, g_b2, g_wa, g_ba, g_wb, g_bb, g_rquad, g_rcoef, g_gamma, g_beta = grads
        dwv = torch.empty_like(wv)
        dout = dout.contiguous()
        w2t, wat, wbt = w2.transpose(1, 2), wa.transpose(1, 2), wb.transpose(1, 2)
        gamma_col = o_gamma.transpose(1, 2)  # [V, H, 1]
        gamma_mean = o_gamma[:, 0].t() / H  # [H, V]
        r_ab = r_coef[:, :2].transpose(1, 2)  # [V, H, 2]
        for lo in range(0, R, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, R)
            x, w, d = xv[:, lo:hi], wv[:, lo:hi], dout[lo:hi]
            m = None if mask is None else mask[:, lo:hi]
            h1, h2, za, sb, rstd64, coef, yhat, o_rstd = _block(x, m, r_eps, o_eps, params, keep=True)
            # out = sum_v w * (yhat * gamma + beta)
            t = yhat * d  # [V, b, H]
            tg = torch.bmm(t, gamma_col).squeeze(-1)  # [V, b]: sum_h yhat * d * gamma
            torch.addmm(tg, o_beta[:, 0], d.t(), out=dwv[:, lo:hi])
            g_gamma.baddbmm_(w.unsqueeze(1), t)
            g_beta[:, 0].addmm_(w, d)
            # LayerNorm (no affine) backward with gy = d * gamma * w (d loss / d yhat):
            # ds = rstd * (gy - mean(gy) - yhat * mean(gy * yhat)), where both means are w times a
            # product already at hand: mean(gy) = w * (d @ gamma) / H, mean(gy * yhat) = w * tg / H.
            ds = d * o_gamma  # [V, b, H]
            ds.sub_((d @ gamma_mean).t().unsqueeze(-1))
            ds.addcmul_(yhat, tg.unsqueeze(-1), value=-1.0 / H).mul_((o_rstd.squeeze(-1) * w).unsqueeze(-1))
            # residual: coef @ r_coef with coef = [x * rstd, rstd, 1]
            g_rcoef.baddbmm_(coef, ds)
            p = torch.bmm(ds, r_ab)  # [V, b, 2]: d/d(x * rstd), d/d(rstd)
            dvar = (p[..., 0] * x + p[..., 1]).double().mul_(rstd64.pow(3)).mul_(-0.5)
            x64 = x.double()
            dx1 = dvar * x64
            g_rquad += torch.stack([(dx1 * x64).sum(1), dx1.sum(1), dvar.sum(1)], dim=1)
            # gated linear unit g = za * sigmoid(zb): dza = ds * sb, dzb = dza * za * (1 - sb), kept
            # negated (-dzb, in za's storage: neither is needed again) and subtracted where used
            dza = ds.mul_(sb)
            ndzb = za.mul_(dza).mul_(sb.sub_(1.0))
            g_wa.baddbmm_(h2.transpose(1, 2), dza)
            g_wb.baddbmm_(h2.transpose(1, 2), ndzb, alpha=-1.0)
            g_ba += dza.sum(1, keepdim=True)
            g_bb -= ndzb.sum(1, keepdim=True)
            # then fc2 (and dropout), elu, collapsed fc1
            dz2 = torch.bmm(dza, wat).baddbmm_(ndzb, wbt, alpha=-1.0)
            if m is not None:
                dz2.mul_(m)
            g_w2.baddbmm_(h1.transpose(1, 2), dz2)
            g_b2 += dz2.sum(1, keepdim=True)
            dz1 = torch.ops.aten.elu_backward(torch.bmm(dz2, w2t), 1.0, 1, 1, True, h1)
            g_a1.baddbmm_(x.unsqueeze(1), dz1)
            g_c1 += dz1.sum(1, keepdim=True)
        return (None, dwv, None, None, None, *grads)


def _block(x: torch.Tensor, m: torch.Tensor | None, r_eps: float, o_eps: float,
           params: tuple[torch.Tensor, ...] | list[torch.Tensor], keep: bool) -> tuple[torch.Tensor, ...]:
    """One block's forward through the per-variable networks, with what its backward needs.

    Written for speed on [V, rows, H] blocks: ELU as ``relu(z) + exp(min(z, 0)) - 1``, the gated
    linear unit's two halves as two matmuls (contiguous, unlike slices of one), biases added to
    a matmul's output in place (``baddbmm`` first copies the broadcast bias into it), and the
    LayerNorm from its mean (a matmul) and the norm of the centred rows (each about half the
    time of the fused kernels at these widths, within float rounding of them). ``keep=False``
    (the forward pass, which needs only the output) lets the gate's product overwrite ``za``;
    the backward's recomputation keeps it. Every tensor of [V, rows, H] is written in place where
    its old value is not needed again: on a CPU a pass that reads two such tensors and writes a
    third costs about twice one that updates one of them (the three no longer fit the core's cache).
    """
    a1, c1, w2, b2, wa, ba, wb, bb, r_quad, r_coef, _, _ = params
    z1 = torch.addcmul(c1, x.unsqueeze(-1), a1)
    h1 = torch.clamp(z1, max=0.0).exp_().sub_(1.0).add_(z1.clamp_(min=0.0))  # elu
    h2 = torch.bmm(h1, w2).add_(b2)
    if m is not None:
        h2.mul_(m)
    za = torch.bmm(h2, wa).add_(ba)
    sb = torch.bmm(h2, wb).add_(bb).sigmoid_()
    rstd64 = _residual_rstd(r_quad, x.double(), r_eps)
    rstd = rstd64.to(x.dtype)
    coef = torch.stack([x * rstd, rstd, torch.ones_like(rstd)], dim=1)  # [V, 3, b]: contiguous rows
    s = (za * sb if keep else za.mul_(sb)).baddbmm_(coef.transpose(1, 2), r_coef)
    H = s.shape[-1]
    s.sub_(s @ _row_mean(H, s))
    o_rstd = torch.linalg.vector_norm(s, dim=-1, keepdim=True).square_().mul_(1.0 / H).add_(o_eps).rsqrt_()
    return h1, h2, za, sb, rstd64, coef, s.mul_(o_rstd), o_rstd


_ROW_MEAN: dict[tuple[int, torch.dtype, str], torch.Tensor] = {}


def _row_mean(n: int, like: torch.Tensor) -> torch.Tensor:
    """[n, 1] of 1 / n: ``x @ _row_mean(n, x)`` is the mean over the last dimension, a matmul
    (about 20 % faster than ``mean(-1)`` over 32-wide rows on a CPU core)."""
    key = (n, like.dtype, str(like.device))
    m = _ROW_MEAN.get(key)
    if m is None:
        m = _ROW_MEAN[key] = torch.full((n, 1), 1.0 / n, dtype=like.dtype, device=like.device)
    return m


def _dropout_mask(module: nn.Module | None, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
    """The multiplier ``module`` applies to a tensor of ``shape`` (None when it is the identity).

    For an ``nn.Dropout`` with rate ``p`` it is drawn here: 0 with probability ``k / 2**15``
    (``k = ceil(p * 2**15)``: ``p`` rounded up by less than 3.1e-5, 0.1000061 for 0.1), else
    ``1 / (1 - p)``, as ``F.dropout`` scales it. Why not ``F.dropout``'s own draw: on a CPU the
    cost is the random number generator's, one 32-bit draw per element (~1.6 ns), and the masks
    took ~7 % of a training step at the default size. Here one 31-bit draw (``random_()`` on
    int32) serves two elements: shifted left by one bit, its high 16 bits are uniform over
    0..65535 and its low 16 bits over the even numbers 0..65534, so "below ``2 * k``" has
    probability ``k / 2**15`` in both halves; flipping each half's top bit turns that unsigned
    comparison into one signed comparison of the int16 view, in place. 5 ms instead of 8 ms for
    the encoder's 3.2 million elements. Any other module (a subclass in a test) is asked for
    its multiplier on ones.
    """
    if module is None or not module.training:
        return None
    if type(module) is not nn.Dropout:
        return module(like.new_ones(shape))
    p = float(module.p)
    if p == 0.0:
        return None
    if p == 1.0:
        return like.new_zeros(shape)
    n = math.prod(shape)
    draws = torch.empty((n + 1) // 2, dtype=torch.int32, device=like.device).random_()
    halves = draws.bitwise_left_shift_(1).bitwise_xor_(_HALF_SIGN_BITS).view(torch.int16)
    kept = halves.ge_(2 * math.ceil(p * 2**15) - 2**15)
    return kept[:n].view(shape).to(like.dtype).mul_(1.0 / (1.0 - p))


#: 0x80008000 as a signed int32: the top bit of each 16-bit half.
_HALF_SIGN_BITS = -(2**31) + 2**15


def _glu(module: Any, x: torch.Tensor) -> torch.Tensor:
    """The library's ``GatedLinearUnit``, its dropout drawn by :func:`_dropout`."""
    return F.glu(module.fc(_dropout(module.dropout, x)), dim=-1)


def _add_norm(module: Any, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The library's ``AddNorm`` (``supports_training`` checks that it resamples nothing)."""
    if module.trainable_add:
        skip = skip * torch.sigmoid(module.mask) * 2.0
    return module.norm(x + skip)


def _gate_add_norm(module: Any, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    return _add_norm(module.add_norm, _glu(module.glu, x), skip)


def _grn(module: Any, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """The library's ``GatedResidualNetwork`` on [N, T, H] (input size = output size).

    ``context`` is per series, [N, C]: its projection is computed once per series and broadcast
    over time, where the library projects a copy of it at every step.
    """
    h = module.fc1(x)
    if context is not None:
        h = h + module.context(context)[:, None, :]
    return _gate_add_norm(module.gate_norm, module.fc2(F.elu(h)), x)


def _blocked(x: torch.Tensor) -> bool:
    """Whether :class:`_SelectedSum` runs: on a CPU, in float32, outside autocast. A GPU gains nothing
    from blocks of rows (it would launch ~60 kernels per block), and under mixed precision autocast
    picks each op's precision, which plain autograd follows and the hand-written backward does not."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.requires_grad:
        return False
    try:
        return not torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return not torch.is_autocast_cpu_enabled()


def _selected_sum(w: _LiveVSN, xv: torch.Tensor, wv: torch.Tensor) -> torch.Tensor:
    """``sum_v wv[v, r] * network_v(xv[v, r])``: [R, H]; blocked with a hand-written backward on CPUs."""
    if not _blocked(xv):
        return torch.einsum("vrh,vr->rh", _variable_outputs(w, xv), wv)
    mask = _dropout_mask(w.dropout, (*xv.shape, w.w2.shape[-1]), xv)
    H = w.o_gamma.shape[-1]
    return _SelectedSum.apply(xv.contiguous(), wv.contiguous(), mask, w.r_eps, w.o_eps,
                              w.a1, w.c1, w.w2, w.b2, w.wg[..., :H], w.bg[..., :H], w.wg[..., H:], w.bg[..., H:],
                              w.r_quad, w.r_coef, w.o_gamma, w.o_beta)


def _vsn(w: _LiveVSN, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Variable selection on raw scalars ``x`` [N, T, V] with static ``context`` [N, C]: [N, T, H]."""
    N, T, V = x.shape
    rows = N * T
    flat_x = x.reshape(rows, V)
    flat = w.flat
    f = (torch.addmm(w.f_c1, flat_x, w.f_k1).view(N, T, -1) + flat.context(context)[:, None, :])
    f = flat.fc2(F.elu(f))
    f = F.glu(flat.gate_norm.glu.fc(_dropout(flat.gate_norm.glu.dropout, f)), dim=-1)
    fres = flat.resample_norm.norm(torch.addmm(w.f_cr, flat_x, w.f_kr)).view(N, T, -1)
    wv_all = _selection_softmax(flat.gate_norm.add_norm.norm(f + fres))  # [V, rows]
    weights = wv_all.t().view(N, T, V)

    # A variable identical in every series (relative time, when all encoders have one length)
    # runs once on [T] rows and is broadcast; in train() mode only without dropout, which would
    # draw one mask for all series where the library draws one per series.
    if N > 1 and (w.dropout is None or not w.dropout.training or w.dropout.p == 0):
        shared = (x == x[:1]).all(dim=1).all(dim=0)
    else:
        shared = torch.zeros(V, dtype=torch.bool, device=x.device)
    parts: list[torch.Tensor] = []
    if bool(shared.any()):
        idx = shared.nonzero().flatten()
        s_out = _variable_outputs(w.take(idx), x[0, :, idx].t())  # [Vs, T, H]
        ws = weights[..., idx].permute(1, 0, 2)  # [T, N, Vs]
        parts.append(torch.bmm(ws, s_out.transpose(0, 1)).transpose(0, 1))  # [N, T, H]
    if not bool(shared.any()):  # every variable differs between series (always, under dropout)
        parts.append(_selected_sum(w, flat_x.t(), wv_all).view(N, T, -1))
    elif not bool(shared.all()):
        idx = (~shared).nonzero().flatten()
        wv = wv_all[idx]  # [Vv, rows]
        parts.append(_selected_sum(w.take(idx), flat_x[:, idx].t(), wv).view(N, T, -1))
    return parts[0] if len(parts) == 1 else parts[0] + parts[1]


def _lstm(lstm: nn.LSTM, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
          lengths: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The library's packed LSTM (lengths >= 1), run through the fused unpacked kernel in segments.

    Output [N, max(lengths), H] is zero past each sequence's length; the state is the one after
    each sequence's last step.
    """
    run = nn.LSTM.forward  # the library's subclass would pack
    h, c = state[0].contiguous(), state[1].contiguous()
    T = int(lengths.max())
    if x.shape[1] > T:
        x = x[:, :T]
    if bool((lengths == T).all()):
        out, (h, c) = run(lstm, x, (h, c))
        return out, (h, c)
    cuts = [int(v) for v in torch.unique(lengths).tolist()]
    # One split instead of a slice per segment: a slice's backward writes a zero-filled gradient
    # of all of x, a split's backward one concatenation.
    inputs = torch.split(x, [stop - start for start, stop in zip([0, *cuts[:-1]], cuts, strict=True)], dim=1)
    pieces: list[torch.Tensor] = []
    start = 0
    N = x.shape[0]
    for stop, xs in zip(cuts, inputs, strict=True):
        alive = (lengths > start).nonzero().flatten()
        if len(alive) == N:
            seg, (h, c) = run(lstm, xs, (h, c))
            pieces.append(seg)
        else:
            seg, (hs, cs) = run(lstm, xs[alive], (h[:, alive].contiguous(), c[:, alive].contiguous()))
            h = h.index_copy(1, alive, hs.to(h.dtype))  # (under autocast the LSTM may return another dtype)
            c = c.index_copy(1, alive, cs.to(c.dtype))
            pieces.append(seg.new_zeros(N, stop - start, seg.shape[-1]).index_copy(0, alive, seg))
        start = stop
    return torch.cat(pieces, dim=1), (h, c)


def train_forward(network: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """The network's ``forward(x)["prediction"]``, faster, differentiable w.r.t. its parameters.

    Follows the network's mode: dropout in ``train()``, none in ``eval()``. Falls back to the
    library's ``forward`` where :func:`supports_training` is False, and where an encoder length
    is zero (the library then keeps the initial LSTM state, which the segmented run does not do).
    """
    net: Any = network
    encoder_lengths = x["encoder_lengths"]
    if not _supported(network) or bool((encoder_lengths < 1).any()):
        return net(x)["prediction"]
    decoder_lengths = x["decoder_lengths"]
    E = int(encoder_lengths.max())
    enc_cont = x["encoder_cont"][:, :E]
    dec_cont = x["decoder_cont"]
    N, D = dec_cont.shape[0], dec_cont.shape[1]
    T = E + D
    x_reals = list(net.hparams.x_reals)

    static_embedding, ctx_select = static_contexts(net, x["encoder_cat"], enc_cont)

    enc_w = _LiveVSN(net.encoder_variable_selection, x_reals)
    dec_w = _LiveVSN(net.decoder_variable_selection, x_reals)
    emb_enc = _vsn(enc_w, enc_cont[..., enc_w.columns], ctx_select)
    emb_dec = _vsn(dec_w, dec_cont[..., dec_w.columns], ctx_select)

    layers = net.hparams.lstm_layers
    h0 = net.static_context_initial_hidden_lstm(static_embedding).expand(layers, -1, -1)
    c0 = net.static_context_initial_cell_lstm(static_embedding).expand(layers, -1, -1)
    enc_out, state = _lstm(net.lstm_encoder, emb_enc, (h0, c0), encoder_lengths)
    dec_out, _ = _lstm(net.lstm_decoder, emb_dec, state, decoder_lengths)
    lstm_enc = _add_norm(net.post_lstm_add_norm_encoder, _glu(net.post_lstm_gate_encoder, enc_out), emb_enc)
    lstm_dec = _add_norm(net.post_lstm_add_norm_decoder, _glu(net.post_lstm_gate_decoder, dec_out), emb_dec)

    # The library enriches the concatenated LSTM output and slices the decoder's steps out of it
    # twice; the enrichment works step by step, so it runs on each part and only the attention's
    # keys and values see them joined. (A slice's backward writes a zero-filled gradient of the
    # whole tensor; a concatenation's hands back views.)
    enrichment = net.static_context_enrichment(static_embedding)
    attn_dec = _grn(net.static_enrichment, lstm_dec, enrichment)
    attn_input = torch.cat([_grn(net.static_enrichment, lstm_enc, enrichment), attn_dec], dim=1)

    mha = net.multihead_attn
    n_head, dk = mha.n_head, mha.d_k
    wq = torch.cat([layer.weight for layer in mha.q_layers])
    bq = torch.cat([layer.bias for layer in mha.q_layers])
    wk = torch.cat([layer.weight for layer in mha.k_layers])
    bk = torch.cat([layer.bias for layer in mha.k_layers])
    q = F.linear(attn_dec, wq, bq).view(N, D, n_head, dk).transpose(1, 2)
    k = F.linear(attn_input, wk, bk).view(N, T, n_head, dk).transpose(1, 2)
    v = mha.v_layer(attn_input)  # [N, T, dv], shared by all heads
    mask = net.get_attention_mask(encoder_lengths=encoder_lengths, decoder_lengths=decoder_lengths)
    heads = F.scaled_dot_product_attention(q, k, v[:, None].expand(N, n_head, T, v.shape[-1]),
                                           attn_mask=~mask[:, None], scale=1.0 / float(dk) ** 0.5)
    attn_output = _dropout(mha.dropout, mha.w_h(_dropout(mha.dropout, heads).mean(dim=1)))

    attn_output = _gate_add_norm(net.post_attn_gate_norm, attn_output, attn_dec)
    output = _grn(net.pos_wise_ff, attn_output)
    output = _gate_add_norm(net.pre_output_gate_norm, output, lstm_dec)
    output = net.output_layer(output)
    return net.transform_output(output, target_scale=x["target_scale"])


_SUPPORTED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _supported(network: nn.Module) -> bool:
    """:func:`supports_training`, decided once per network object (it walks the module tree)."""
    known = _SUPPORTED.get(network)
    if known is None:
        known = _SUPPORTED[network] = supports_training(network)
        if not known:
            log.info("TFT structure not covered by the fast training forward; using the library's forward")
    return known
