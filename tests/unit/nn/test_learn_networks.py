"""Networks: U-Net topology rules, output shapes for 3d/2d/2.5d, SliceWise, deep supervision."""

import copy
import math
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)

from voxflow.training.losses import deep_supervision_weights, make_loss  # noqa: E402
from voxflow.nn.networks import (  # noqa: E402
    SliceWise,
    build_network,
    n_parameters,
    slices_with_context,
    unet_topology,
)


def _total_stride(strides):
    return [math.prod(s[a] for s in strides) for a in range(len(strides[0]))]


@pytest.mark.parametrize("patch", [(128, 128, 128), (40, 96, 80), (20, 192, 160), (64, 64), (48, 160)])
def test_topology_pools_while_axis_stays_above_min_size(patch):
    kernels, strides = unet_topology(patch, min_size=8)
    assert len(kernels) == len(strides) and strides[0] == [1] * len(patch)
    assert kernels[-1] == [3] * len(patch)
    for size, total in zip(patch, _total_stride(strides)):
        assert size / total >= 8  # never below min_size
        assert size / total / 2 < 8  # isotropic spacing: pools as long as it can
    assert all(set(s) <= {1, 2} for s in strides)


def test_topology_examples_written_out():
    # 128: 64, 32, 16, 8 -> 4 poolings, 5 stages
    assert unet_topology((128, 128, 128)) == ([[3, 3, 3]] * 5, [[1, 1, 1]] + [[2, 2, 2]] * 4)
    # 20 pools once (10), 40 twice (10)
    assert unet_topology((20, 40)) == ([[3, 3]] * 3, [[1, 1], [2, 2], [1, 2]])


def test_topology_thick_slices_pool_later():
    patch = (32, 64, 64)
    k_iso, s_iso = unet_topology(patch)
    k_aniso, s_aniso = unet_topology(patch, spacing=(3.0, 1.0, 1.0))
    # isotropic: z pools at every stage until it reaches 8
    assert [s[0] for s in s_iso] == [1, 2, 2, 1]
    # thick slices: in-plane first; z only once its spacing (3) is within 2x of in-plane (2)
    assert s_aniso[1] == [1, 2, 2] and s_aniso[2] == [2, 2, 2]
    assert k_aniso[0] == [1, 3, 3] and k_iso[0] == [3, 3, 3]  # no z conv at the finest stage
    for stage in range(1, len(s_aniso) + 1):  # z is never more downsampled than with iso spacing
        assert _total_stride(s_aniso[:stage])[0] <= _total_stride(s_iso[:stage])[0]
    for size, total in zip(patch, _total_stride(s_aniso)):
        assert size / total >= 8
    # with the depth capped, thick-slice z ends up pooled less than isotropic z
    assert _total_stride(unet_topology(patch, (3.0, 1.0, 1.0), n_stages=3)[1]) == [2, 4, 4]
    assert _total_stride(unet_topology(patch, n_stages=3)[1]) == [4, 4, 4]


def test_topology_n_stages():
    kernels, strides = unet_topology((128, 128, 128), n_stages=3)
    assert len(kernels) == len(strides) == 3 and kernels[-1] == [3, 3, 3]
    with pytest.raises(ValueError, match="stages"):
        unet_topology((32, 32), n_stages=5)


def test_3d_output_shape_and_parameters():
    net = build_network("3d", 2, 3, (16, 32, 32), base_features=4).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 16, 32, 32))
    assert out.shape == (1, 3, 16, 32, 32)
    small = n_parameters(net)
    assert small > 0 and n_parameters(build_network("3d", 2, 3, (16, 32, 32), base_features=8)) > small


def test_2d_output_shape():
    net = build_network("2d", 1, 4, (32, 48), base_features=4).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 32, 48)).shape == (2, 4, 32, 48)


def test_slices_with_context_order():
    x = torch.arange(1 * 2 * 4).float().reshape(1, 2, 4, 1, 1)  # channel 0: 0..3, channel 1: 4..7
    s = slices_with_context(x, 3)[0, :, :, 0, 0]
    assert s.tolist() == [
        [0, 0, 1, 4, 4, 5],  # edge slice repeated
        [0, 1, 2, 4, 5, 6],
        [1, 2, 3, 5, 6, 7],
        [2, 3, 3, 6, 7, 7],
    ]


