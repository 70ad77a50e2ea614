"""MRI artefacts of the augmenter: each does what it says, on the image only, reproducibly, and
switching them off leaves the augmenter exactly as it was."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import math

import pytest
import torch

torch.set_num_threads(1)

from voxflow.training import augment_mri  # noqa: E402
from voxflow.training.augment import AugmentConfig, _intensity, _rotation, _spatial, augment_batch  # noqa: E402

OLD = ("p_rotation", "p_scaling", "p_elastic", "p_mirror", "p_gamma", "p_noise", "p_brightness", "p_contrast")
NEW = ("p_inverted_gamma", "p_bias_field", "p_motion", "p_ghosting", "p_spike", "p_low_res")
KSPACE = ("p_bias_field", "p_motion", "p_ghosting", "p_spike")  # these restore each channel's mean and std
SHAPES = {"3d": (2, 2, 20, 24, 28), "2d": (2, 3, 48, 40)}


def only(key=None, **extra):
    """Everything off but ``key`` (p 1, every channel)."""
    d = {k: 0.0 for k in OLD + NEW}
    if key:
        d[key] = 1.0
    return AugmentConfig.from_dict({**d, "p_per_channel": 1.0, **extra})


def gen(seed):
    return torch.Generator().manual_seed(seed)


def phantom(shape, seed=0):
    """Z-scored per channel: nested ellipsoids of different brightness plus a little noise."""
    b, c, *spatial = shape
    grids = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in spatial], indexing="ij")
    r2 = sum((g / (0.8 - 0.1 * i)) ** 2 for i, g in enumerate(grids))
    img = (r2 < 1).float() * 2 + (r2 < 0.3).float() + 0.2 * torch.randn(shape, generator=gen(seed))
    flat = img.flatten(2)
    per = (b, c) + (1,) * len(spatial)
    return (img - flat.mean(2).reshape(per)) / flat.std(2).reshape(per)


def labels(shape):
    return (torch.rand((shape[0], 1, *shape[2:]), generator=gen(9)) > 0.6).to(torch.uint8)


def stats(x):
    flat = x.flatten(2)
    return flat.mean(2), flat.std(2)


@pytest.mark.parametrize("dim", SHAPES)
@pytest.mark.parametrize("key", NEW)
def test_artefact_shape_label_determinism_and_statistics(key, dim):
    x, lab = phantom(SHAPES[dim]), labels(SHAPES[dim])
    before = (x.clone(), lab.clone())
    cfg = only(key)
    y, ylab = augment_batch(x, lab, cfg, gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert torch.equal(ylab, lab)
    assert torch.equal(x, before[0]) and torch.equal(lab, before[1])  # inputs untouched
    # it did something, to every channel (p_per_channel 1)
    assert ((y - x).abs().flatten(2).mean(2) > 1e-2).all(), key
    # same seed, same output, bit for bit; another seed, another output
    assert torch.equal(augment_batch(x, lab, cfg, gen(1))[0], y)
    assert not torch.allclose(augment_batch(x, lab, cfg, gen(2))[0], y)
    (m0, s0), (m1, s1) = stats(x), stats(y)
    if key in KSPACE:  # mean and std restored per channel
        assert torch.allclose(m1, m0, atol=1e-4) and torch.allclose(s1, s0, rtol=1e-4)
    elif key == "p_low_res":  # averaging keeps the mean, smooths a little
        assert torch.allclose(m1, m0, atol=0.05) and ((s1 > 0.7 * s0) & (s1 < 1.01 * s0)).all()
    else:  # inverted gamma maps each channel's [min, max] onto itself
        lo, hi = x.flatten(2).amin(2), x.flatten(2).amax(2)
        assert torch.allclose(y.flatten(2).amin(2), lo, atol=1e-5)
        assert torch.allclose(y.flatten(2).amax(2), hi, atol=1e-5)


@pytest.mark.parametrize("key", NEW)
def test_artefacts_do_not_depend_on_the_intensity_scale(key):
    """Strengths are relative (to each channel's std, minimum, range), so a*x + b gives a*out + b."""
    x, lab = phantom(SHAPES["3d"]), labels(SHAPES["3d"])
    y, _ = augment_batch(x, lab, only(key), gen(4))
    y2, _ = augment_batch(5 * x + 3, lab, only(key), gen(4))
    assert torch.allclose(y2, 5 * y + 3, atol=1e-3)


def test_float64_input_keeps_dtype():
    x = phantom(SHAPES["2d"]).double()
    cfg = AugmentConfig.from_dict({k: 1.0 for k in NEW})
    y, _ = augment_batch(x, labels(SHAPES["2d"]), cfg, gen(0))
    assert y.dtype == torch.float64 and torch.isfinite(y).all()


def test_new_probabilities_zero_leave_the_augmenter_as_it_was():
    """Golden values from the augmenter before the artefacts existed (all old transforms on),
    and no random number drawn for the new ones: the generator ends where the old steps leave it."""
    golden = {
        (2, 2, 24, 20, 16): ([-9331.05859, -59.91958], [11897.6543, 13785.50293], [2120, 1583],
                             [0.449414, -0.615238, -0.230462, -0.418156, -0.340299, -0.900968]),
        (2, 3, 32, 28): ([-642.52051, -779.72137], [2028.98254, 2049.56567], [269, 242],
                         [-0.279807, -1.149676, 0.480536, -0.688281, -2.077817, -0.596099]),
    }
    cfg = AugmentConfig.from_dict({**{k: 1.0 for k in OLD}, **{k: 0.0 for k in NEW}})
    for shape, (sums, squares, label_sums, values) in golden.items():
        g = gen(123)
        img = torch.randn(shape, generator=g)
        lab = (torch.rand((shape[0], 1, *shape[2:]), generator=g) > 0.7).to(torch.uint8)
        g = gen(11)
        ai, al = augment_batch(img, lab, cfg, g)
        assert torch.allclose(ai.flatten(1).sum(1), torch.tensor(sums), rtol=1e-4, atol=1e-2)
        assert torch.allclose((ai**2).flatten(1).sum(1), torch.tensor(squares), rtol=1e-4)
        assert al.flatten(1).sum(1).tolist() == label_sums
        assert torch.allclose(ai.flatten()[::997][:6], torch.tensor(values), atol=1e-4)
        ref = gen(11)
        ri, _ = _spatial(img, lab, cfg, ref)
        ri = _intensity(ri, cfg, ref)
        assert torch.equal(ri, ai)
        assert torch.equal(g.get_state(), ref.get_state())


@pytest.mark.parametrize("dim", SHAPES)
def test_artefacts_never_touch_the_label_and_come_after_the_old_draws(dim):
    """Default config: the artefacts draw after everything else, so switching them off gives
    the same label and the image as it was before them."""
    x, lab = phantom(SHAPES[dim]), labels(SHAPES[dim])
    for seed in range(6):
        full = augment_batch(x, lab, AugmentConfig(), gen(seed))
        plain = augment_batch(x, lab, AugmentConfig.from_dict({k: 0.0 for k in NEW}), gen(seed))
        assert torch.equal(full[1], plain[1])
        assert torch.isfinite(full[0]).all()


def test_bias_field_is_a_smooth_positive_polynomial_field_per_channel():
    shape = (1, 2, 16, 20, 24)
    x = torch.rand(shape, generator=gen(3)) * 2 + 0.5
    x.view(2, -1)[:, 0] = -1.0  # each channel's minimum, the "zero signal" the field multiplies above
    y, _ = augment_batch(x, labels(shape), only("p_bias_field"), gen(4))
    # y = a * ((x - lo) * field + lo) + b, so (y - y[at min]) / (x - lo) = a * field
    ratio = (y - y.flatten(2)[..., :1].reshape(1, 2, 1, 1, 1)) / (x + 1)
    ratio = ratio.flatten(2)[:, :, 1:].double()
    assert (ratio > 0).all()
    axes = [(torch.arange(n) - (n - 1) / 2) / ((n - 1) / 2) for n in shape[2:]]
    z, yy, xx = (g.flatten()[1:].double() for g in torch.meshgrid(*axes, indexing="ij"))
    basis = torch.stack([z**i * yy**j * xx**k for i, j, k in augment_mri.bias_terms(3, 3).tolist()], 1)
    fits = []
    for c in range(2):
        log_r = ratio[0, c].log()
        coef = torch.linalg.lstsq(basis, log_r[:, None]).solution
        assert (basis @ coef - log_r[:, None]).abs().max() < 1e-3  # exactly a cubic polynomial in the log
        assert log_r.max() - log_r.min() > 0.2  # and not a flat one
        fits.append(coef[1:, 0])  # the constant is the unknown scale a
    assert not torch.allclose(fits[0], fits[1], atol=0.05)  # a field per channel


@pytest.mark.parametrize("shape", [(1, 1, 32, 32, 32), (1, 1, 48, 40)])
def test_motion_keeps_the_kspace_centre_and_changes_the_rest(shape):
    x = torch.randn(shape, generator=gen(5))
    y, _ = augment_batch(x, labels(shape), only("p_motion"), gen(6))
    d = len(shape) - 2
    dims = tuple(range(2, 2 + d))
    fx, fy = torch.fft.fftn(x.double(), dim=dims), torch.fft.fftn(y.double(), dim=dims)
    freqs = torch.meshgrid(*[torch.fft.fftfreq(n, 1 / n) for n in shape[2:]], indexing="ij")
    centre = torch.stack([f.abs() <= 1 for f in freqs]).all(0)
    centre[(0,) * d] = False  # DC: the restored mean
    cx, cy = fx[0, 0][centre], fy[0, 0][centre]
    scale = (cy * cx.conj()).real.sum() / (cx.abs() ** 2).sum()  # the std restoration
    assert 0.5 < scale < 2
    assert ((cy - scale * cx).abs() / (scale * cx).abs()).max() < 1e-3  # the unmoved image's k-space centre
    rest = ~centre
    rest[(0,) * d] = False
    assert (fy[0, 0][rest] - scale * fx[0, 0][rest]).norm() > 0.2 * (scale * fx[0, 0][rest]).norm()


@pytest.mark.parametrize("shape", [(2, 3, 20, 24, 28), (2, 3, 36, 30)])
def test_motion_without_movement_is_identity(shape):
    """The k-space segments of identical copies put together give the image back."""
    x = phantom(shape)
    y, _ = augment_batch(x, labels(shape), only("p_motion", motion_degrees=0, motion_translation=0), gen(0))
    assert torch.allclose(y, x, atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 2, 12, 16, 20), (3, 2, 24, 18)])
