"""A faster inference forward for pytorch-forecasting's TFT, numerically equal to the library's.

Why it exists: at the default size (hidden 32, 8 heads, 288 + 96 steps) the library's
``forward`` spends about 85 % of its CPU time in two places, measured with the torch profiler
at 4,000 series: the encoder's variable selection (eleven tiny per-variable networks run one
after the other, then stacked and concatenated, with residuals resampled by
``F.interpolate``) and the interpretable attention (eight heads run in a Python loop, each
with its own mask fill and division). One forecast cycle of 1,000 hosts x 4 signals took
about 25 s of CPU; the budget is 20 s for the whole cycle.

What it does differently, all exact algebra on the same weights (differences are float
rounding, 1e-6 to 1e-5; ``tests/test_forecaster_fastpath.py`` checks them against the library,
and :func:`for_serving` checks every model again when it is loaded for serving):

* A real input is a scalar per step, and ``prescaler`` and ``fc1`` are affine, so
  ``fc1(prescaler(x)) = x * a + c``: the 16-wide embedding never needs to exist. The
  residual path (interpolate, gate, LayerNorm) is affine in ``x`` too, so it becomes
  ``LayerNorm(x * A + B)``. The flattened selection network's ``fc1`` and residual act on the
  concatenation of those affine embeddings, so both collapse to a small ``[V, n]`` matrix
  applied to the raw scalars.
* The per-variable networks run as one batched matmul over stacked weights.
* The attention's queries and keys of all heads are one projection each (the heads' weights
  concatenated). The heads share their value projection, so ``v`` is computed once and
  broadcast to every head without a copy. All heads then go through one fused
  ``F.scaled_dot_product_attention`` call, given the library's mask inverted (the library's
  ``True`` masks out, the kernel's attends) and the library's ``1/sqrt(d_k)`` scale as its
  ``scale=`` argument (no weights are rescaled); it never materialises the [N, heads, D, T]
  attention weights.
  The heads' outputs are averaged, ``mean_h(attn_h @ v)`` as in the library, then go through
  its ``w_h``.

Everything else (static selection, LSTMs, gates, output layer, output transform) calls the
library's own modules. :func:`supports` checks the structure this relies on; for a network
built any other way :class:`FastTFT` simply calls the library's ``forward``.

Because all this leans on about 20 of the library's internals, serving never trusts it
blindly: :func:`for_serving` runs a one-off parity check when a model is loaded and serves
the model through the library's ``forward`` when the check fails, and
``forecaster.fast_path: false`` switches the fast path off altogether.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from forecaster.contract.features import build_windows
from forecaster.contract.model import ModelSpec, attention_steps, explain_output, mean_over_encoder, to_network_input
from forecaster.contract.panel import Panel
from forecaster.contract.schedules import Schedule, ScheduleSet

log = logging.getLogger(__name__)


def _interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``F.interpolate(linear, align_corners=True)`` along the last axis, as an [n_in, n_out] matrix."""
    eye = torch.eye(n_in, dtype=torch.float32)
    return F.interpolate(eye.unsqueeze(1), n_out, mode="linear", align_corners=True).squeeze(1)