def test_2p5d_slicewise_on_3d_patch():
    torch.manual_seed(0)
    net = build_network("2.5d", 2, 3, (32, 32), base_features=4, context_slices=3).eval()
    x = torch.randn(2, 2, 5, 32, 32)
    with torch.no_grad():
        out = SliceWise(net, context_slices=3)(x)
        chunked = SliceWise(net, context_slices=3, max_slices=2)(x)
        # slice 0 by hand: neighbours (0, 0, 1) of each channel, channel-major
        first = torch.stack([x[:, 0, 0], x[:, 0, 0], x[:, 0, 1], x[:, 1, 0], x[:, 1, 0], x[:, 1, 1]], 1)
        mid = torch.cat([x[:, 0, 1:4], x[:, 1, 1:4]], 1)  # slice 2
        ref0, ref2 = net(first), net(mid)
    assert out.shape == (2, 3, 5, 32, 32)
    assert torch.allclose(out[:, :, 0], ref0, atol=1e-5)
    assert torch.allclose(out[:, :, 2], ref2, atol=1e-5)
    assert torch.allclose(chunked, out, atol=1e-5)


def test_2d_slicewise():
    net = build_network("2d", 1, 2, (32, 32), base_features=4).eval()
    x = torch.randn(1, 1, 3, 32, 32)
    with torch.no_grad():
        out = SliceWise(net)(x)
        assert torch.allclose(out[:, :, 1], net(x[:, :, 1]), atol=1e-5)
    assert out.shape == (1, 2, 3, 32, 32)


def test_deep_supervision_output_and_loss():
    net = build_network("2d", 1, 3, (64, 64), base_features=4, deep_supervision=True)
    _, strides = unet_topology((64, 64))
    assert len(strides) == 4  # 64 -> 32 -> 16 -> 8
    net.train()
    out = net(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, len(strides) - 1, 3, 64, 64)
    loss = make_loss("dice_ce", 3, deep_supervision_weights=deep_supervision_weights(out.shape[1]))
    value = loss(out, torch.randint(0, 3, (2, 1, 64, 64)))
    value.backward()
    assert torch.isfinite(value)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)


def test_build_network_rejects_bad_input():
    with pytest.raises(ValueError, match="dim"):
        build_network("4d", 1, 2, (32, 32))
    with pytest.raises(ValueError, match="patch_size"):
        build_network("3d", 1, 2, (32, 32))
    with pytest.raises(ValueError, match="context_slices"):
        build_network("2.5d", 1, 2, (32, 32), context_slices=2)
    with pytest.raises(ValueError, match="context_slices"):
        build_network("2d", 1, 2, (32, 32), context_slices=3)
    with pytest.raises(ValueError, match="stages"):
        build_network("2d", 1, 2, (16, 16))  # only one pooling possible
    with pytest.raises(ValueError, match="divisible"):
        build_network("2d", 1, 2, (36, 34))


def test_n_parameters_counts():
    lin = torch.nn.Linear(3, 2)  # 3 * 2 weights + 2 biases
    assert n_parameters(lin) == 8
    lin.bias.requires_grad_(False)
    assert n_parameters(lin, trainable_only=True) == 6 and n_parameters(lin) == 8


@pytest.mark.parametrize("dim", [2, 3])
def test_channels_last_instance_norm_matches_torch(dim):
    """The channels-last instance norm (hand-written forward and backward, for CPU speed) computes what torch's
    does: same output and same gradients for input, weight and bias, on a channels-last input with a large
    mean against its spread (where a one-pass variance would lose precision)."""
    from voxflow.nn.networks import ChannelsLastInstanceNorm2d, ChannelsLastInstanceNorm3d

    gen = torch.Generator().manual_seed(0)
    shape = (2, 5, 6, 7, 8) if dim == 3 else (2, 5, 9, 11)
    fmt = torch.channels_last_3d if dim == 3 else torch.channels_last
    ref = (torch.nn.InstanceNorm3d if dim == 3 else torch.nn.InstanceNorm2d)(5, affine=True)
    fast = (ChannelsLastInstanceNorm3d if dim == 3 else ChannelsLastInstanceNorm2d)(5, affine=True)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(5, generator=gen) + 0.5)
        ref.bias.copy_(torch.randn(5, generator=gen))
    fast.load_state_dict(ref.state_dict())
    x = (torch.randn(shape, generator=gen) * 0.1 + 50).contiguous(memory_format=fmt)
    grad = torch.randn(shape, generator=gen).contiguous(memory_format=fmt)
    ref64 = copy.deepcopy(ref).double()  # the exact answer, in float64
    xa, xb = x.double().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref64(xa), fast(xb)
    assert yb.is_contiguous(memory_format=fmt), "the output stays channels-last"
    torch.testing.assert_close(yb.double(), ya, rtol=1e-4, atol=1e-4)
    ya.backward(grad.double())
    yb.backward(grad)
    torch.testing.assert_close(xb.grad.double(), xa.grad, rtol=1e-3, atol=1e-3)
    # float32 sums of 336-990 voxels: torch's own float32 weight gradient is off by ~6e-4 here, this one by ~2e-3
    torch.testing.assert_close(fast.weight.grad.double(), ref64.weight.grad, rtol=1e-3, atol=5e-3)
    torch.testing.assert_close(fast.bias.grad.double(), ref64.bias.grad, rtol=1e-4, atol=1e-4)
    # a LeakyReLU in place after it (DynUNet's blocks) must not break autograd
    torch.nn.functional.leaky_relu_(fast(x.clone().requires_grad_())).sum().backward()


