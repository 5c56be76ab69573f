"""SGD, SGDW and Adam for the training loops: torch.optim's update, without torch.optim's classes.

Each ``step`` calls the functional ``torch.optim.sgd.sgd`` / ``torch.optim.adam.adam``, the code that
``torch.optim.SGD`` and ``torch.optim.Adam`` call, with the same per-parameter state, the same foreach/fused
choice and the same state-dict format: the trained weights are bit-identical (``tests/train/test_optim.py``) and
a resumable state file holds the same entries.

Why not the classes: constructing any ``torch.optim.Optimizer`` (``add_param_group``), and every ``step``,
``zero_grad`` and ``state_dict`` of one, first imports ``torch._dynamo`` (for ``torch.compile``), about 1 s of
CPU. Every training stage paid it at start-up: about 25 s of the embedded ``dvc repro``. Nothing here is compiled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam as adam_update
from torch.optim.sgd import sgd as sgd_update


def _step_dtype(fused_or_capturable: bool) -> torch.dtype:
    """torch.optim's dtype for Adam's ``step`` counter."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 and not fused_or_capturable else torch.float32


class _Optimizer:
    """Param groups, per-parameter state, ``zero_grad`` and torch.optim's ``state_dict`` format."""

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], defaults: dict[str, Any]):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = [{**defaults, **group, "params": list(group["params"])} for group in groups]
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def state_dict(self) -> dict[str, Any]:
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)):
            raise ValueError("the saved optimizer state does not match this model's parameters")
        by_index = {i: p for s, g in zip(saved, self.param_groups) for i, p in zip(s["params"], g["params"])}
        self.state = {by_index[int(i)]: {k: self._placed(k, v, by_index[int(i)]) for k, v in s.items()}
                      for i, s in state_dict["state"].items()}
        self.param_groups = [{**g, **{k: v for k, v in s.items() if k != "params"}, "params": g["params"]}
                             for s, g in zip(saved, self.param_groups)]

    @staticmethod
    def _placed(key: str, value: Any, param: torch.Tensor) -> Any:
        """As torch.optim loads state: onto the parameter's device and, except ``step``, its dtype."""
        if not isinstance(value, torch.Tensor) or key == "step":
            return value
        return value.to(device=param.device, dtype=param.dtype if value.is_floating_point() else value.dtype)


class SGD(_Optimizer):
    """``torch.optim.SGD``: momentum with dampening 0, optional Nesterov, L2 ``weight_decay`` in the gradient."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 foreach: bool | None = None, fused: bool | None = None):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": 0.0, "weight_decay": weight_decay,
                                  "nesterov": nesterov, "maximize": False, "foreach": foreach,
                                  "differentiable": False, "fused": fused})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            buffers = [self.state.get(p, {}).get("momentum_buffer") for p in params]
            sgd_update(params, [p.grad for p in params], buffers, foreach=group["foreach"], fused=group["fused"],
                       weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
                       dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"])
            if group["momentum"] != 0:
                for p, buffer in zip(params, buffers):
                    self.state.setdefault(p, {})["momentum_buffer"] = buffer


class SGDW(SGD):
    """SGD with decoupled weight decay (Loshchilov & Hutter; tfa.optimizers.SGDW as the GaFi code uses it): each
    step first shrinks every weight that has a gradient by the factor ``1 - decay`` (not scaled by the lr, so the
    decay stays constant when the schedule lowers the lr), then takes the momentum step on the gradient alone."""

    def __init__(self, params, decay: float, **kwargs):
        super().__init__(params, weight_decay=0.0, **kwargs)
        self.decay = decay

    @torch.no_grad()
    def step(self) -> None:
        decayed = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if decayed and self.decay:
            torch._foreach_mul_(decayed, 1.0 - self.decay)
        super().step()


class Adam(_Optimizer):
    """``torch.optim.Adam`` (no amsgrad; L2 ``weight_decay`` in the gradient)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, foreach: bool | None = None, fused: bool | None = None):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": False, "maximize": False, "foreach": foreach, "capturable": False,
                                  "differentiable": False, "fused": fused, "decoupled_weight_decay": False})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p not in self.state:
                    on_device = group["fused"] or group["capturable"]
                    self.state[p] = {
                        # torch.optim keeps ``step`` on the CPU unless fused or capturable
                        "step": torch.zeros((), dtype=_step_dtype(on_device), device=p.device if on_device else "cpu"),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            states = [self.state[p] for p in params]
            beta1, beta2 = group["betas"]
            adam_update(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                        [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
                        foreach=group["foreach"], capturable=group["capturable"], fused=group["fused"],
                        amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                        eps=group["eps"], maximize=group["maximize"])