@dataclass
class _VSNWeights:
    """Precomputed weights of one variable selection network whose inputs are all reals.

    Per variable ``v`` (axis 0 of every stacked tensor), with ``x`` the raw scalar input:
    ``h = elu(x * a1 + c1)``, ``h = h @ w2 + b2``, ``g = glu(h @ wg + bg)``; the residual is
    ``LayerNorm(x * ra + rb)`` (affine ``r_gamma, r_beta``), computed from the closed-form
    mean and variance of an affine function of one scalar; the output is
    ``LayerNorm(g + residual)`` (affine ``o_gamma, o_beta``).
    """

    columns: list[int]  # x_cont column per variable, in the network's order
    a1: torch.Tensor  # [V, 1, hg]
    c1: torch.Tensor  # [V, 1, hg]
    w2: torch.Tensor  # [V, hg, hg] (transposed for bmm)
    b2: torch.Tensor  # [V, 1, hg]
    wg: torch.Tensor  # [V, hg, 2*H]
    bg: torch.Tensor  # [V, 1, 2*H]
    r_quad: torch.Tensor  # float64 [V, 3]: mean((x*ra' + rb')**2) = q0*x*x + q1*x + q2 (centred ra', rb')
    r_coef: torch.Tensor  # [V, 3, H]: residual = [x*rstd, rstd, 1] @ r_coef
    o_gamma: torch.Tensor  # [V, 1, H]
    o_beta: torch.Tensor  # [V, 1, H]
    r_eps: float
    o_eps: float
    # flattened GRN (selection weights), acting on the raw scalars x [rows, V]
    f_k1: torch.Tensor  # [V, n] fc1 o concat(prescalers)
    f_c1: torch.Tensor  # [n]
    f_ctx: nn.Linear  # static context -> n (no bias)
    f_fc2: nn.Linear
    f_glu: nn.Linear
    f_kr: torch.Tensor  # [V, n] residual (interpolate, gate) o concat(prescalers)
    f_cr: torch.Tensor  # [n]
    f_rnorm: nn.LayerNorm
    f_onorm: nn.LayerNorm

    def take(self, idx: torch.Tensor) -> _VSNWeights:
        """The per-variable tensors of a subset of variables (the selection part is kept whole)."""
        sub = {name: getattr(self, name)[idx] for name in _PER_VARIABLE}
        return _VSNWeights(**{**self.__dict__, **sub})


_PER_VARIABLE = ("a1", "c1", "w2", "b2", "wg", "bg", "r_quad", "r_coef", "o_gamma", "o_beta")


def _vsn_supported(vsn: Any, x_reals: list[str]) -> bool:
    from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import (
        GatedResidualNetwork,
        ResampleNorm,
    )

    names = list(vsn.input_sizes)
    if vsn.num_inputs < 2 or any(n not in x_reals or n not in vsn.prescalers for n in names):
        return False
    for name in names:
        grn = vsn.single_variable_grns[name]
        pre = vsn.prescalers[name]
        if not isinstance(grn, GatedResidualNetwork) or not isinstance(pre, nn.Linear) or pre.in_features != 1:
            return False
        if grn.residual or grn.input_size == grn.output_size or grn.context_size is not None:
            return False
        rn = grn.resample_norm
        if not isinstance(rn, ResampleNorm) or not rn.trainable_add or grn.gate_norm.add_norm.trainable_add:
            return False
        if grn.gate_norm.add_norm.input_size != grn.gate_norm.add_norm.skip_size:
            return False
    flat = vsn.flattened_grn
    if not isinstance(flat, GatedResidualNetwork) or flat.residual or flat.context_size is None:
        return False
    if flat.input_size == flat.output_size or not flat.resample_norm.trainable_add:
        return False
    if flat.gate_norm.add_norm.trainable_add or flat.gate_norm.add_norm.input_size != flat.gate_norm.add_norm.skip_size:
        return False
    shapes = {(vsn.single_variable_grns[n].input_size, vsn.single_variable_grns[n].hidden_size,
               vsn.single_variable_grns[n].output_size) for n in names}
    return len(shapes) == 1


