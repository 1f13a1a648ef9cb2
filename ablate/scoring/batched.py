"""Evaluate many merged models per pass over the same eval windows (the sweep's and search's evaluator).

How to run (from Python):
    from ablate.scoring.batched import EvalWindows, ModelStack
    windows = EvalWindows.build(tokens, byte_lengths, seq_len=128)    # once per eval set
    stack = ModelStack(model, slots=4)                                 # once per worker
    stack.load(0, running)                                             # RunningSum -> slot 0, ... slot 3
    nll = stack.window_nll(windows, batch_size=32, count=4)           # [4, n_windows] float64 sums

Why: a small model leaves the cores idle between tiny kernels and pays the framework's
per-op cost once per model. Here the M slots' weights are stacked and one `torch.vmap` of
`functional_call` runs all M on a batch of windows: every op is issued once for M models.
The LM head and the loss are fused and chunked over tokens, so the [batch, seq, vocab]
logits (64 MB per model at the demo's 32 x 128 x 4096) are never written out whole.
Per-window NLL sums come back (float64), so screening (ablate/scoring/screen.py) can pair windows.

Equality: the weights in slot m are the same floats load_into writes; the forward differs
from `evaluate.evaluate_tokens` only in GEMM blocking and summation order (1e-6 relative
on the sums, tested). A model whose head is not `lm_head(last hidden state)` (logit scaling,
soft-capping) is caught by a probe at the first batch and takes the full-logits path.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, vmap

from ablate.models.device import precision_context
from ablate.models.model import check_fit, count_params, model_from_config, seed_config
from ablate.models.threads import refresh as refresh_threads
from ablate.scoring.evaluate import nll_stats
from ablate.scoring.evaluate import windows as window_spans
from ablate.scoring.losses import CHUNK_LOGITS, token_nll, window_sums

# Logits per chunk, over all slots (losses.CHUNK_LOGITS, 4 MB): M x tokens x vocab floats stay near the cache.
MAX_SLOTS = 8  # beyond 8 the per-op cost is already amortized; memory is not
# Multiply-adds per model per batch above which stacking models stops paying (bench_throughput.py,
# 2-core CPU: the test-sized model, 1k tokens x 0.04M params, runs 2.6x faster per model at M = 8;
# the demo model, 4k tokens x 0.7M params, is fastest at M = 1).
PASS_MACS = 1 << 28


@dataclass
class EvalWindows:
    """An eval set cut into windows once: the full windows as one int64 tensor, the ragged tail
    apart, and what each window predicts (tokens, UTF-8 bytes) — nothing recomputed per mixture."""

    name: str
    full: torch.Tensor            # [n_full, seq_len] int64
    tail: torch.Tensor | None     # [1, t] int64, t < seq_len, or None
    n_pred: np.ndarray            # predicted tokens per window (seq_len - 1, tail t - 1)
    n_bytes: np.ndarray           # UTF-8 bytes of the predicted tokens per window
    # [n_full, seq_len - 1] 0/1 over the predicting positions, or None (all count): a task's windows are its
    # examples, context + correct answer right-padded, and only the answer's tokens count (ablate/data/tasks.py)
    mask: torch.Tensor | None = None

    @classmethod
    def build(cls, tokens: np.ndarray, byte_lengths: np.ndarray, seq_len: int, name: str = "eval set",
              limit: int | None = None) -> "EvalWindows":
        """`limit`: only the first `limit` windows (a screening prefix)."""
        spans = window_spans(int(tokens.size), seq_len)[:limit]
        full = [s for s in spans if s[1] - s[0] == seq_len]
        rest = [s for s in spans if s[1] - s[0] != seq_len]
        ids = torch.from_numpy(np.stack([tokens[a:b] for a, b in full]).astype(np.int64)) if full else \
            torch.empty((0, seq_len), dtype=torch.int64)
        tail = torch.from_numpy(tokens[rest[0][0]:rest[0][1]].astype(np.int64))[None] if rest else None
        n_pred = np.array([b - a - 1 for a, b in full + rest], dtype=np.int64)
        n_bytes = np.array([int(byte_lengths[tokens[a + 1:b]].sum()) for a, b in full + rest], dtype=np.int64)
        return cls(name, ids, tail, n_pred, n_bytes)

    @classmethod
    def from_task(cls, task, name: str = "task") -> "EvalWindows":
        """A task's examples as windows: context + correct answer, padded; only the answer's tokens count."""
        ids, mask = task.answer_windows(pad=0)
        return cls(name, torch.from_numpy(ids), None, (mask.sum(1)).astype(np.int64), task.answer_bytes.copy(),
                   torch.from_numpy(mask))

    def __len__(self) -> int:
        return len(self.n_pred)

    def shuffled(self, seed: int = 0) -> "EvalWindows":
        """The full windows in a fixed random order (the ragged tail stays last): any prefix of it is a
        random sample of the set, which screening's interval assumes; a file's first pages are not."""
        n_full = self.full.size(0)
        keep = shuffle_order(n_full, len(self), seed)
        order = keep[:n_full]
        return EvalWindows(self.name, self.full[torch.from_numpy(order)], self.tail, self.n_pred[keep],
                           self.n_bytes[keep], None if self.mask is None else self.mask[torch.from_numpy(order)])

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None):
        """(first window index, [b, T] ids) over windows start..stop, full ones batch_size at a time."""
        stop = len(self) if stop is None else min(stop, len(self))
        n_full = self.full.size(0)
        for i in range(start, min(stop, n_full), batch_size):
            yield i, self.full[i:min(i + batch_size, stop, n_full)]
        if self.tail is not None and start <= n_full < stop:
            yield n_full, self.tail


def shuffle_order(n_full: int, n_windows: int, seed: int = 0) -> np.ndarray:
    """Window indices in screening's order: the full windows permuted by `seed`, the tail last."""
    return np.concatenate([np.random.default_rng(seed).permutation(n_full), np.arange(n_full, n_windows)])


