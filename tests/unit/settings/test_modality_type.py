"""Which modality is CT, defined once (voxflow.settings.model.is_ct_modality): ChainSettings.is_ct and the steps,
which get input.modality_types in their config, ask the same function."""

from __future__ import annotations

from voxflow.settings.model import ChainSettings, is_ct_modality, modality_type


def test_an_untyped_modality_is_mr():
    assert modality_type({"ct": "ct"}, "t1") == "mr" and modality_type(None, "t1") == "mr"
    assert is_ct_modality({"ct": "ct", "t1": "mr"}, "ct") and not is_ct_modality({"ct": "ct", "t1": "mr"}, "t1")
    assert not is_ct_modality({}, "ct") and not is_ct_modality(None, "ct")


def test_chain_settings_ask_the_same_function():
    pre = {"normalize": {"method": "zscore"}, "space": "native", "skullstrip": {"method": "none"}}
    cs = ChainSettings.from_sections({"modalities": ["ct", "pet"], "modality_types": {"ct": "ct"}}, pre, False)
    assert dict(cs.modality_types) == {"ct": "ct", "pet": "mr"}
    assert [cs.is_ct(m) for m in cs.modalities] == [is_ct_modality(cs.modality_types, m) for m in cs.modalities] \
        == [True, False]