def static_contexts(net: Any, encoder_cat: torch.Tensor, enc_cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The static embedding and the variable-selection context, per series, through the library's modules.

    Static inputs are the same at every step, so only the first encoder step is embedded (the
    library embeds every step and reads the first). Shared by the inference and the training forward.
    """
    x_reals = list(net.hparams.x_reals)
    input_vectors = net.input_embeddings(encoder_cat[:, :1])
    static: dict[str, torch.Tensor] = {}
    for name in net.static_variables:
        if name in input_vectors:
            static[name] = input_vectors[name][:, 0]
        else:
            static[name] = enc_cont[:, 0, x_reals.index(name)].unsqueeze(-1)
    if static:
        static_embedding, _ = net.static_variable_selection(static)
    else:
        static_embedding = enc_cont.new_zeros((enc_cont.shape[0], net.hparams.hidden_size))
    return static_embedding, net.static_context_variable_selection(static_embedding)


def supports(network: nn.Module) -> bool:
    """True when ``network`` has the structure :class:`FastTFT` reproduces exactly."""
    try:
        from pytorch_forecasting import TemporalFusionTransformer
        from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import (
            InterpretableMultiHeadAttention,
        )
    except ImportError:  # pragma: no cover - the library is a hard dependency
        return False
    if not isinstance(network, TemporalFusionTransformer):
        return False
    hp = network.hparams
    x_reals = list(hp.x_reals)
    if getattr(network, "n_targets", 1) != 1 or hp.time_varying_categoricals_encoder \
            or hp.time_varying_categoricals_decoder:
        return False
    mha = network.multihead_attn
    if not isinstance(mha, InterpretableMultiHeadAttention) or mha.n_head < 1:
        return False
    try:
        return (_vsn_supported(network.encoder_variable_selection, x_reals)
                and _vsn_supported(network.decoder_variable_selection, x_reals))
    except AttributeError:
        return False


def _prepare_vsn(vsn: Any, x_reals: list[str]) -> _VSNWeights:
    names = list(vsn.input_sizes)
    grns = [vsn.single_variable_grns[n] for n in names]
    pres = [vsn.prescalers[n] for n in names]
    pw = torch.stack([p.weight[:, 0] for p in pres]).double()  # [V, d]
    pb = torch.stack([p.bias for p in pres]).double()  # [V, d]
    d = pw.shape[1]
    H = grns[0].output_size
    m = _interp_matrix(d, H).double()  # [d, H]

    def stack(get: Any) -> torch.Tensor:
        return torch.stack([get(g).double() for g in grns])

    fc1_w = stack(lambda g: g.fc1.weight)  # [V, hg, d]
    a1 = torch.einsum("vhd,vd->vh", fc1_w, pw)
    c1 = torch.einsum("vhd,vd->vh", fc1_w, pb) + stack(lambda g: g.fc1.bias)
    gates = stack(lambda g: torch.sigmoid(g.resample_norm.mask) * 2.0)  # [V, H]
    ra = (pw @ m) * gates
    rb = (pb @ m) * gates
    ra_c = ra - ra.mean(dim=1, keepdim=True)
    rb_c = rb - rb.mean(dim=1, keepdim=True)
    r_quad = torch.stack([(ra_c * ra_c).mean(1), 2 * (ra_c * rb_c).mean(1), (rb_c * rb_c).mean(1)], dim=1)
    r_gamma = stack(lambda g: g.resample_norm.norm.weight)
    r_beta = stack(lambda g: g.resample_norm.norm.bias)
    r_coef = torch.stack([ra_c * r_gamma, rb_c * r_gamma, r_beta], dim=1)  # [V, 3, H]

    flat = vsn.flattened_grn
    V = len(names)
    total = V * d
    # concat(prescalers)(x) = x @ P + p0, with P block-diagonal [V, V*d]
    P = torch.zeros(V, total, dtype=torch.float64)
    for i in range(V):
        P[i, i * d:(i + 1) * d] = pw[i]
    p0 = pb.reshape(-1)
    f1w = flat.fc1.weight.double()
    mf = _interp_matrix(total, flat.output_size).double()
    fgate = torch.sigmoid(flat.resample_norm.mask).double() * 2.0

    def f32(t: torch.Tensor) -> torch.Tensor:
        return t.float().contiguous()

    return _VSNWeights(
        columns=[x_reals.index(n) for n in names],
        a1=f32(a1[:, None, :]), c1=f32(c1[:, None, :]),
        w2=f32(stack(lambda g: g.fc2.weight).transpose(1, 2)), b2=f32(stack(lambda g: g.fc2.bias)[:, None, :]),
        wg=f32(stack(lambda g: g.gate_norm.glu.fc.weight).transpose(1, 2)),
        bg=f32(stack(lambda g: g.gate_norm.glu.fc.bias)[:, None, :]),
        r_quad=r_quad.contiguous(), r_coef=f32(r_coef),
        o_gamma=f32(stack(lambda g: g.gate_norm.add_norm.norm.weight)[:, None, :]),
        o_beta=f32(stack(lambda g: g.gate_norm.add_norm.norm.bias)[:, None, :]),
        r_eps=float(grns[0].resample_norm.norm.eps), o_eps=float(grns[0].gate_norm.add_norm.norm.eps),
        f_k1=f32(P @ f1w.t()), f_c1=f32(f1w @ p0 + flat.fc1.bias.double()),
        f_ctx=flat.context, f_fc2=flat.fc2, f_glu=flat.gate_norm.glu.fc,
        f_kr=f32((P @ mf) * fgate), f_cr=f32((p0 @ mf) * fgate),
        f_rnorm=flat.resample_norm.norm, f_onorm=flat.gate_norm.add_norm.norm,
    )


#: Rows per block in the per-variable networks: small enough that a block's [V, rows, 64]
#: intermediates stay in a core's L2 cache, which is what makes these element-wise passes fast.
BLOCK_ROWS = 512


def _variable_outputs(w: _VSNWeights, xv: torch.Tensor) -> torch.Tensor:
    """Each variable's network on its scalar inputs ``xv`` [V, R]: [V, R, H] (LayerNorm'd, affine)."""
    x3 = xv.unsqueeze(-1)
    h = F.elu(torch.baddbmm(w.c1, x3, w.a1))
    h = torch.baddbmm(w.b2, h, w.w2)
    g = F.glu(torch.baddbmm(w.bg, h, w.wg), dim=-1)
    x64 = xv.double()
    var = (w.r_quad[:, 0:1] * x64 + w.r_quad[:, 1:2]) * x64 + w.r_quad[:, 2:3]
    rstd = torch.rsqrt(var.clamp_min(0.0) + w.r_eps).float()
    coef = torch.stack([xv * rstd, rstd, torch.ones_like(rstd)], dim=-1)  # [V, R, 3]
    g.baddbmm_(coef, w.r_coef)
    y = F.layer_norm(g, g.shape[-1:], eps=w.o_eps)
    return y.mul_(w.o_gamma).add_(w.o_beta)


def _selection_softmax(logits: torch.Tensor) -> torch.Tensor:
    """The selection weights, softmax over the variables of ``logits`` [N, T, V], as [V, N * T].

    Computed on the transposed layout: over the last dimension of [rows, V] a CPU core takes
    ~14x as long at these widths (3.3 ms against 0.16 ms for 11 x 18,432, forward), and the
    per-variable networks want the weights as [V, rows] anyway. ``.t().view(N, T, V)`` of the
    result is the library's [N, T, V].
    """
    return torch.softmax(logits.reshape(-1, logits.shape[-1]).t().contiguous(), dim=0)


def _vsn(w: _VSNWeights, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable selection on raw scalars ``x`` [N, T, V] with static ``context`` [N, C]: the selected
    embedding [N, T, H] and the selection weights [N, T, V] (the library's sparse weights, which
    the forecast's drivers are made of).

    A variable whose inputs are identical in every series of the chunk (the calendar
    features, when all series share an origin and encoder length) is run once on [T] rows
    and broadcast: same numbers, a fraction of the work.
    """
    N, T, V = x.shape
    rows = N * T
    flat_x = x.reshape(rows, V)
    f = torch.addmm(w.f_c1, flat_x, w.f_k1).view(N, T, -1) + w.f_ctx(context)[:, None, :]
    f = F.glu(w.f_glu(w.f_fc2(F.elu(f))), dim=-1)
    fres = w.f_rnorm(torch.addmm(w.f_cr, flat_x, w.f_kr)).view(N, T, -1)
    wv_all = _selection_softmax(w.f_onorm(f + fres))  # [V, rows]
    weights = wv_all.t().view(N, T, V)

    shared = (x == x[:1]).all(dim=1).all(dim=0) if N > 1 else torch.ones(V, dtype=torch.bool)
    out: torch.Tensor | None = None
    if bool(shared.any()):
        idx = shared.nonzero().flatten()
        s_out = _variable_outputs(w.take(idx), x[0, :, idx].t().contiguous())  # [Vs, T, H]
        ws = weights[..., idx].permute(1, 0, 2)  # [T, N, Vs]
        out = torch.bmm(ws, s_out.transpose(0, 1)).transpose(0, 1).contiguous()  # [N, T, H]
    if not bool(shared.all()):
        idx = (~shared).nonzero().flatten()
        sub = w.take(idx)
        xv = flat_x[:, idx].t().contiguous()  # [Vv, rows]
        wv = wv_all[idx]  # [Vv, rows]
        acc = torch.empty(rows, w.o_gamma.shape[-1], dtype=x.dtype) if out is None else out.view(rows, -1)
        for lo in range(0, rows, BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, rows)
            y = _variable_outputs(sub, xv[:, lo:hi])
            part = torch.einsum("vrh,vr->rh", y, wv[:, lo:hi])
            if out is None:
                acc[lo:hi] = part
            else:
                acc[lo:hi] += part
        out = acc.view(N, T, -1)
    assert out is not None
    return out, weights


