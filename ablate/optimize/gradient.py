"""Exact gradients of eval losses with respect to mixture weights, through the merge.

How to run (from Python; `ablate optimize` drives it):
    space = MemberSpace.of_members(pool, member_ids, model)   # the members as rows of one [n, P] matrix
    space.load([0.5, 0.25, 0.25])                    # theta(w) = sum_i w_i theta_i, written into the model
    nll, n_pred = set_nll(model, windows, batch_size, grad=True)   # one eval set's fit windows, backward done
    slopes = space.project()                         # dL/dw_i = <grad_theta L, theta_i> for every member

The merged model's parameters are linear in the weights, so one backward pass gives the derivative of
an eval loss with respect to every unit's weight (DESIGN.md "Mixture weights"). Members are float32
safetensors whose data blocks are mapped, not read: each is a flat view of its file, in the file's own
tensor order. With room in memory (`keep_in_memory`, by default when the stack takes under a quarter of
free memory) they are copied into one [n, P] matrix and both products are one matmul; otherwise they
stay mapped and every step streams them from the page cache (n axpys + n dots per step).
"""

from __future__ import annotations

import numpy as np
import torch

from ablate.core.errors import AblateError
from ablate.models.model import check_fit
from ablate.scoring.batched import free_memory_bytes
from ablate.scoring.merge import _f32_block, _map_f32, _read_member, check_compatible
from ablate.store.pool import Pool


class MemberSpace:
    """theta(w) = sum_i w_i theta_i over the members' tensors, and <g, theta_i> for every member."""

    @classmethod
    def of_members(cls, pool: Pool, member_ids: list[str], model: torch.nn.Module, *, full_hash: bool = False,
                   keep_in_memory: bool | None = None) -> "MemberSpace":
        """The pool's members (same seed, tensor names, shapes and dtypes: checked first)."""
        check_compatible(pool, member_ids, full_hash)
        return cls([pool.weights_path(m) for m in member_ids], model, keep_in_memory=keep_in_memory)

    def __init__(self, paths: list, model: torch.nn.Module, *, keep_in_memory: bool | None = None):
        rows, self.spans = zip(*(_flat(p) for p in paths))
        if any(s != self.spans[0] for s in self.spans):
            raise AblateError("members store their tensors in different orders; cannot stack them")
        self.spans = self.spans[0]
        check_fit(model, {name for _, _, name in self.spans}, "member weights")
        self.params = model.state_dict(keep_vars=True)  # the Parameters themselves: their .grad is read
        self.device = next(model.parameters()).device
        size = len(rows) * rows[0].numel() * 4
        if keep_in_memory is None:
            keep_in_memory = size < free_memory_bytes(self.device) // 4
        self.in_memory = keep_in_memory
        self.rows = torch.stack(rows).to(self.device) if keep_in_memory else list(rows)
        self.n = len(rows)

    def load(self, weights) -> None:
        """Write theta(w) into the model's tensors (any w: the gradient check leaves the simplex)."""
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        with torch.no_grad():
            if self.in_memory:
                theta = w.to(self.device) @ self.rows
            else:
                theta = torch.zeros(self.rows[0].numel(), dtype=torch.float32)
                for wi, row in zip(w.tolist(), self.rows):
                    theta.add_(row, alpha=wi)
                theta = theta.to(self.device)
            for begin, end, name in self.spans:
                self.params[name].copy_(theta[begin:end].view_as(self.params[name]))

    def project(self) -> np.ndarray:
        """<grad_theta, theta_i> for every member from the model's accumulated .grad (float64)."""
        g = torch.zeros(self.spans[-1][1], dtype=torch.float32, device=self.device)
        for begin, end, name in self.spans:
            grad = self.params[name].grad
            if grad is not None:
                g[begin:end] = grad.reshape(-1)
        if self.in_memory:
            return (self.rows @ g).double().cpu().numpy()
        g = g.cpu()
        return np.array([float(torch.dot(row, g)) for row in self.rows])


def _flat(path) -> tuple[torch.Tensor, tuple]:
    """A member as one flat float32 vector and its spans [(begin, end, name)] in file order."""
    block = _f32_block(path)
    if block is not None:  # every ablate member: a mapped view, no copy
        start, nbytes, header = block
        spans = tuple(sorted((v["data_offsets"][0] // 4, v["data_offsets"][1] // 4, k) for k, v in header.items()))
        return _map_f32(path, start, nbytes), spans
    parts, spans, at = [], [], 0  # other files (bf16, ...): read and widened once
    for name, tensor in _read_member(path):
        if not tensor.is_floating_point():
            continue
        parts.append(tensor.float().reshape(-1))
        spans.append((at, at + tensor.numel(), name))
        at += tensor.numel()
    return torch.cat(parts), tuple(spans)


def set_nll(model: torch.nn.Module, windows: torch.Tensor, batch_size: int, grad: bool) -> tuple[float, int]:
    """Sum of NLL over full windows [m, T] and the tokens predicted; with `grad`, the backward of the
    mean NLL (log perplexity) is accumulated into the model's .grad, in eval mode (no dropout)."""
    model.eval()
    n_pred = windows.size(0) * (windows.size(1) - 1)
    total = 0.0
    device = next(model.parameters()).device
    for i in range(0, windows.size(0), batch_size):
        ids = windows[i:i + batch_size].to(device)
        with torch.set_grad_enabled(grad):
            logits = model(input_ids=ids).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                    ids[:, 1:].reshape(-1), reduction="sum")
            if grad:
                (nll / n_pred).backward()
        total += float(nll.detach())
    return total, n_pred


def window_nll(model: torch.nn.Module, windows: torch.Tensor, batch_size: int) -> np.ndarray:
    """Per-window NLL sums (float64) without gradients: the held part's paired comparisons."""
    model.eval()
    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, windows.size(0), batch_size):
            ids = windows[i:i + batch_size].to(device)
            logits = model(input_ids=ids).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                    ids[:, 1:].reshape(-1), reduction="none")
            out.append(nll.view(ids.size(0), -1).sum(1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
