"""The demo rule's step: one synthetic subject of the built-in demo cohort (voxflow.demo.mri)."""

from __future__ import annotations


def demo(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.demo.mri import generate_subject

    index = int(cfg["index"])
    return generate_subject(subject, index, cfg["raw_dir"], cfg["truth_dir"], modalities=cfg["modalities"],
                            seed=cfg["seed"], spacing_scale=cfg["spacing_scale"], fault=cfg.get("fault"))