def eval_windows(study, name: str, label: str | None = None) -> EvalWindows:
    """One eval set of a loaded study as windows: a text set's stream cut into seq_len windows, a task's
    examples (context + correct answer, only the answer's tokens counted)."""
    if name in study.tasks:
        return EvalWindows.from_task(study.tasks[name], label or f"task {name}")
    return EvalWindows.build(study.eval_tokens[name], study.byte_len, study.cfg.eval.seq_len,
                             name=label or f"eval set {name}")


def study_windows(study) -> dict[str, EvalWindows]:
    """Every eval set of a loaded study (ablate.scoring.score.Study), cut into windows once."""
    return {ev["domain"]: eval_windows(study, ev["domain"]) for ev in study.evals}


def study_stack(study) -> tuple["ModelStack", dict[str, EvalWindows], int]:
    """What a batched evaluation of a loaded study needs, built once: the stack (slots by
    `eval.models_per_pass` or choose_slots), every eval set's windows, and the non-embedding
    parameter count the rows' FLOPs use."""
    cfg = study.cfg
    model = model_from_config(seed_config(study.pool, study.seed["model_id"]), study.device)
    stack = ModelStack(model, choose_slots(model, cfg.eval.batch_size, cfg.eval.seq_len, cfg.eval.models_per_pass))
    return stack, study_windows(study), count_params(model)[1]


def window_stats(windows: EvalWindows, nll: np.ndarray, eval_s: float, stop: int | None = None) -> dict:
    """evaluate_tokens' dict from one model's per-window NLL over windows 0..stop (all by default)."""
    stop = len(windows) if stop is None else stop
    return nll_stats(float(nll[:stop].sum()), int(windows.n_pred[:stop].sum()), int(windows.n_bytes[:stop].sum()),
                     eval_s, nll[:stop])


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        return info.get("MemAvailable", info.get("MemFree", 0))
    except OSError:
        return 2 << 30  # not Linux: assume 2 GB are free