class FastTFT(nn.Module):
    """Wraps a TFT; ``forward(x)`` returns ``{"prediction": ...}`` like the library, faster, plus
    what drove each forecast, already reduced per series (see :func:`~forecaster.contract.model.explain_output`):
    ``encoder_variable_weights`` [N, V] and ``encoder_attention_mean`` [N, E].

    The library returns its attention weights whole ([N, decoder steps, heads, encoder + decoder
    steps]); the fused attention kernel never forms them, and forming them for every decoder step
    would double the attention's cost. So the attention summary is computed for
    ``attention_steps`` only (decoder step indices; None: all of them): serving passes the steps
    of the published horizons (:func:`~forecaster.contract.model.attention_steps`), five of 96 at
    the default size, which costs about 5 % of the attention.

    Weights are read once at construction (the wrapped network must not be trained
    afterwards). Inference only: dropout is ignored, as in ``eval()`` mode.
    """

    def __init__(self, network: nn.Module, attention_steps: list[int] | None = None) -> None:
        super().__init__()
        self.network = network
        self.attention_steps = None if attention_steps is None else [int(k) for k in attention_steps]
        self.fast = supports(network)
        if not self.fast:
            log.info("TFT structure not covered by the fast path; using the library's forward")
            return
        x_reals = list(network.hparams.x_reals)
        with torch.no_grad():
            self._enc = _prepare_vsn(network.encoder_variable_selection, x_reals)
            self._dec = _prepare_vsn(network.decoder_variable_selection, x_reals)
            mha = network.multihead_attn
            self._wq = torch.cat([layer.weight for layer in mha.q_layers])
            self._bq = torch.cat([layer.bias for layer in mha.q_layers])
            self._wk = torch.cat([layer.weight for layer in mha.k_layers])
            self._bk = torch.cat([layer.bias for layer in mha.k_layers])

    def forward(self, x: dict[str, torch.Tensor]) -> Any:
        if not self.fast or self.training:
            return self.network(x)
        return self._forward(x)

    def _forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        net: Any = self.network
        encoder_lengths = x["encoder_lengths"]
        decoder_lengths = x["decoder_lengths"]
        E = int(encoder_lengths.max())
        enc_cont = x["encoder_cont"][:, :E]
        dec_cont = x["decoder_cont"]
        D = dec_cont.shape[1]
        T = E + D

        static_embedding, ctx_select = static_contexts(net, x["encoder_cat"], enc_cont)

        emb_enc, enc_weights = _vsn(self._enc, enc_cont[..., self._enc.columns], ctx_select)
        emb_dec, _ = _vsn(self._dec, dec_cont[..., self._dec.columns], ctx_select)

        layers = net.hparams.lstm_layers
        h0 = net.static_context_initial_hidden_lstm(static_embedding).expand(layers, -1, -1)
        c0 = net.static_context_initial_cell_lstm(static_embedding).expand(layers, -1, -1)
        enc_out, (hidden, cell) = net.lstm_encoder(emb_enc, (h0, c0), lengths=encoder_lengths, enforce_sorted=False)
        dec_out, _ = net.lstm_decoder(emb_dec, (hidden, cell), lengths=decoder_lengths, enforce_sorted=False)
        lstm_enc = net.post_lstm_add_norm_encoder(net.post_lstm_gate_encoder(enc_out), emb_enc)
        lstm_dec = net.post_lstm_add_norm_decoder(net.post_lstm_gate_decoder(dec_out), emb_dec)
        lstm_output = torch.cat([lstm_enc, lstm_dec], dim=1)

        enrichment = net.static_context_enrichment(static_embedding)
        attn_input = net.static_enrichment(lstm_output, net.expand_static_context(enrichment, T))

        mha = net.multihead_attn
        N, n_head, dk = attn_input.shape[0], mha.n_head, mha.d_k
        q = F.linear(attn_input[:, E:], self._wq, self._bq).view(N, D, n_head, dk).transpose(1, 2)
        k = F.linear(attn_input, self._wk, self._bk).view(N, T, n_head, dk).transpose(1, 2)
        v = mha.v_layer(attn_input)  # [N, T, dv], shared by all heads
        mask = net.get_attention_mask(encoder_lengths=encoder_lengths, decoder_lengths=decoder_lengths)
        # A fused kernel that never materialises the [N, heads, D, T] weights; ``True`` = attend.
        heads = F.scaled_dot_product_attention(q, k, v[:, None].expand(N, n_head, T, v.shape[-1]),
                                               attn_mask=~mask[:, None], scale=1.0 / float(dk) ** 0.5)
        attn_output = mha.w_h(heads.mean(dim=1))

        attn_output = net.post_attn_gate_norm(attn_output, attn_input[:, E:])
        output = net.pos_wise_ff(attn_output)
        output = net.pre_output_gate_norm(output, lstm_output[:, E:])
        output = net.output_layer(output)
        return {"prediction": net.transform_output(output, target_scale=x["target_scale"]),
                "encoder_variable_weights": mean_over_encoder(enc_weights, encoder_lengths),
                "encoder_attention_mean": self._attention_summary(q, k, mask, E, float(dk))}

    def _attention_summary(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, E: int,
                           dk: float) -> torch.Tensor:
        """Mean attention weight on each encoder position [N, E], over heads and the chosen decoder
        steps: the library's weights (softmax of the scaled scores, masked positions 0) for those
        query rows only."""
        D = q.shape[2]
        steps = [s for s in (range(D) if self.attention_steps is None else self.attention_steps) if 0 <= s < D]
        if not steps:
            return torch.zeros(q.shape[0], E, dtype=q.dtype)
        idx = torch.as_tensor(steps, dtype=torch.long)
        scores = torch.matmul(q[:, :, idx], k.transpose(-1, -2)).mul_(1.0 / dk ** 0.5)  # [N, h, S, T]
        scores.masked_fill_(mask[:, None, idx], float("-inf"))
        return torch.softmax(scores, dim=-1)[..., :E].mean(dim=(1, 2))



