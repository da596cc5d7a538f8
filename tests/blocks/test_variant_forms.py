"""Global context and window attention written other ways (tests/reference/variant_blocks.py): each recognised by
what it computes, its map equal to the block's own (kept by hand in the canonical layout); a global attention over
pooled keys, whose weights look like window taps by their shape, is not read and says why."""
import pytest
import torch

from attnlens.blocks import capture, recognise
from tests.helpers import randomise
from tests.reference import variant_blocks as variants

FORMS = {
    "gc: einsum pooling": (variants.EinsumGC, "gc"),
    "gc: linear over tokens, softmax over them": (variants.TokenGC, "gc"),
    "gc: softmax written out (exp over its sum)": (variants.ExpGC, "gc"),
    "acmix: zero padding by F.unfold": (variants.ZeroPadWindow, "acmix"),
    "acmix: einsum logits": (variants.EinsumWindow, "acmix"),
    "acmix: attention kept (N, heads, H'W', k*k)": (variants.TokensLastWindow, "acmix"),
}


@pytest.mark.parametrize("form", FORMS)
def test_each_form_is_read_with_its_own_map(form):
    make, kind = FORMS[form]
    block = randomise(make(8), scale=0.5).eval()
    found = recognise(block, torch.randn(1, 8, 12, 12))
    assert [(b.id, b.kind) for b in found.blocks] == [("", kind)]
    x = torch.randn(2, 8, 7, 9)  # another size and batch than recognition's
    with torch.no_grad(), capture(block) as maps:
        block(x)
        expected = block.mask_by_hand(x) if kind == "gc" else block.attention_by_hand(x)
    got = maps[""].context_mask if kind == "gc" else maps[""].attention
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_global_attention_over_pooled_keys_is_no_window():
    block = randomise(variants.PooledKeyAttention(8), scale=0.5).eval()
    found = recognise(block, torch.randn(1, 8, 8, 8))  # 4x4 = 16 pooled keys: a square number, like 4x4 taps
    assert not found.blocks
    assert any("not over a window" in candidate.why for candidate in found.candidates)