def choose_slots(model: torch.nn.Module, batch_size: int, seq_len: int, requested: int | None = None) -> int:
    """How many models per pass: `requested`, or enough that one pass carries ~PASS_MACS multiply-adds
    (stacking more only grows the working set past the cache), within a quarter of the free memory
    (each slot: its weights plus its activations), at most MAX_SLOTS."""
    if requested:
        return requested
    device = next(model.parameters()).device
    cfg = model.config
    width = max(getattr(cfg, "hidden_size", 0) or 0, getattr(cfg, "intermediate_size", 0) or 0, 1)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    activations = 4 * batch_size * seq_len * width * 8  # a handful of [B, T, width] float32 tensors alive at once
    by_memory = free_memory_bytes(device) // 4 // max(1, weights + activations)
    n_params = sum(p.numel() for p in model.parameters())
    by_work = PASS_MACS // max(1, batch_size * seq_len * n_params)
    return int(max(1, min(MAX_SLOTS, by_memory, 1 << max(0, int(by_work).bit_length() - 1))))


class ModelStack:
    """M copies of one architecture's weights, stacked, evaluated in one vmapped pass."""

    def __init__(self, model: torch.nn.Module, slots: int):
        self.model = model.eval()
        self.slots = slots
        params = dict(model.named_parameters(remove_duplicate=False))  # tied names share one tensor
        self.names = list(params)
        owner: dict[int, str] = {}
        for name, p in params.items():
            owner.setdefault(p.data_ptr(), name)
        self.owner = {name: owner[p.data_ptr()] for name, p in params.items()}
        shapes = {n: params[n].shape for n in set(self.owner.values())}
        sizes = {n: math.prod(s) for n, s in shapes.items()}
        dtype = next(iter(params.values())).dtype
        device = next(iter(params.values())).device
        self.flat = torch.empty(slots, sum(sizes.values()), dtype=dtype, device=device)
        self.views: dict[str, torch.Tensor] = {}
        at = 0
        for n in sorted(shapes):
            self.views[n] = self.flat[:, at:at + sizes[n]].view(slots, *shapes[n])
            at += sizes[n]
        self._head = self._find_head()
        self.fused: bool | None = None  # decided by the probe at the first batch

    # -- loading ----------------------------------------------------------------------------------
    def load(self, slot: int, running) -> None:
        """The running sum's mean into `slot`: per element the same copy-then-divide as
        RunningSum.load_into, so the slot holds exactly the floats a single model would."""
        k = len(running.members)
        if k == 0:
            raise ValueError("empty mixture")
        check_fit(self.model, set(running.sum), "running average")
        with torch.no_grad():
            for name, t in running.sum.items():
                if name not in self.owner:
                    continue  # a buffer, not a parameter: the skeleton's own (checked by check_fit)
                dtype = running.dtypes.get(name)
                dst = self.views[self.owner[name]][slot]
                if dtype == torch.float32:
                    dst.copy_(t).div_(k)
                else:
                    dst.copy_(t if dtype is None else (t / k).to(dtype))

    def load_state(self, slot: int, state: dict[str, torch.Tensor]) -> None:
        """A state dict (a member, a weighted merge) into `slot`."""
        check_fit(self.model, set(state), "stacked weights")
        with torch.no_grad():
            for name, t in state.items():
                if name in self.owner:
                    self.views[self.owner[name]][slot].copy_(t)

    # -- evaluating -------------------------------------------------------------------------------
    def _find_head(self):
        """(body module, its parameter prefix, head parameter names) when logits = head(body(x)); else None."""
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        body = getattr(self.model, getattr(self.model, "base_model_prefix", ""), None)
        if head is None or body is None or not isinstance(head, torch.nn.Linear):
            return None
        names = {id(m): n for n, m in self.model.named_modules(remove_duplicate=False)}
        return body, names[id(body)] + ".", names[id(head)] + ".weight", \
            (names[id(head)] + ".bias" if head.bias is not None else None)

    def _params(self, count: int) -> dict[str, torch.Tensor]:
        """Each tensor once, under its first name: functional_call re-ties the twins (tie_weights)."""
        return {n: v[:count] for n, v in self.views.items()}

    def window_nll(self, windows: EvalWindows, batch_size: int, count: int | None = None,
                   start: int = 0, stop: int | None = None, precision: str = "fp32") -> np.ndarray:
        """[count, windows start..stop] NLL sums (float64) of the first `count` slots; `precision`
        as evaluate_tokens takes it (bf16 autocast or exact fp32 on CUDA; the CPU is fp32)."""
        count = count or self.slots
        stop = len(windows) if stop is None else min(stop, len(windows))
        out = np.zeros((count, max(0, stop - start)), dtype=np.float64)
        params = self._params(count)
        with torch.inference_mode(), warnings.catch_warnings(), precision_context(self.flat.device, precision):
            # sdpa has no vmap batching rule on CPU: torch loops over the slots for attention alone
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            for first, ids in windows.batches(batch_size, start, stop):
                ids = ids.to(self.flat.device)
                if self.fused is None:
                    self.fused = self._probe(params, ids)
                mask = None if windows.mask is None else windows.mask[first:first + ids.size(0)].to(ids.device)
                nll = self._fused(params, ids, mask) if self.fused else self._plain(params, ids, mask)
                refresh_threads()
                out[:, first - start:first - start + ids.size(0)] = nll.double().cpu().numpy()
        return out

    def _fused(self, params: dict, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[M, b] window NLL: the body under vmap, then head + log-softmax in token chunks."""
        body, prefix, w_name, b_name = self._head
        body_params = {n[len(prefix):]: t for n, t in params.items() if n.startswith(prefix)}
        hidden = vmap(lambda p: functional_call(body, p, (ids,), {"use_cache": False}).last_hidden_state)(
            body_params)[:, :, :-1]  # [M, b, T-1, d]: the positions that predict a token
        m, b, t, d = hidden.shape
        h = hidden.reshape(m, b * t, d)
        target = ids[:, 1:].reshape(-1)
        weight, bias = params[self.owner[w_name]], params[self.owner[b_name]] if b_name else None
        step = max(1, CHUNK_LOGITS // (m * weight.size(1)))
        nll = torch.empty(m, b * t, dtype=torch.float32, device=h.device)
        for a in range(0, b * t, step):
            logits = torch.bmm(h[:, a:a + step], weight.transpose(1, 2))  # [M, chunk, V]
            if bias is not None:
                logits += bias[:, None, :]
            n = logits.size(1)
            # the log-softmax on a chunk that stays in cache: ~4x faster per token than over the whole
            # [b*T, V] logits (measured, 1 thread); the chunk is already CHUNK_LOGITS floats
            nll[:, a:a + n] = token_nll(logits.reshape(m * n, -1), target[a:a + n].repeat(m)).view(m, n)
        nll = nll.view(m, b, t)
        return window_sums(nll if mask is None else nll * mask, wide=False)  # float32 window sums: the stored recipe

    def _plain(self, params: dict, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[M, b] window NLL from the model's own logits (any head), under vmap."""
        def one(p):
            logits = functional_call(self.model, p, (ids,), {"use_cache": False}).logits[:, :-1]
            tok = token_nll(logits, ids[:, 1:])
            return window_sums(tok if mask is None else tok * mask, wide=False)

        return vmap(one)(params)

    def _probe(self, params: dict, ids: torch.Tensor) -> bool:
        """Does head(body(x)) give the model's own loss here? One window of slot 0, both ways."""
        if self._head is None:
            return False
        one = {n: t[:1] for n, t in params.items()}
        try:
            fused = self._fused(one, ids[:1])
        except Exception:  # an architecture whose body vmap or our call convention cannot run
            return False
        plain = self._plain(one, ids[:1])
        return bool(torch.allclose(fused, plain, rtol=1e-5, atol=0.0))