def test_motion_matches_torchio_kspace_assembly(shape):
    """Against TorchIO's recipe written out: full complex FFTs, fft-shifted segments along the axis, the
    unmoved image's spectrum swapped into the centre segment, real part of the inverse."""
    x = phantom(shape)
    n, d, t = shape[0], len(shape) - 2, 2
    rotation = _rotation(torch.rand(n * t, 3 if d == 3 else 1, generator=gen(1)) - 0.5).reshape(n, t, d, d)
    shift = (torch.rand(n, t, d, generator=gen(2)) - 0.5) * 8
    times = torch.tensor([[0.3, 0.6], [0.45, 0.7], [0.1, 0.2]])
    axis = torch.tensor([0, d - 1, 1])
    y = augment_mri.motion(x, axis, rotation, shift, times, "border")
    dims = tuple(range(1, 1 + d))
    for i in range(n):
        grid = augment_mri._rigid_grid(rotation[i], shift[i], tuple(shape[2:]), x.device)
        copies = [x[i]] + list(torch.nn.functional.grid_sample(x[i:i + 1].expand(t, -1, *shape[2:]), grid,
                                                               align_corners=False, padding_mode="border"))
        spectra = [torch.fft.fftshift(torch.fft.fftn(c.double(), dim=dims), dim=dims) for c in copies]
        size, a = shape[2 + int(axis[i])], 1 + int(axis[i])
        ends = (size * times[i]).long().tolist() + [size]
        centre = next(j for j, e in enumerate(ends) if e > size // 2)
        spectra[0], spectra[centre] = spectra[centre], spectra[0]
        result, start = torch.empty_like(spectra[0]), 0
        for spec, end in zip(spectra, ends):
            result.narrow(a, start, end - start).copy_(spec.narrow(a, start, end - start))
            start = end
        ref = torch.fft.ifftn(torch.fft.ifftshift(result, dim=dims), dim=dims).real.float()
        ref = augment_mri._match_stats(ref[None], x[i:i + 1])[0]
        assert torch.allclose(y[i], ref, atol=1e-4), (i, (y[i] - ref).abs().max())


@pytest.mark.parametrize("shape", [(12, 16, 20), (24, 18)])
def test_rigid_grid_is_the_affine_grid_about_the_patch_centre(shape):
    d = len(shape)
    rotation = _rotation(torch.rand(3, 3 if d == 3 else 1, generator=gen(1)) - 0.5)
    shift = (torch.rand(3, d, generator=gen(2)) - 0.5) * 8
    half = torch.tensor(shape, dtype=torch.float32) / 2
    lin = rotation * half[None, None, :] / half[None, :, None]  # voxel units about the centre, normalised
    theta = torch.cat([lin.flip(1).flip(2), (shift / half).flip(1)[..., None]], 2)  # grid order (x, y[, z])
    ref = torch.nn.functional.affine_grid(theta, [3, 1, *shape], align_corners=False)
    assert torch.allclose(augment_mri._rigid_grid(rotation, shift, shape, torch.device("cpu")), ref, atol=1e-5)
    # and in voxels: the patch centre goes to centre + shift
    centre = torch.tensor([(s - 1) / 2 for s in shape])
    grid = augment_mri._rigid_grid(rotation, shift, shape, torch.device("cpu"))
    sampled = grid.mean(tuple(range(1, d + 1))).flip(1) * half + half - 0.5  # grid is linear: mean = at centre
    assert torch.allclose(sampled, centre + shift, atol=1e-4)


def test_motion_owners_partition_kspace_with_the_original_at_the_centre():
    times = torch.tensor([[0.3, 0.7], [0.1, 0.2], [0.8, 0.9]])
    owners = augment_mri.motion_owners(times, 20)
    shifted = torch.fft.fftshift(owners, dim=1)  # back to -10..9 order
    assert shifted[:, 10].tolist() == [0, 0, 0]  # DC from the unmoved image
    assert shifted[0].tolist() == [1] * 6 + [0] * 8 + [2] * 6  # segments [0,6) [6,14) [14,20): 0 and 1 swapped
    assert shifted[1].tolist() == [2] * 2 + [1] * 2 + [0] * 16
    assert shifted[2].tolist() == [0] * 16 + [1] * 2 + [2] * 2  # centre in segment 0: nothing to swap


def test_ghosting_scales_every_nth_kspace_plane():
    x = torch.randn(2, 1, 16, 24, 20, generator=gen(7))  # one channel: one std-restoring scale
    axis, count, intensity = torch.tensor([1, 2]), torch.tensor([4, 5]), torch.tensor([0.8, 1.0])
    y = augment_mri.ghosting(x, axis, count, intensity, 0.0)
    for i in range(2):
        a = 2 + int(axis[i])
        fx, fy = torch.fft.rfft(x[i:i + 1].double(), dim=a), torch.fft.rfft(y[i:i + 1].double(), dim=a)
        others = [j for j in range(fx.ndim) if j != a]
        gain = (fy.abs() ** 2).sum(others).sqrt() / (fx.abs() ** 2).sum(others).sqrt()  # per plane
        f = torch.arange(len(gain))
        hit = (f % count[i] == 0) & (f > 0)
        assert torch.allclose(gain[hit] / gain[1], torch.full((int(hit.sum()),), 1 - float(intensity[i]),
                                                             dtype=gain.dtype), atol=1e-4)
        keep = ~hit & (f > 0)  # the f = 0 plane also carries the restored mean
        assert torch.allclose(gain[keep] / gain[1], torch.ones(int(keep.sum()), dtype=gain.dtype), atol=1e-4)


def test_ghosting_puts_shifted_copies_of_a_point():
    shape = (1, 1, 32, 24, 20)
    x = torch.zeros(shape)
    x[0, 0, 5, 12, 10] = 1.0
    x = (x - x.mean()) / x.std()
    cfg = only("p_ghosting", ghosting_count_range=[4, 4], ghosting_intensity_range=[1, 1])
    y, _ = augment_batch(x, labels(shape), cfg, gen(0))
    y = y - y.median()
    peak = float(y[0, 0, 5, 12, 10])
    found = []
    for a, size in enumerate(shape[2:]):  # ghosts size/4 apart along the chosen axis only
        pos = [5, 12, 10]
        pos[a] = (pos[a] + size // 4) % size
        found.append(float(y[(0, 0, *pos)].abs()) > 0.15 * peak)
    assert found.count(True) == 1, found
    far = y.abs().flatten().sort().values[-20]  # apart from peak and ghosts, nothing much
    assert float(far) < 0.4 * peak


@pytest.mark.parametrize("shape", [(1, 1, 16, 20, 24), (1, 1, 40, 36)])
@pytest.mark.parametrize("spikes", [1, 2])
def test_spike_raises_energy_at_single_kspace_frequencies(shape, spikes):
    x = torch.randn(shape, generator=gen(8))
    cfg = only("p_spike", spike_count_range=[spikes, spikes])
    y, _ = augment_batch(x, labels(shape), cfg, gen(spikes))
    dims = tuple(range(2, len(shape)))
    gain = (torch.fft.fftn(y.double(), dim=dims).abs() / torch.fft.fftn(x.double(), dim=dims).abs())[0, 0]
    gain.view(-1)[0] = gain.flatten()[1]  # DC: the restored mean, not a spike
    typical = gain.median()
    bright = gain > 2 * typical
    # a real cosine: +k and -k (one frequency if k is its own mirror), per spike
    assert 1 <= int(bright.sum()) <= 2 * spikes and int(bright.sum()) >= spikes
    assert torch.allclose(gain[~bright], typical.expand(int((~bright).sum())), rtol=1e-3)  # elsewhere: a scale


def high_fraction(v, a):
    """Share of the power in the upper half of the frequencies along spatial axis ``a``."""
    power = torch.fft.rfft(v.double(), dim=2 + a).abs() ** 2
    others = [j for j in range(power.ndim) if j != 2 + a]
    per_plane = power.sum(others)
    return per_plane[len(per_plane) // 2:].sum() / per_plane.sum()


def test_spike_count_is_drawn_from_its_range():
    shape = (1, 1, 24, 28)
    x = torch.randn(shape, generator=gen(8))
    counts = set()
    for seed in range(10):
        y, _ = augment_batch(x, labels(shape), only("p_spike", spike_count_range=[1, 3]), gen(seed))
        gain = (torch.fft.fft2(y.double()).abs() / torch.fft.fft2(x.double()).abs())[0, 0]
        gain[0, 0] = gain[0, 1]
        counts.add(int((gain > 2 * gain.median()).sum()))
    assert min(counts) <= 2 and max(counts) >= 4 and max(counts) <= 6, counts


@pytest.mark.parametrize("shape", [(1, 1, 24, 24, 24), (1, 1, 40, 40)])
def test_low_resolution_removes_high_frequencies_along_one_axis(shape):
    x = torch.randn(shape, generator=gen(10))
    cfg = only("p_low_res", low_res_factor_range=[3, 3])
    y, _ = augment_batch(x, labels(shape), cfg, gen(11))
    ratios = [float(high_fraction(y, a) / high_fraction(x, a)) for a in range(len(shape) - 2)]
    assert sum(r < 0.2 for r in ratios) == 1, ratios
    assert all(0.8 < r < 1.25 for r in ratios if r >= 0.2), ratios


def test_low_resolution_axes_are_respected():
    shape = (1, 1, 16, 16, 16)
    x = torch.randn(shape, generator=gen(12))
    for seed in range(5):
        y, _ = augment_batch(x, labels(shape), only("p_low_res", low_res_axes=[2]), gen(seed))
        ratios = [float(high_fraction(y, a) / high_fraction(x, a)) for a in range(3)]
        assert ratios[2] < 0.5 and all(0.8 < r < 1.25 for r in ratios[:2]), ratios  # only X is coarsened


def test_inverted_gamma_is_gamma_of_the_negated_image():
    x = phantom(SHAPES["2d"])
    y, _ = augment_batch(x, labels(SHAPES["2d"]), only("p_inverted_gamma", gamma_range=[2, 2]), gen(0))
    lo, hi = x.flatten(2).amin(2)[..., None, None], x.flatten(2).amax(2)[..., None, None]
    u = (x - lo) / (hi - lo)
    assert torch.allclose(y, lo + (hi - lo) * (1 - (1 - u) ** 2), atol=1e-5)
    assert (y >= x - 1e-5).all()  # gamma > 1 of the inverted image brightens, unlike plain gamma


@pytest.mark.parametrize("key", NEW[1:])
def test_channels_are_chosen_independently(key):
    """p_per_channel 0.5: about half the channels get the artefact, the rest stay bit for bit."""
    x = phantom((1, 8, 32, 32))
    cfg = AugmentConfig.from_dict({**{k: 0.0 for k in OLD + NEW}, key: 1.0, "p_per_channel": 0.5})
    changed = []
    for seed in range(12):
        y, _ = augment_batch(x, labels((1, 8, 32, 32)), cfg, gen(seed))
        same = (y == x).flatten(2).all(2)[0]
        assert (same | ((y - x).abs().flatten(2).amax(2)[0] > 1e-3)).all()
        changed.append(int((~same).sum()))
    assert 0.3 < sum(changed) / (8 * 12) < 0.7, changed


@pytest.mark.parametrize("key", NEW[1:])
def test_context_slices_share_the_artefact(key):
    """2.5D (B, C*k, Y, X): with context_slices=k the k slices of a modality get the same artefact."""
    slice_ = phantom((1, 1, 32, 28))
    x = slice_.repeat(1, 6, 1, 1)  # 2 modalities x 3 slices, all the same image
    y, _ = augment_batch(x, labels((1, 6, 32, 28)), only(key), gen(3), context_slices=3)
    for g in range(2):
        for j in range(1, 3):
            assert torch.allclose(y[0, 3 * g + j], y[0, 3 * g], atol=1e-6)
    assert not torch.allclose(y[0, 0], y[0, 3])  # each modality its own
    y1, _ = augment_batch(x, labels((1, 6, 32, 28)), only(key), gen(3))
    assert not torch.allclose(y1[0, 0], y1[0, 1])  # per channel without context_slices
    with pytest.raises(ValueError, match="context_slices"):
        augment_batch(x, labels((1, 6, 32, 28)), only(key), gen(3), context_slices=4)


def test_config_validation():
    cfg = AugmentConfig.from_dict({"p_motion": 0.2, "ghosting_count_range": [3, 6], "low_res_axes": [0, 2],
                                   "spike_intensity_range": [1, 3], "motion_transforms": 3.0})
    assert cfg.ghosting_count_range == (3, 6) and isinstance(cfg.ghosting_count_range[0], int)
    assert cfg.low_res_axes == (0, 2) and cfg.spike_intensity_range == (1.0, 3.0) and cfg.motion_transforms == 3
    bad = [
        ({"p_motion": 1.5}, "p_motion"), ({"p_spike": -0.1}, "p_spike"), ({"p_per_channel": 2}, "p_per_channel"),
        ({"p_bias_field": math.nan}, "p_bias_field"), ({"p_inverted_gamma": 1.01}, "p_inverted_gamma"),
        ({"ghosting_count_range": [10, 4]}, "ghosting_count_range"),
        ({"ghosting_count_range": [0, 4]}, "ghosting_count_range"),
        ({"spike_count_range": [1.5, 3]}, "spike_count_range"),
        ({"spike_intensity_range": [-1, 1]}, "spike_intensity_range"),
        ({"ghosting_intensity_range": [0.5, math.nan]}, "ghosting_intensity_range"),
        ({"low_res_factor_range": [0.5, 2]}, "low_res_factor_range"),
        ({"low_res_factor_range": [2]}, "low_res_factor_range"),
        ({"low_res_axes": [3]}, "low_res_axes"), ({"low_res_axes": []}, "low_res_axes"),
        ({"motion_transforms": 0}, "motion_transforms"), ({"bias_field_order": 2.5}, "bias_field_order"),
        ({"motion_degrees": -5}, "motion_degrees"), ({"ghosting_restore": 1.5}, "ghosting_restore"),
        ({"bias_field_coefficient": -0.5}, "bias_field_coefficient"),
        ({"p_ghost": 0.1}, "p_ghost"),
    ]
    for d, match in bad:
        with pytest.raises(ValueError, match=match):
            AugmentConfig.from_dict(d)


def test_low_res_axis_beyond_a_2d_image_is_an_error():
    with pytest.raises(ValueError, match="axis 2"):
        augment_batch(phantom((1, 1, 16, 16)), labels((1, 1, 16, 16)), only("p_low_res", low_res_axes=[2]), gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_artefacts_on_cuda_with_a_cuda_generator():
    x = phantom(SHAPES["3d"]).cuda()
    lab = labels(SHAPES["3d"]).cuda()
    cfg = AugmentConfig.from_dict({k: 1.0 for k in NEW} | {"p_per_channel": 1.0})
    y1, l1 = augment_batch(x, lab, cfg, torch.Generator(device="cuda").manual_seed(0))
    y2, _ = augment_batch(x, lab, cfg, torch.Generator(device="cuda").manual_seed(0))
    assert y1.device == x.device and torch.isfinite(y1).all() and torch.equal(l1, lab)
    assert torch.allclose(y1, y2)
