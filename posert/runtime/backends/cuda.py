"""GPU backend: the whole tick on the device, captured as one CUDA graph and replayed.

Unlike the other backends, this one is *resident* (:class:`~posert.runtime.backends.base.
ResidentBackend`): it owns the key/value ring caches, the DDIM state and the staging buffers, all
allocated once in :meth:`CudaBackend.allocate`, and runs the chain of a tick
(:func:`posert.runtime.chain.run_chain`) on its device (:meth:`CudaBackend.run`)::

    pinned host → device   newest frames (b, 17, 3), frame counts (b,), rows (b,) (−1 = not due)
    lag (b, M)             ← how old every ring slot is (ring_lags, as torch ops on the device)
    lifter step            → x_T, keys/values → posert._C._kv_push_cuda (ring push, rows ≥ 0 only)
    K × denoiser step      → ê, keys/values → kv_push_cuda; x ← posert._C._ddim_update_cuda (Eq. 9)
    device → pinned host   x_0 and x_T (b, 17, 3)

By default (``fused=True``) each step is one ``posert._C.transformer_step`` kernel
(csrc/step/transformer_step.cu: one thread block per stream holds the frame's activations in shared
memory, and the ring-cache write and the DDIM update are fused in), so a tick is K + 1 kernel
launches; ``fused=False`` runs the torch modules' own kernels (hundreds per tick) with the
``kv_push``/``ddim_update`` CUDA kernels between them.

The batch is padded to a bucket b (a power of two ≥ the highest due slot + 1, at most the
capacity): one CUDA graph per bucket is captured on first use (after two warm-up runs, which
write no cache: every row is −1 then) and replayed for any subset of due streams, because rows
that are not due are computed but never written back. A tick is then one graph launch and one
stream synchronisation; host work is three small copies into pinned memory.

``device="cpu"`` runs the same chain eagerly on the CPU with the kernels' C++ twins: the
device-independent logic (buckets, idle rows, lags, ring positions) is tested where no GPU exists.
``compile=True`` passes both step functions through ``torch.compile`` (Inductor fuses the
element-wise work of a step into a few Triton kernels) before capture.

FP32 throughout (TF32 off), so the output agrees with the CPU backends to float rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from posert import _C
from posert.errors import BackendUnavailable
from posert.models.denoiser import Denoiser
from posert.models.diffusion import CND, Schedule
from posert.models.io import load_lifter, load_refiner
from posert.models.lifter import Lifter
from posert.runtime.backends.base import Capabilities
from posert.runtime.backends.packing import pack_step, step_cond, step_dims
from posert.runtime.chain import run_chain
from posert.skeleton import NUM_JOINTS

DEFAULT_CLUSTER = 8
"""Thread blocks per stream of the fused step on sm_90+ (docs/kernels.md: the H100 measurements)."""
CLUSTER_MAX_BLOCKS = 64
"""Largest batch × cluster run as clusters; bigger batches run one block per stream."""


def require_gpu(device: str) -> None:
    """Raise RuntimeError (with the reason) unless ``device`` is usable for this backend: a CUDA
    device torch can see and a ``posert._C`` built with its CUDA kernels; ``cpu`` always is."""
    if torch.device(device).type == "cpu":
        return
    if torch.device(device).type != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda[:n]', got {device!r}")
    if not torch.cuda.is_available():
        raise BackendUnavailable("the cuda backend needs a CUDA GPU that torch can use (torch.cuda.is_available() is "
                           f"False; torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    if not _C.built_with_cuda():
        raise BackendUnavailable("posert._C was built without its CUDA kernels (nvcc was not found at build time); "
                           "reinstall with nvcc on the PATH")


def torch_ring_lags(count: torch.Tensor, M: int, slots: torch.Tensor) -> torch.Tensor:
    """Device twin of :func:`posert.runtime.chain.ring_lags`: count (b,) int64 frames already
    cached, slots = arange(M) → (b, M) int64 lag of every ring slot, M + 1 for an empty one."""
    n = count[:, None]
    lag = torch.remainder(n - 1 - slots, M) + 1
    return torch.where(lag > n, torch.full_like(lag, M + 1), lag)


class CudaBackend:
    """Lifter + DDIM refiner on one device, the tick as one CUDA graph (resident backend).

    Args:
        lifter, denoiser: causal models (any window); moved to ``device``, FP32.
        cnd: the refiner's CND (kept for API parity; multi-hypothesis runs need the host backends).
        device: ``cuda`` / ``cuda:n`` (default) or ``cpu`` (eager, the C++ twins; for tests).
        graphs: capture one CUDA graph per batch bucket and replay it (CUDA only; default True).
        compile: ``torch.compile`` the two step functions first (CUDA only; default False).
        fused: run each step as one ``posert._C.transformer_step`` kernel (csrc/transformer_step.h;
            one thread block per stream, the cache write and the DDIM update fused in) instead of
            the torch modules' kernels (default True; ``compile`` applies to the torch form only).
        threads: threads per block of the fused kernel: 256, 512 (default) or 1024.
        cluster: thread blocks per stream of the fused kernel (a thread-block cluster; 1, 2, 4, 8
            or 16). > 1 splits every linear layer of a stream over that many SMs (distributed
            shared memory) and needs compute capability 9.0 (Hopper) or newer; each block holds
            1/cluster of the weights (``posert._C.transformer_step_cluster_pack``, built once
            here, LayerNorms folded into the linears after them), so small clusters may not fit
            in shared memory (a clear RuntimeError at the first tick). None (default):
            :data:`DEFAULT_CLUSTER` on sm_90+, else 1.
        pdl: launch each denoiser step as a programmatic dependent of the kernel before it
            (sm_90+, fused only): its weight copy overlaps that kernel's tail (default True).

    Raises ValueError for an offline model or a bad option, RuntimeError when the device is
    unusable (see :func:`require_gpu`).
    """

    name = "cuda"
    capabilities = Capabilities(kind="resident", hypotheses=False, device="cuda")
    cache_dtype = np.dtype(np.float32)

    def __init__(self, lifter: Lifter, denoiser: Denoiser, cnd: CND | None = None, device: str = "cuda",
                 graphs: bool = True, compile: bool = False, fused: bool = True, threads: int = 512,
                 cluster: int | None = None, pdl: bool = True):
        require_gpu(device)
        if threads not in (256, 512, 1024):
            raise ValueError(f"threads must be 256, 512 or 1024, got {threads}")
        if cluster not in (None, 1, 2, 4, 8, 16):
            raise ValueError(f"cluster must be 1, 2, 4, 8 or 16, got {cluster}")
        self.threads, self.pdl = threads, pdl
        if cluster is None:
            on_hopper = torch.device(device).type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9
            cluster = DEFAULT_CLUSTER if on_hopper else 1
        self.cluster = cluster
        for m in (lifter, denoiser):
            if not m.causal:
                raise ValueError(f"{type(m).__name__} is offline (causal=False); streaming needs causal models")
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        if (graphs or compile) and not self.on_gpu:
            graphs = compile = False  # CPU: the eager chain (the test path)
        if fused:
            compile = False
        self.graphs, self.compiled, self.fused = graphs, compile, fused
        if self.on_gpu:
            torch.backends.cuda.matmul.allow_tf32 = False  # FP32 arithmetic: agree with the CPU backends
            torch.backends.cudnn.allow_tf32 = False
        self.lifter = lifter.eval().to(self.device)
        self.denoiser = denoiser.eval().to(self.device)
        for p in (*self.lifter.parameters(), *self.denoiser.parameters()):
            p.requires_grad_(False)
        self.window = lifter.window
        self.schedule = Schedule(denoiser.cfg.T, denoiser.cfg.K)
        self.cnd = cnd
        self.lifter_cache_shape, self.denoiser_cache_shape = lifter.cache_shape, denoiser.cache_shape
        self._lift, self._den = self.lifter.step, self.denoiser.step
        if fused:
            self._dims_l, self._dims_d = step_dims(lifter), step_dims(denoiser)
            wl, wd = pack_step(self.lifter), pack_step(self.denoiser)
            self._w_l, self._w_d = (torch.from_numpy(w).to(self.device) for w in (wl, wd))
            # the cluster form's per-rank weights (LayerNorms folded in), built once; empty for cluster 1
            self._p_l, self._p_d = (torch.from_numpy(_C.transformer_step_cluster_pack(w, dims, cluster)).to(self.device)
                                    if cluster > 1 else None for w, dims in ((wl, self._dims_l), (wd, self._dims_d)))
        if compile:
            self._lift = torch.compile(self._lift, fullgraph=True, dynamic=False)
            self._den = torch.compile(self._den, fullgraph=True, dynamic=False)
        self.capacity = 0

    @classmethod
    def from_checkpoints(cls, lifter: str | None = None, refiner: str | None = None, device: str = "cuda",
                         graphs: bool = True, compile: bool = False, fused: bool = True,
                         threads: int = 512, cluster: int | None = None, pdl: bool = True) -> CudaBackend:
        """The committed (or given) checkpoints on ``device``; see the class for the options."""
        require_gpu(device)
        den, cnd = load_refiner(refiner)
        return cls(load_lifter(lifter), den, cnd, device, graphs, compile, fused, threads, cluster, pdl)

    def cluster_for(self, b: int) -> int:
        """Thread blocks per stream for a batch of ``b`` rows: ``cluster`` while the batch's clusters
        fill at most :data:`CLUSTER_MAX_BLOCKS` SMs, else 1. Clusters shorten one stream's step but
        must each fit in one GPC: with more rows they queue in waves and one block per row is
        faster (H100: 16 streams 14,058 vs 18,897 poses/s; docs/kernels.md)."""
        return self.cluster if b * self.cluster <= CLUSTER_MAX_BLOCKS else 1

    # -- state --------------------------------------------------------------------------------
    def allocate(self, max_streams: int, pairs: list[tuple[int, int]],
                 coefs: list[tuple[float, float, float, float]],
                 shift: tuple[np.ndarray, np.ndarray] | None = None, mean_ema: float = 1.0) -> None:
        """Allocate every buffer for ``max_streams`` streams and the DDIM steps ``pairs``
        ((t, t_prev) each) with their Eq. 9 coefficients; drops captured graphs. Called once by
        Pipeline. ``shift``: (A (85, 51), c (51,)) float32 of :meth:`CND.mean_map
        <posert.models.diffusion.CND.mean_map>`: the DDIM state starts at x_T − μ_a|b(y, x_T)
        (one matrix product in the chain, captured with it); None: at x_T. ``mean_ema``: the
        weight α of the causal EMA μ̄ of μ_a|b per stream (:class:`~posert.models.diffusion.CND`);
        x_T − μ̄ is subtracted, μ̄ kept on the device."""
        S, dev = int(max_streams), self.device
        self._A = self._c = None
        self._ema = float(mean_ema)
        if shift is not None:
            self._A, self._c = (torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(dev) for v in shift)
            self._d_b = torch.zeros((S, 5 * NUM_JOINTS), device=dev)  # [y, x_T] per slot
            self._d_mu = torch.zeros((S, 3 * NUM_JOINTS), device=dev)
            self._d_mubar = torch.zeros((S, 3 * NUM_JOINTS), device=dev)  # μ̄ per stream slot
            self._d_w = torch.zeros((S, 1), device=dev)  # this tick's EMA weight per slot
        self.capacity = S
        self._pairs, self._coefs = list(pairs), [tuple(float(c) for c in cf) for cf in coefs]
        lc, dc = self.lifter_cache_shape, self.denoiser_cache_shape
        self._lstore = torch.zeros((lc[0], S, *lc[1:]), device=dev)  # (G, S, 17, heads, M, d)
        self._dstore = [torch.zeros((dc[0], S, *dc[1:]), device=dev) for _ in self._pairs]
        self._M_l, self._M_d = lc[3], dc[3]
        self._slots_l = torch.arange(self._M_l, device=dev)
        self._slots_d = torch.arange(self._M_d, device=dev)
        self._t = [torch.full((S,), float(t), device=dev) for t, _ in self._pairs]
        if self.fused:
            self._cond = [torch.from_numpy(step_cond(self.denoiser, t)).to(dev) for t, _ in self._pairs]
            self._coef_np = [np.array(c, np.float32) for c in self._coefs]
        pin = self.on_gpu
        # a tick's inputs in one staging buffer (one host-to-device copy): count (S,) int64, the
        # newest frames (S, 17, 3) float32, rows (S,) int32; the same layout on the device
        nc_, ni = 8 * S, 4 * S * NUM_JOINTS * 3
        self._h_in = torch.zeros(nc_ + ni + 4 * S, dtype=torch.uint8, pin_memory=pin)
        self._d_in = torch.zeros(nc_ + ni + 4 * S, dtype=torch.uint8, device=dev)
        self._h_count, self._h_inp, self._h_rows = self._staged(self._h_in, S)
        self._d_count, self._d_inp, self._d_rows = self._staged(self._d_in, S)
        self._h_rows.fill_(-1)
        self._d_rows.fill_(-1)
        self._h_out = torch.zeros((2, S, NUM_JOINTS, 3), pin_memory=pin)  # x_0, x_T (metres)
        self._d_out = torch.zeros((2, S, NUM_JOINTS, 3), device=dev)
        self._d_x, self._d_xT = self._d_out[0], self._d_out[1]  # the DDIM state x_k; x_T
        self._n_inp, self._n_count, self._n_rows = self._h_inp.numpy(), self._h_count.numpy(), self._h_rows.numpy()
        self._n_out = self._h_out.numpy()
        self._graph: dict[int, torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        self._stream = torch.cuda.Stream(dev) if self.on_gpu else None
        self._copies_in_graph = True  # the pinned-memory copies are graph nodes (see _capture)
        self._stages = (_FusedStages if self.fused else _TorchStages)(self)

    def reset(self, slot: int) -> None:
        """Clear a slot's key/value caches and its μ̄ on the device (a new or restarting stream)."""
        if not 0 <= slot < self.capacity:
            raise IndexError(f"slot {slot} out of range [0, {self.capacity})")
        with torch.no_grad():
            self._lstore[:, slot].zero_()
            for ds in self._dstore:
                ds[:, slot].zero_()
            if self._A is not None:
                self._d_mubar[slot].zero_()

    @staticmethod
    def _staged(buf: torch.Tensor, S: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views (count (S,) int64, inp (S, 17, 3) float32, rows (S,) int32) of a staging buffer."""
        nc_, ni = 8 * S, 4 * S * NUM_JOINTS * 3
        return (buf[:nc_].view(torch.int64), buf[nc_:nc_ + ni].view(torch.float32).view(S, NUM_JOINTS, 3),
                buf[nc_ + ni:].view(torch.int32))

    def bucket(self, hi: int) -> int:
        """The padded batch of a tick whose highest due slot is hi − 1: the next power of two,
        at most the capacity."""
        return min(self.capacity, 1 << max(0, int(hi) - 1).bit_length())

    # -- the chain ----------------------------------------------------------------------------
    def _kv_push(self, store: torch.Tensor, kv: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> None:
        G, S, J, h, M, d = store.shape
        b = kv.shape[1]
        kv = kv.contiguous()
        if self.on_gpu:
            _C._kv_push_cuda(store.data_ptr(), G, S, J * h, M, d, kv.data_ptr(), b, rows.data_ptr(), pos.data_ptr(), b,
                            torch.cuda.current_stream(self.device).cuda_stream, 0)
        else:
            _C.kv_push(store.numpy().reshape(G, S, J * h, M, d), kv.numpy().reshape(G, b, J * h, d), rows.numpy(),
                       pos.numpy())

    def _ddim(self, x: torch.Tensor, e: torch.Tensor, coef: tuple[float, float, float, float]) -> None:
        e = e.contiguous()
        if self.on_gpu:
            _C._ddim_update_cuda(x.data_ptr(), e.data_ptr(), x.data_ptr(), x.numel(), *coef,
                                torch.cuda.current_stream(self.device).cuda_stream)
        else:
            xn = x.numpy()
            _C.ddim_update(xn, e.numpy(), xn, *coef)

    @torch.no_grad()
    def _chain(self, b: int) -> None:
        """One tick over the first ``b`` stream slots, reading the staging buffers and writing x_0,
        x_T into the output; every tensor it touches is preallocated, so a capture of it replays on
        the same memory."""
        if self._copies_in_graph or not self.graphs:
            self._upload(b)
        run_chain(self._stages.at(b), len(self._pairs))
        if self._copies_in_graph or not self.graphs:
            self._download(b)

    def _shift_x(self, b: int) -> None:
        """x_k ← x_T − μ̄ for the first ``b`` slots (no-op without a shift): μ = μ_a|b(y, x_T);
        μ̄ = μ at a stream's first frame, then μ̄ ← μ̄ + w (μ − μ̄) with w = α for due slots and 0
        for the others (their μ̄ stays). Every tensor it keeps is preallocated."""
        if self._A is None:
            return
        J = NUM_JOINTS
        bv, mu, mubar, w = self._d_b[:b], self._d_mu[:b], self._d_mubar[:b], self._d_w[:b]
        bv[:, :2 * J].view(b, J, 2).copy_(self._d_inp[:b, :, :2])
        bv[:, 2 * J:].view(b, J, 3).copy_(self._d_xT[:b])
        torch.addmm(self._c, bv, self._A, out=mu)
        mubar.copy_(torch.where(self._d_count[:b, None] == 0, mu, mubar))  # a stream's first frame: μ̄ = μ
        w.copy_(self._d_rows[:b, None] >= 0).mul_(self._ema)  # α where the slot is due, else 0
        mubar.add_(mu.sub_(mubar).mul_(w))
        self._d_x[:b].view(b, 3 * J).sub_(mubar)

    def _download(self, b: int) -> None:
        """x_0 and x_T of every slot, one device-to-host copy (the slots ≥ b are not read)."""
        self._h_out.copy_(self._d_out, non_blocking=self.on_gpu)

    def _upload(self, b: int) -> None:
        """The staged inputs of every slot, one host-to-device copy (the kernels read the first b)."""
        self._d_in.copy_(self._h_in, non_blocking=self.on_gpu)

    def _capture(self, b: int) -> torch.cuda.CUDAGraph:
        """Warm up and capture the chain for bucket ``b``. The pinned-memory copies go into the
        graph; if this torch refuses to capture them, they run beside it (``copies_in_graph``
        False: three host-to-device copies before and one device-to-host copy after each replay)."""
        self._n_rows[:b] = -1  # warm-up runs write no cache row
        with torch.cuda.stream(self._stream):
            for _ in range(2):  # Triton/cuBLAS set-up and lazy module loading happen here, not in the capture
                self._chain(b)
            self._stream.synchronize()
            try:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=self._pool, stream=self._stream):
                    self._chain(b)
            except RuntimeError:
                if not self._copies_in_graph:
                    raise
                self._copies_in_graph = False
                torch.cuda.synchronize(self.device)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=self._pool, stream=self._stream):
                    self._chain(b)
        self._stream.synchronize()
        return g

    def run(self, hi: int, due: np.ndarray, inp: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One tick: ``due`` (n,) sorted slots < ``hi`` with a new frame, ``inp`` (≥ hi, 17, 3)
        float32 newest normalised frame per slot, ``count`` (≥ hi,) int64 frames already cached
        per slot. Writes the due slots' caches; returns copies of (x_0, x_T), each (n, 17, 3)
        float32, metres, root-relative, in ``due`` order."""
        if not self.capacity:
            raise RuntimeError("CudaBackend.allocate() was not called (use it through Pipeline)")
        b = self.bucket(hi)
        if self.graphs and b not in self._graph:
            self._graph[b] = self._capture(b)
        self._n_inp[:hi] = inp[:hi]
        self._n_count[:hi] = count[:hi]
        self._n_rows[:b] = -1
        self._n_rows[due] = due
        if self.graphs:
            with torch.cuda.stream(self._stream):
                if not self._copies_in_graph:
                    self._upload(b)
                self._graph[b].replay()
                if not self._copies_in_graph:
                    self._download(b)
            self._stream.synchronize()
        elif self.on_gpu:
            with torch.cuda.stream(self._stream):
                self._chain(b)
            self._stream.synchronize()
        else:
            self._chain(b)
        return self._n_out[0, due], self._n_out[1, due]  # fancy indexing: copies


class _TorchStages:
    """The chain's stages (:class:`posert.runtime.chain.ChainStages`) as the torch modules' own
    steps, with ``kv_push`` and the DDIM update between them, over the first ``b`` slots."""

    def __init__(self, be: CudaBackend):
        self.be, self.b = be, 0

    def at(self, b: int) -> _TorchStages:
        be = self.be
        self.b = b
        count = be._d_count[:b]
        self.lag_l = torch_ring_lags(count, be._M_l, be._slots_l)
        self.lag_d = torch_ring_lags(count, be._M_d, be._slots_d)
        self.pos_l = torch.remainder(count, be._M_l).to(torch.int32)
        self.pos_d = torch.remainder(count, be._M_d).to(torch.int32)
        return self

    def lift(self) -> None:
        be, b = self.be, self.b
        ls = be._lstore
        x_T, kv = be._lift(be._d_inp[:b], self.lag_l, *[ls[g, :b] for g in range(ls.shape[0])])
        be._kv_push(ls, kv, be._d_rows[:b], self.pos_l)
        be._d_xT[:b].copy_(x_T)

    def start(self) -> None:
        self.be._d_x[:self.b].copy_(self.be._d_xT[:self.b])

    def shift(self) -> None:
        self.be._shift_x(self.b)

    def denoise(self, k: int) -> None:
        be, b = self.be, self.b
        ds, x = be._dstore[k], be._d_x[:b]
        e, kv = be._den(be._d_inp[:b], x, be._t[k][:b], self.lag_d, *[ds[g, :b] for g in range(ds.shape[0])])
        be._kv_push(ds, kv, be._d_rows[:b], self.pos_d)
        be._ddim(x, e, be._coefs[k])


class _FusedStages:
    """The chain's stages as one ``posert._C.transformer_step`` kernel per step over the first ``b``
    slots (on the CPU, its C++ twin): the lifter writes x_T into the DDIM state and the x_T output,
    each denoiser step updates the state in place; every kernel writes its layers' keys/values of
    the rows that are due."""

    def __init__(self, be: CudaBackend):
        self.be, self.b = be, 0

    def at(self, b: int) -> _FusedStages:
        self.b = b
        return self

    def _common(self) -> dict:
        be, b = self.be, self.b
        nc = be.cluster_for(b)
        return dict(B=b, inp=be._d_inp.data_ptr(), x=be._d_x.data_ptr(), count=be._d_count.data_ptr(),
                    rows=be._d_rows.data_ptr(), S=be.capacity, stream=torch.cuda.current_stream(be.device).cuda_stream,
                    threads=be.threads, cluster=nc), nc

    def lift(self) -> None:
        be, b = self.be, self.b
        if be.on_gpu:
            common, nc = self._common()
            _C._transformer_step_cuda(be._dims_l, be._w_l.data_ptr(), x_T=be._d_xT.data_ptr(), cond=0,
                                     cache=be._lstore.data_ptr(), packed=be._p_l.data_ptr() if nc > 1 else 0,
                                     **common)
        else:
            _C.transformer_step(be._w_l.numpy(), be._dims_l, be._d_inp[:b].numpy(), be._d_x[:b].numpy(),
                                be._d_xT[:b].numpy(), None, be._d_count[:b].numpy(), be._d_rows[:b].numpy(),
                                be._lstore.numpy(), None)

    def start(self) -> None:
        pass  # the lifter's kernel wrote x as well as x_T

    def shift(self) -> None:
        self.be._shift_x(self.b)

    def denoise(self, k: int) -> None:
        be, b = self.be, self.b
        coef, ds = be._coefs[k], be._dstore[k]
        if be.on_gpu:
            common, nc = self._common()
            _C._transformer_step_cuda(be._dims_d, be._w_d.data_ptr(), x_T=0, cond=be._cond[k].data_ptr(),
                                     cache=ds.data_ptr(), a=coef[0], b=coef[1], ap=coef[2], bp=coef[3],
                                     packed=be._p_d.data_ptr() if nc > 1 else 0, pdl=be.pdl, **common)
        else:
            _C.transformer_step(be._w_d.numpy(), be._dims_d, be._d_inp[:b].numpy(), be._d_x[:b].numpy(), None,
                                be._cond[k].numpy(), be._d_count[:b].numpy(), be._d_rows[:b].numpy(), ds.numpy(),
                                be._coef_np[k])
