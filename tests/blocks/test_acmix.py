"""ACmix against the official unfold code and against a direct per-query reference from the paper."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlens.blocks import ACmix, acmix
from attnlens.blocks.acmix import attention_received, reflect_indices
from tests.helpers import randomise
from tests.reference.official_acmix import OfficialACmix

OFFICIAL_KEYS = {"rate1", "rate2", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight",
                 "conv3.bias", "conv_p.weight", "conv_p.bias", "fc.weight", "dep_conv.weight"}


def pair(*args, **kwargs):
    official = randomise(OfficialACmix(*args, **kwargs))
    ours = ACmix(*args, **kwargs)
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


def assert_close(actual, expected, rtol=1e-5):
    scale = expected.abs().max().clamp_min(1e-12)
    assert ((actual - expected).abs().max() / scale).item() < rtol


def reference_acmix(module: ACmix, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query loops over the paper's formula; reflection by ``np.pad(mode="reflect")``.

    Returns the output and the window attention ``(N, heads, k*k, H', W')``.
    """
    n, _, height, width = x.shape
    heads, d, k, s, dil = module.head, module.head_dim, module.kernel_att, module.stride, module.dilation
    pad = dil * (k - 1) // 2
    q, key, v = module.conv1(x), module.conv2(x), module.conv3(x)
    xs = torch.linspace(-1, 1, width, dtype=x.dtype).expand(height, width)
    ys = torch.linspace(-1, 1, height, dtype=x.dtype)[:, None].expand(height, width)
    pe = module.conv_p(torch.stack([xs, ys])[None])[0]  # (d, H, W)

    def padded(t):  # (..., H, W) -> reflection padded numpy-style (repeats for big pads)
        array = t.detach().numpy()
        widths = [(0, 0)] * (array.ndim - 2) + [(pad, pad), (pad, pad)]
        return torch.from_numpy(np.pad(array, widths, mode="reflect"))

    key_p, v_p, pe_p = padded(key), padded(v), padded(pe)
    out_h, out_w = (height - 1) // s + 1, (width - 1) // s + 1
    out = torch.zeros(n, heads * d, out_h, out_w, dtype=x.dtype)
    attention = torch.zeros(n, heads, k * k, out_h, out_w, dtype=x.dtype)
    for b in range(n):
        for h in range(heads):
            channels = slice(h * d, (h + 1) * d)
            for i in range(out_h):
                for j in range(out_w):
                    query = q[b, channels, s * i, s * j] * d ** -0.5
                    rows = [s * i + dil * a for a in range(k)]
                    cols = [s * j + dil * c for c in range(k)]
                    keys = torch.stack([key_p[b, channels, r, c] + pe[:, s * i, s * j] - pe_p[:, r, c]
                                        for r in rows for c in cols])  # (k*k, d)
                    weights = torch.softmax(keys @ query, dim=0)
                    values = torch.stack([v_p[b, channels, r, c] for r in rows for c in cols])
                    out[b, channels, i, j] = weights @ values
                    attention[b, h, :, i, j] = weights
    qkv = torch.cat([t.reshape(n, heads, d, height * width) for t in (q, key, v)], 1)
    shifted = F.conv2d(qkv, module.fc.weight).transpose(1, 2).reshape(n, -1, height, width)
    conv = F.conv2d(shifted, module.dep_conv.weight, stride=s, padding=module.kernel_conv // 2, groups=d)
    return module.rate1 * out + module.rate2 * conv, attention


def test_state_dict_keys_match_official_exactly():
    assert set(ACmix(8, 16).state_dict()) == OFFICIAL_KEYS == set(OfficialACmix(8, 16).state_dict())
    ours = ACmix(8, 16)
    ours.load_state_dict(OfficialACmix(8, 16).state_dict(), strict=True)
    OfficialACmix(8, 16).load_state_dict(ours.state_dict(), strict=True)


def test_init_matches_official():
    torch.manual_seed(0)
    official, ours = OfficialACmix(8, 12, head=3), ACmix(8, 12, head=3)
    assert ours.rate1.item() == ours.rate2.item() == 0.5
    assert torch.equal(ours.dep_conv.weight, official.dep_conv.weight)


@pytest.mark.parametrize("config, shape", [
    (dict(in_planes=16, out_planes=16), (2, 16, 12, 10)),
    (dict(in_planes=16, out_planes=16), (1, 16, 8, 8)),
    (dict(in_planes=8, out_planes=16, kernel_att=5, head=2, stride=2), (2, 8, 12, 8)),
    (dict(in_planes=16, out_planes=24, kernel_att=3, head=3, stride=2), (2, 16, 10, 14)),
    (dict(in_planes=12, out_planes=8, kernel_att=7, head=1), (1, 12, 9, 11)),
    (dict(in_planes=32, out_planes=32, head=8), (2, 32, 28, 28)),
    (dict(in_planes=8, out_planes=8, kernel_att=9, head=2), (1, 8, 11, 13)),
])
def test_matches_official(config, shape):
    official, ours = pair(**config)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = official(x)
        assert_close(ours(x), expected)


def test_gradients_match_official():
    official, ours = pair(8, 8, kernel_att=3, head=2, stride=2)
    official, ours = official.double(), ours.double()
    x = torch.randn(2, 8, 6, 8, dtype=torch.double, requires_grad=True)
    expected = torch.autograd.grad(official(x).square().sum(), [x, *official.parameters()], allow_unused=True)
    actual = torch.autograd.grad(ours(x).square().sum(), [x, *ours.parameters()], allow_unused=True)
    for a, e in zip(actual, expected):  # None: not in the graph (conv_p.bias cancels in pe_q - pe_k)
        a = torch.zeros_like(e) if a is None else a
        e = torch.zeros_like(a) if e is None else e
        assert torch.allclose(a, e, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("stride", [1, 2])
def test_gradcheck(stride):
    module = randomise(ACmix(4, 4, kernel_att=3, head=2, stride=stride)).double()
    x = torch.randn(1, 4, 5, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))


@pytest.mark.parametrize("config, shape", [
    (dict(in_planes=8, out_planes=8, kernel_att=7, head=2), (1, 8, 2, 3)),  # map smaller than the window
    (dict(in_planes=8, out_planes=8, kernel_att=7, head=2), (1, 8, 1, 5)),  # a single row
    (dict(in_planes=8, out_planes=8, kernel_att=5, head=2, stride=2), (2, 8, 7, 9)),  # odd sizes, stride 2
    (dict(in_planes=8, out_planes=8, kernel_att=3, head=2, stride=2), (1, 8, 5, 5)),
    (dict(in_planes=8, out_planes=8, kernel_att=3, head=2, dilation=2), (1, 8, 9, 8)),  # dilation
    (dict(in_planes=8, out_planes=8, kernel_att=3, head=2, stride=2, dilation=3), (1, 8, 9, 10)),
    (dict(in_planes=8, out_planes=8, kernel_att=3, head=2, kernel_conv=5), (1, 8, 6, 7)),  # kernel_conv != 3
    (dict(in_planes=8, out_planes=8, kernel_att=5, head=2, kernel_conv=1, stride=2), (1, 8, 6, 7)),
])
def test_robust_cases_match_direct_reference(config, shape):
    """Where the official code raises or is wrong, ours follows the paper with the documented choices."""
    ours = randomise(ACmix(**config)).double()
    x = torch.randn(shape, dtype=torch.double)
    expected, _ = reference_acmix(ours, x)
    with torch.no_grad():
        actual = ours(x)
    assert actual.shape == expected.shape
    assert_close(actual, expected, rtol=1e-10)


def test_official_code_fails_where_ours_works():
    official, ours = pair(8, 8, kernel_att=7, head=2)
    x = torch.randn(1, 8, 2, 3)
    with pytest.raises(RuntimeError):
        official(x)
    assert ours(x).shape == (1, 8, 2, 3)


def test_direct_reference_agrees_with_official_where_it_works():
    """The test's own reference is checked against the official code too."""
    official, ours = pair(8, 8, kernel_att=5, head=2, stride=2)
    x = torch.randn(1, 8, 8, 6, dtype=torch.double)
    official, ours = official.double(), ours.double()
    expected, attention = reference_acmix(ours, x)
    with torch.no_grad():
        assert_close(official(x), expected, rtol=1e-10)
        assert_close(official.last_attention.view_as(attention), attention, rtol=1e-10)


@pytest.mark.parametrize("kwargs, message", [
    (dict(in_planes=8, out_planes=10, head=4), "divisible by head"),
    (dict(in_planes=8, out_planes=8, kernel_att=6), "odd"),
    (dict(in_planes=8, out_planes=8, kernel_conv=2), "odd"),
    (dict(in_planes=8, out_planes=8, stride=0), "positive"),
    (dict(in_planes=0, out_planes=8), "positive"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ACmix(**kwargs)


def test_bfloat16_close_to_float32():
    module = randomise(ACmix(16, 16, head=4))
    x = torch.randn(1, 16, 10, 9)
    with torch.no_grad():
        expected = module(x)
        actual = module.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    assert actual.dtype == torch.float32 and torch.isfinite(actual).all()
    assert ((actual - expected).abs().mean() / expected.abs().mean()).item() < 0.05


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    official, ours = pair(16, 16)
    x = torch.randn(2, 16, 14, 14)
    with torch.no_grad():
        expected = official(x)
        device = torch.device("cuda", torch.cuda.device_count() - 1)  # any device, not just the default
        actual = ours.to(device, dtype)(x.to(device, dtype)).float().cpu()
    assert_close(actual, expected, rtol=1e-5 if dtype == torch.float32 else 5e-2)


def test_reflect_indices_match_reflection_pad_and_extend_it():
    for size, pad in ((5, 2), (5, 4), (2, 3), (1, 3), (3, 7)):
        expected = np.pad(np.arange(size), pad, mode="reflect")
        assert reflect_indices(size, -pad, size + pad).tolist() == expected.tolist()


def test_attention_received_hand_computed():
    # 1x3 map, window 3, stride 1: reflection sends tap -1 to column 1, tap 3 to column 1.
    attention = torch.zeros(1, 1, 9, 1, 3)
    attention[0, 0, 3, 0, 0] = 1.0  # query 0, window row 1 (the only real row), column tap 0 -> column 1
    attention[0, 0, 4, 0, 1] = 0.5  # query 1, centre -> column 1
    attention[0, 0, 5, 0, 1] = 0.5  # query 1, right -> column 2
    attention[0, 0, 5, 0, 2] = 1.0  # query 2, right tap -> reflected to column 1
    received = attention_received(attention, 1, 3)
    assert received.tolist() == [[[0.0, 2.5, 0.5]]]


@pytest.mark.parametrize("config, shape", [
    (dict(kernel_att=7), (1, 4, 2, 3)),  # a map smaller than the window: keys reflected several times
    (dict(kernel_att=5, stride=2), (2, 4, 7, 9)),  # odd sizes, stride 2, several blocks
    (dict(kernel_att=3, dilation=2), (1, 4, 9, 11)),  # dilation
    (dict(kernel_att=3, stride=2, dilation=3), (1, 4, 9, 10)),
])
def test_gradcheck_where_the_official_code_fails(config, shape):
    """The window attention's own backward (parts gathered again, gradients added back by position) against finite
    differences."""
    module = randomise(ACmix(4, 4, head=2, **config)).double()
    x = torch.randn(shape, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))
    params = [module.conv_p.weight, module.conv1.weight, module.conv2.weight, module.conv3.weight]
    assert torch.autograd.gradcheck(lambda *p: torch.func.functional_call(
        module, dict(zip(["conv_p.weight", "conv1.weight", "conv2.weight", "conv3.weight"], p)), (x,)),
        tuple(p.detach().requires_grad_() for p in params))


def test_softmax_hook_sees_the_official_attention_in_every_part(monkeypatch):
    """Our block only lays the attention out officially when `softmax` is hooked; every part must land."""
    monkeypatch.setitem(acmix.CHUNK_ELEMENTS, "cpu", 1)  # one map (image x head) per part
    official, ours = pair(16, 16, kernel_att=5, head=2)
    x = torch.randn(2, 16, 11, 13)
    seen = {}
    for name, module in (("official", official), ("ours", ours)):
        module.softmax.register_forward_hook(lambda module, args, output, name=name: seen.__setitem__(name, output))
        with torch.no_grad():
            module(x)
    assert seen["ours"].shape == seen["official"].shape == (4, 25, 11, 13)
    assert_close(seen["ours"], seen["official"])


def test_gradients_match_official_when_worked_through_in_parts(monkeypatch):
    """Each part gathers its own keys and values and adds their gradients back: parts must not overlap or miss."""
    monkeypatch.setitem(acmix.CHUNK_ELEMENTS, "cpu", 1)  # one map (image x head) per part: 6 parts
    official, ours = pair(8, 12, kernel_att=5, head=3)
    official, ours = official.double(), ours.double()
    x = torch.randn(2, 8, 9, 7, dtype=torch.double, requires_grad=True)
    expected = torch.autograd.grad(official(x).square().sum(), [x, *official.parameters()], allow_unused=True)
    actual = torch.autograd.grad(ours(x).square().sum(), [x, *ours.parameters()], allow_unused=True)
    for a, e in zip(actual, expected):  # None: conv_p.bias, which cancels
        a = torch.zeros_like(e) if a is None else a
        assert torch.allclose(a, e, atol=1e-9, rtol=1e-7)


def test_second_derivative_is_refused_plainly():
    block = ACmix(8, 8, kernel_att=3, head=2)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    (grad,) = torch.autograd.grad(block(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()
