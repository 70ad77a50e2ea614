"""A trained model from its files: the network the plans build, its weights (weights-only checkpoints), the
channels-last wrapper and the volume predictor that sliding-window inference calls."""

from __future__ import annotations
from pathlib import Path
from voxflow.nn.networks import SliceWise
from voxflow.nn.networks import build_network
import json
from voxflow.nn.checkpoints import load_checkpoint
from voxflow.planning.plans import Plans
from collections.abc import Mapping
import torch


def network_from_plans(plans: Plans | Mapping, deep_supervision: bool = False) -> torch.nn.Module:
    p = Plans.of(plans)
    return build_network(p.dim, p.n_inputs, p.n_outputs, p.patch_size, n_stages=p.n_stages,
                         base_features=p.base_features, deep_supervision=deep_supervision,
                         context_slices=p.context_slices, spacing=p.network_spacing, stem=p.stem)


def memory_format(plans: Plans | Mapping) -> torch.memory_format:
    """Channels-last: oneDNN's fast path on CPU (2x faster conv backward here) and tensor cores on GPU."""
    return torch.channels_last_3d if Plans.of(plans).is_3d else torch.channels_last


class _ChannelsLast(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, fmt: torch.memory_format):
        super().__init__()
        self.net, self.fmt = net, fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.fmt))


def volume_predictor(net: torch.nn.Module, plans: Plans | Mapping) -> torch.nn.Module:
    """A module mapping 3D patches (B,C,Z,Y,X) to logits, whatever the network's dim."""
    p = Plans.of(plans)
    fast = _ChannelsLast(net, memory_format(p))
    return fast if p.is_3d else SliceWise(fast, p.context_slices)


def load_trained(model_path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Load a fold's final model (weights_only=True: a checkpoint cannot run code) and its plans, the dict
    plans.json held (`Plans.from_dict` reads it)."""
    state = load_checkpoint(Path(model_path), device)
    raw = json.loads(state["plans"])
    plans = Plans.from_dict(raw, source=str(model_path))
    net = network_from_plans(plans, deep_supervision=bool(state.get("deep_supervision", False)))
    net = net.to(device, memory_format=memory_format(plans))  # type: ignore[call-overload]
    net.load_state_dict(state["model"])
    net.eval()
    return net, raw