# --------------------------------------------------------------------------- load-time guard

#: Tolerance of the load-time parity check, as in ``torch.allclose``: every output must satisfy
#: ``|fast - library| <= PARITY_ATOL + PARITY_RTOL * |library|``. Outputs are in scaled units
#: (one unit is one standard deviation of the window's history), so 1e-4 is invisible in a
#: forecast. It is the tolerance ``tests/test_forecaster_fastpath.py`` holds the fast path to,
#: with headroom over what rounding gives: at most 1e-6 on the shipped model and 1e-5 on
#: randomised default-size networks with seasonal inputs (outputs up to 5), while breakages
#: tried on the shipped model were off by 1.2e-3 (a LayerNorm eps 100x too large) to 0.25
#: (the attention mask dropped; the attention scale squared: 0.11).
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4

#: Encoder length of the parity batches (at most the model's context). Short on purpose: the
#: library's forward costs mostly per-module Python overhead, so longer windows would cost more
#: without running any other code.
PARITY_ENCODER_STEPS = 32


def parity_inputs(spec: ModelSpec) -> list[dict[str, torch.Tensor]]:
    """Two small deterministic batches, built the way serving builds its own (a synthetic panel
    through :func:`~forecaster.contract.features.build_windows`), one per path through :func:`_vsn`.

    * Two series with the same history length: their calendar inputs are identical, so the
      encoder's selection runs both its shared and its per-series branch, as for a fleet with
      full history.
    * Two series of different lengths: nothing in the encoder is shared and the attention mask
      must hide the shorter one's padding, as when some hosts are warming up.
    """
    n = min(PARITY_ENCODER_STEPS, spec.context_steps)
    lengths = (n, n, max(1, n // 2))
    step = spec.step_seconds
    T = spec.lookback_steps + 1
    ts = (1_750_000_000 // step * step) - step * np.arange(T - 1, -1, -1, dtype=np.int64)
    S = len(spec.signals)
    rng = np.random.default_rng(0)
    phase = 2 * np.pi * ts.astype(np.float64) / 86400.0
    values = np.empty((len(lengths), S, T), dtype=np.float32)
    for i, length in enumerate(lengths):
        for j in range(S):
            values[i, j] = 0.4 + 0.05 * j + 0.2 * np.sin(phase + i + j) + 0.03 * rng.standard_normal(T)
        # Nothing observed in the context but its last ``length`` steps; older days stay for the
        # same-time-earlier inputs of a seasonal model.
        values[i, :, T - spec.context_steps:T - length] = np.nan
    panel = Panel([f"parity-{i}" for i in range(len(lengths))], list(spec.signals), ts, values, step)
    series = np.array([(i, i % S) for i in range(len(lengths))])
    # A model with the schedule input sees declared windows of 10 minutes in every 20, so that its
    # column holds both values here as it does in serving (ignored by a model without that input).
    planned = ScheduleSet((Schedule("parity", "*/20 * * * *", 600),))
    windows = build_windows(panel, series, np.full(len(series), T - 1),
                            spec.window_rules(min_history=1, schedules=planned), spec.signal_codes(),
                            np.full(len(series), 0.9))
    if len(windows) != len(lengths):
        raise ValueError(f"parity batch: {len(windows)} of {len(lengths)} windows usable")
    return [to_network_input(windows.take(np.array([0, 1]))), to_network_input(windows.take(np.array([0, 2])))]


@dataclass(frozen=True)
class ParityCheck:
    """What the load-time check found; ``ok`` False means the fast path must not serve the model."""

    ok: bool
    max_abs_diff: float  # over every output of every batch; NaN when it raised or an output is NaN
    seconds: float
    error: str | None = None  # the exception, when one was raised instead of a comparison


def check_parity(fast: FastTFT, spec: ModelSpec, atol: float = PARITY_ATOL,
                 rtol: float = PARITY_RTOL) -> ParityCheck:
    """Run :func:`parity_inputs` through the library's forward and the fast one and compare: the
    predictions, and what the drivers are made of (:func:`~forecaster.contract.model.explain_output`:
    the encoder's mean variable selection weights and the attention summary), so a fast path that
    forecasts right but explains wrong is not served either.

    Costs about 40 ms at the default size (hidden 32, 8 heads, 96-step horizon) on one thread
    (35-55 ms measured on a busy 2-core machine; about 5 ms more to build the :class:`FastTFT`),
    once per model load, which by itself takes about as long. It cannot be a few ms: the
    library's forward is mostly per-module Python overhead, at least ~10 ms for any batch at
    that size, and each of the two batches runs it once. Never raises: an exception anywhere
    is a failed check.
    """
    began = time.perf_counter()
    worst = 0.0
    ok = True
    try:
        was_training = fast.training
        fast.eval()
        with torch.inference_mode():
            for x in parity_inputs(spec):
                lib = fast.network(x)
                res = fast(x)
                lengths = x["encoder_lengths"]
                pairs = zip((res["prediction"], *explain_output(res, lengths, fast.attention_steps)),
                            (lib["prediction"], *explain_output(lib, lengths, fast.attention_steps)), strict=True)
                for got, want in pairs:
                    if got.shape != want.shape:
                        raise ValueError(f"fast output shape {tuple(got.shape)} != library {tuple(want.shape)}")
                    diff = float((got - want).abs().max()) if got.numel() else 0.0
                    worst = max(worst, diff) if not math.isnan(diff) else math.nan
                    ok = ok and bool(torch.allclose(got, want, atol=atol, rtol=rtol))
        fast.train(was_training)
    except Exception as exc:  # a library change can break the fast path in any way; none may stop a load
        return ParityCheck(False, math.nan, time.perf_counter() - began, f"{type(exc).__name__}: {exc}")
    return ParityCheck(ok and not math.isnan(worst), worst, time.perf_counter() - began)


@dataclass(frozen=True)
class ServingNetwork:
    """The network a loaded model is served with, and why that one."""

    network: nn.Module  # a checked FastTFT, or the library's network itself
    fast_path: bool  # True: predictions go through FastTFT's own forward
    reason: str  # one phrase for the load log line
    parity: ParityCheck | None = None  # None when no check ran (switched off, structure not covered)

    @property
    def parity_failed(self) -> bool:
        return self.parity is not None and not self.parity.ok


def for_serving(network: nn.Module, spec: ModelSpec, *, enabled: bool = True, label: str = "model") -> ServingNetwork:
    """Wrap a freshly loaded TFT for serving: the fast path only where it is on, covers the
    structure and gives the library's numbers on :func:`parity_inputs`; the library's network
    otherwise. A failed (or raising) check logs one WARNING naming ``label`` and the difference.
    Never raises, so a fast-path problem never stops a model from loading.
    """
    if not enabled:
        return ServingNetwork(network, False, "library forward (fast path switched off)")
    try:
        fast = FastTFT(network, attention_steps(spec)).eval()
    except Exception as exc:
        check = ParityCheck(False, math.nan, 0.0, f"{type(exc).__name__}: {exc}")
    else:
        if not fast.fast:
            return ServingNetwork(network, False, "library forward (structure not covered by the fast path)")
        check = check_parity(fast, spec)
        if check.ok:
            return ServingNetwork(fast, True, f"fast path (parity checked in {check.seconds * 1e3:.0f} ms, "
                                              f"max abs difference {check.max_abs_diff:.1e})", check)
    what = (f"raised {check.error}" if check.error is not None
            else f"max abs difference {check.max_abs_diff:.3g} exceeds {PARITY_ATOL:g} + {PARITY_RTOL:g} x |library|")
    log.warning("fast path parity check failed for %s: %s; serving it with the library's forward", label, what)
    return ServingNetwork(network, False, "library forward (fast path parity check failed)", check)