def _conv_output_sizes(net, x):
    """Spatial sizes of every Conv3d/Conv2d output in one forward pass."""
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(tuple(o.shape[2:])))
             for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.Conv2d))]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("dim,patch", [("3d", (16, 64, 64)), ("2d", (64, 64))])
def test_strided_stem_never_convolves_at_full_resolution(dim, patch):
    """The strided stem is nnU-Net's topology without its full-resolution stage: no convolution of the U-Net sees
    the patch's grid (the first one has the first pooling stride); only the light head does, with
    max(4, base // 4) features; the logits come back at the patch's size."""
    x = torch.randn(1, 2, *patch)
    full = build_network(dim, 2, 3, patch, base_features=16).eval()
    strided = build_network(dim, 2, 3, patch, base_features=16, stem="strided").eval()
    assert patch in _conv_output_sizes(full, x)
    sizes = _conv_output_sizes(strided.unet, x)
    half = tuple(s // st for s, st in zip(patch, unet_topology(patch)[1][1]))  # after nnU-Net's first pool
    assert patch not in sizes and sizes[0] == half
    convs = (torch.nn.Conv3d, torch.nn.Conv2d, torch.nn.ConvTranspose3d, torch.nn.ConvTranspose2d)
    head = [m for m in [*strided.up.modules(), *strided.head.modules()] if isinstance(m, convs)]
    assert [m.out_channels for m in head] == [4, 4, 3] and head[1].in_channels == 4 + 2  # features + the image
    with torch.no_grad():
        out = strided(x)
    assert out.shape == (1, 3, *patch)
    # one stage fewer: the coarsest stage is as deep as the full network's (the stem takes the first pool)
    _, strides = unet_topology(patch)
    assert len(strided.unet.filters) == len(strides) - 1
    assert n_parameters(strided) < n_parameters(full) / 2
    # the head adds a correction: without it (its last convolution zeroed) the output is the U-Net's logits
    # repeated to the patch
    torch.nn.init.zeros_(head[-1].weight)
    torch.nn.init.zeros_(head[-1].bias)
    with torch.no_grad():
        coarse = strided.unet(x)
        plain = strided(x)
    assert coarse.shape[2:] == half
    assert torch.allclose(plain, torch.nn.functional.interpolate(coarse, size=patch, mode="nearest"), atol=1e-6)
    assert not torch.allclose(plain, out, atol=1e-4)


def test_strided_stem_deep_supervision_and_n_stages():
    net = build_network("3d", 1, 3, (64, 64, 64), base_features=4, deep_supervision=True, stem="strided")
    net.train()
    out = net(torch.randn(2, 1, 64, 64, 64))
    assert out.shape == (2, 2, 3, 64, 64, 64)  # 3 stages (32 -> 16 -> 8): the final output and one head
    loss = make_loss("dice_ce", 3, deep_supervision_weights=deep_supervision_weights(out.shape[1]))
    value = loss(out, torch.randint(0, 3, (2, 1, 64, 64, 64)))
    value.backward()
    assert torch.isfinite(value)
    # n_stages counts the network's stages either way
    assert len(build_network("3d", 1, 3, (64, 64, 64), n_stages=3, stem="strided").unet.filters) == 3
    with pytest.raises(ValueError, match="stages"):
        build_network("3d", 1, 3, (32, 32, 32), stem="strided")  # 16 -> 8: two stages, too few
    with pytest.raises(ValueError, match="stem"):
        build_network("3d", 1, 3, (64, 64, 64), stem="pooled")


def test_strided_stem_learns_a_segmentation():
    """A strided-stem network fits a blob segmentation whose boundary lies between coarse voxels."""
    torch.manual_seed(0)
    zz, yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(64.0), torch.arange(64.0), indexing="ij")
    masks = [((zz - 7.5) ** 2 + (yy - c) ** 2 + (xx - 31) ** 2 < 6.5 ** 2).long() for c in (25, 32, 39)]
    y = torch.stack(masks)[:, None]
    x = y.float() + 0.3 * torch.randn(y.shape)
    net = build_network("3d", 1, 2, (16, 64, 64), base_features=8, stem="strided")
    loss_fn = make_loss("dice_ce", 2)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(x).argmax(1, keepdim=True)
    dice = 2 * ((pred == 1) & (y == 1)).sum() / ((pred == 1).sum() + (y == 1).sum())
    assert float(dice) > 0.9, float(dice)
