"""Gradient capture: per-domain gradients of a final ``nn.Linear`` from the ordinary backward
(method.md §Per-example gradients, §Making capture cheap).

Modules: `head` (the `HeadGradientCapture` object: hooks, batches, results), `products` (the
hook path's per-domain products), `fused` (the head's weight gradient computed per domain),
`rows` (which rows feed which domain), `rowbuffer` (deferred products), `sketch`, `sizes`
(shapes, memory, option checks), `state` (checkpoints), `settled` (read-after-flush totals).

For ``s = a Wᵀ + b`` the gradient of the loss restricted to rows ``R`` is ``Σ_{r∈R} δ_rᵀ a_r``
with ``δ = ∂loss/∂s``. A forward hook keeps ``a`` (autograd keeps it anyway) and puts a
pre-hook on the autograd node of ``s``; that hook receives ``δ`` during the normal backward
pass and each domain's ``δ_Rᵀ a_R`` ends up in a preallocated fp32 accumulator. No extra
forward/backward, no per-example tensors, and ``.grad`` is never read (a tied embedding adds
its own gradient there).

Scale: ``δ`` is the gradient of whatever is backpropagated. Lightning divides the loss by
``accumulate_grad_batches`` and HF causal-LM losses average over the batch's valid tokens, so
the captured sums carry those constant factors; a fp16 ``GradScaler`` multiplies the loss,
which `HeadGradientCapture.set_grad_scale` undoes. Constant factors common to all domains
cancel in the normalized R&B update.

Sketch mode (memory independent of ``V``): the gradient ``G_i`` (``V×d``) is replaced by
``S_V G_i S_dᵀ`` with ``S_d`` a random ``d → sketch_in`` projection (orthonormal rows scaled by
``sqrt(d/k)``: a Gaussian sketch with less variance) and
``S_V`` a count sketch ``V → sketch_out`` with bucket ``v mod sketch_out`` and an independent
random sign per vocabulary entry. Both satisfy ``E[SᵀS] = I`` and are independent, so sketched
inner products ``<Ĝ_i, Ĝ_j>`` are unbiased for ``<G_i, G_j>``. The random signs alone give
unbiasedness for any fixed bucket map; strided buckets (rather than contiguous blocks) spread
the frequent low-id BPE tokens over different buckets, and need neither a permutation gather
nor a scatter (``index_add`` was slower than the exact product): each of the ``⌈V/k⌉``
contiguous column blocks of ``δ`` is multiplied by its signs and added into an ``[n, k]``
buffer. A side whose size is already ≤ its sketch size is kept exact.

Token subsampling (``rows_per_example``): per example, ``s`` of its ``n`` valid rows are drawn
uniformly without replacement and weighted by ``n / s``, which keeps every ``g_i`` unbiased.
The price is variance: an example's contribution gets variance ``n² (1 − s/n) / s`` times the
spread of its per-row terms ``δ_rᵀ a_r`` (zero at ``s = n``, growing like ``n²/s``), which
the sum over a round's many examples averages down (method.md: ~10% Gram error, TV of ``p``
0.02, at 16 of 128 tokens per sequence).

Rows: ``[B, d]`` inputs have one row per example, ``[B, T, d]`` (or ``[B, ..., d]``) inputs
one row per token, each inheriting its example's domain. An optional row mask excludes
ignored/padded rows. Rows are planned on the host in `set_batch` (`rows`). When at
most half the rows are selected, the backward hook only copies them into a row buffer and
the per-domain products run once per flush (`rowbuffer`); otherwise ``δ`` is used
in place, one product per run of same-domain examples, since copying a large ``δ`` costs more
than the products. Host syncs: one per flush (or per backward when unbuffered: the
finiteness check), plus one per `set_batch` if the ids or the mask live on the GPU (rnb's
models hand it host copies made before the device transfer, so training declares batches
without a sync).

Fused (``balance.capture.fused``, exact mode): instead of hooks the head runs through
`fused.FusedLinear`, whose backward computes each domain's ``δ_Rᵀ a_R`` once and returns
their sum as the head's weight gradient, so exact capture adds no FLOPs (details, and the
memory traffic it adds instead, in `rnb.balance.capture.fused`).

Metering (``summary.json`` ``overhead.wall_pct``): every piece of capture work runs inside
the meter's section — host planning in `set_batch`, the forward hook's planning, the
backward hook's copies and products, flushes, the Gram. What no section can time: Python
dispatch of the hooks by autograd (microseconds), and side effects on the training's own
kernels (caches evicted by the products, allocator state). The fused path meters only what
plain autograd would not do (scratch allocation, the sum, the accumulator update), since its
products replace the weight-gradient product. ``benchmarks/overhead.py`` prints, next to the
measured ratio, the measured extra ms/step of ``rnb lambda0`` (R&B machinery with the uniform
mixture) against the metered ms/step: their difference is what the meter misses; any further
difference of ``rnb`` is the effect of another mixture (other documents), not overhead.
"""

from rnb.balance.capture.head import HeadGradientCapture

__all__ = ["HeadGradientCapture"]
