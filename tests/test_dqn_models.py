"""Q-learning models: shapes over leading dims, pixel scaling, dueling math, gradient scaling,
shared advantage bias, C51 logits, max-pool trunk and argument validation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tdrl.models.dqn import (
    AtariCatDqnModel,
    AtariDqnModel,
    CatDqnMlpModel,
    Conv2dHeadModel,
    Conv2dModel,
    DistributionalDuelingHeadModel,
    DistributionalHeadModel,
    DqnMlpModel,
    DuelingHeadModel,
    scale_grad,
)

N_ACTIONS = 6
LEADS = [(2,), (3, 2)]  # [B] and [T, B]
_ATARI = (4, 84, 84)


def _frames(lead: tuple[int, ...], image_shape: tuple[int, int, int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*lead, *image_shape), dtype=torch.uint8, generator=g)


def _randomize_bias(model: nn.Module) -> None:
    """Give the (zero-initialised) shared advantage biases non-zero values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("advantage_bias"):
                p.normal_()


def _assert_same_over_leading_dims(model: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    """[T, B] output equals the output of the flattened [T * B] batch, reshaped."""
    flat = model(x.flatten(0, 1), None, None)
    torch.testing.assert_close(out, flat.reshape(out.shape))


@pytest.mark.parametrize("image_shape", [(4, 104, 80), (4, 84, 84)])
@pytest.mark.parametrize("dueling", [False, True])
def test_atari_dqn_model_shapes(image_shape, dueling):
    torch.manual_seed(0)
    model = AtariDqnModel(image_shape, N_ACTIONS, dueling=dueling)
    for lead in LEADS:
        q = model(_frames(lead, image_shape), None, None)
        assert q.shape == (*lead, N_ACTIONS) and q.dtype == torch.float32
    _assert_same_over_leading_dims(model, _frames((3, 2), image_shape), q)


@pytest.mark.parametrize("image_shape", [(4, 104, 80), (4, 84, 84)])
@pytest.mark.parametrize("dueling", [False, True])
def test_atari_cat_dqn_model_shapes_and_logits(image_shape, dueling):
    torch.manual_seed(0)
    model = AtariCatDqnModel(image_shape, N_ACTIONS, n_atoms=51, dueling=dueling)
    _randomize_bias(model)
    for lead in LEADS:
        logits = model(_frames(lead, image_shape), None, None)
        assert logits.shape == (*lead, N_ACTIONS, 51)
    _assert_same_over_leading_dims(model, _frames((3, 2), image_shape), logits)
    # Logits, not probabilities or log-probabilities: not normalised over atoms.
    assert (logits.sum(-1) - 1).abs().min() > 1e-3
    assert logits.logsumexp(-1).abs().min() > 1e-3
    probs = logits.softmax(-1)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, N_ACTIONS))


@pytest.mark.parametrize("dueling", [False, True])
def test_mlp_q_model_shapes(dueling):
    torch.manual_seed(0)
    q_model = DqnMlpModel(5, N_ACTIONS, dueling=dueling)
    cat_model = CatDqnMlpModel(5, N_ACTIONS, n_atoms=7, dueling=dueling)
    for lead in LEADS:
        obs = torch.randn(*lead, 5, dtype=torch.float64)
        assert q_model(obs, None, None).shape == (*lead, N_ACTIONS)
        assert cat_model(obs, None, None).shape == (*lead, N_ACTIONS, 7)
    obs = torch.randn(3, 2, 5)
    _assert_same_over_leading_dims(q_model, obs, q_model(obs, None, None))
    _assert_same_over_leading_dims(cat_model, obs, cat_model(obs, None, None))


def test_mlp_dueling_layout_keeps_depth():
    plain = DqnMlpModel(5, N_ACTIONS, hidden_sizes=(32, 16))
    duel = DqnMlpModel(5, N_ACTIONS, hidden_sizes=(32, 16), dueling=True)

    def linear_shapes(m):
        return [tuple(x.weight.shape) for x in m.modules() if isinstance(x, nn.Linear)]

    assert linear_shapes(plain) == [(32, 5), (16, 32), (N_ACTIONS, 16)]
    # Trunk (32) shared; the 16-unit layer is duplicated, one per stream.
    assert linear_shapes(duel.trunk) == [(32, 5)]
    assert linear_shapes(duel.head.value) == [(16, 32), (1, 16)]
    assert linear_shapes(duel.head.advantage_hidden) == [(16, 32)]
    assert duel.head.advantage_out.weight.shape == (N_ACTIONS, 16)
    empty = DqnMlpModel(5, N_ACTIONS, hidden_sizes=(), dueling=True)
    assert empty(torch.zeros(2, 5), None, None).shape == (2, N_ACTIONS)


def test_conv2d_models_shapes_and_out_size():
    conv = Conv2dModel(3, [8, 16], [5, 3], [2, 1], [1, 0])
    expected = conv.conv_out_shape(30, 22)
    # (30 + 2 - 5) // 2 + 1 = 14, then 14 - 3 + 1 = 12;  (22 + 2 - 5) // 2 + 1 = 10 -> 8
    assert expected == (16, 12, 8)
    for lead in [(), *LEADS]:
        assert conv(torch.zeros(*lead, 3, 30, 22)).shape == (*lead, *expected)
    assert conv.conv_out_size(30, 22) == 16 * 12 * 8
    head = Conv2dHeadModel((3, 30, 22), [8, 16], [5, 3], [2, 1], [32], 4, paddings=[1, 0])
    for lead in LEADS:
        assert head(torch.zeros(*lead, 3, 30, 22)).shape == (*lead, 4)
    features = Conv2dHeadModel((3, 30, 22), [8, 16], [5, 3], [2, 1], [], paddings=[1, 0])
    assert features.output_size == 16 * 12 * 8
    assert features(torch.zeros(2, 3, 30, 22)).shape == (2, 16 * 12 * 8)


@pytest.mark.parametrize("model_cls", [AtariDqnModel, AtariCatDqnModel])
def test_uint8_pixels_reach_first_conv_scaled_to_unit_interval(model_cls):
    model = model_cls((4, 84, 84), N_ACTIONS)
    seen = []
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0]))
    obs = _frames((2,), (4, 84, 84))
    obs[0, 0, 0, 0], obs[0, 0, 0, 1] = 0, 255
    before = obs.clone()
    model(obs, None, None)
    x = seen[0]
    assert x.dtype == torch.float32 and x.min() == 0.0 and x.max() == 1.0
    torch.testing.assert_close(x, obs.reshape(-1, 4, 84, 84).float() / 255)
    assert torch.equal(obs, before)


def test_dueling_head_identity():
    torch.manual_seed(0)
    head = DuelingHeadModel(10, [16], N_ACTIONS)
    _randomize_bias(head)
    x = torch.randn(3, 4, 10)
    q = head(x)
    value, advantage = head.value_and_advantage(x)
    assert q.shape == (3, 4, N_ACTIONS) and value.shape == (3, 4, 1)
    assert advantage.shape == (3, 4, N_ACTIONS)
    # mean_a Q = V, and Q - V is the mean-centred advantage.
    torch.testing.assert_close(q.mean(-1), value.squeeze(-1))
    torch.testing.assert_close(q - value, advantage - advantage.mean(-1, keepdim=True))
    assert (q - value).mean(-1).abs().max() < 1e-5
    assert advantage.mean(-1).abs().min() > 1e-3  # the raw advantage is not already centred


def test_distributional_dueling_head_identity_per_atom():
    torch.manual_seed(0)
    head = DistributionalDuelingHeadModel(10, [16], N_ACTIONS, n_atoms=5)
    _randomize_bias(head)
    x = torch.randn(3, 4, 10)
    logits = head(x)
    value, advantage = head.value_and_advantage(x)
    assert logits.shape == (3, 4, N_ACTIONS, 5)
    assert value.shape == (3, 4, 1, 5) and advantage.shape == (3, 4, N_ACTIONS, 5)
    torch.testing.assert_close(logits.mean(-2), value.squeeze(-2))
    torch.testing.assert_close(logits - value, advantage - advantage.mean(-2, keepdim=True))
    assert advantage.mean(-2).abs().min() > 1e-4


def test_distributional_head_logits_shape():
    head = DistributionalHeadModel(10, [16], N_ACTIONS, n_atoms=5)
    x = torch.randn(3, 4, 10)
    logits = head(x)
    assert logits.shape == (3, 4, N_ACTIONS, 5)
    torch.testing.assert_close(logits, head.mlp(x).reshape(3, 4, N_ACTIONS, 5))


def test_scale_grad_is_identity_forward_and_scales_backward():
    x = torch.randn(4, requires_grad=True)
    y = scale_grad(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(x.grad, 0.25 * torch.arange(4.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda s: DuelingHeadModel(10, [16], N_ACTIONS, grad_scale=s),
        lambda s: DistributionalDuelingHeadModel(10, [16], N_ACTIONS, 5, grad_scale=s),
    ],
    ids=["dueling", "distributional_dueling"],
)
def test_dueling_gradient_into_trunk_is_scaled(make):
    torch.manual_seed(0)
    scaled = make(2**-0.5)
    _randomize_bias(scaled)
    unscaled = make(1.0)
    unscaled.load_state_dict(copy.deepcopy(scaled.state_dict()))
    x = torch.randn(3, 10)
    weights = torch.randn_like(scaled(x))
    grads = []
    for head in (scaled, unscaled):
        features = x.clone().requires_grad_(True)
        out = head(features)
        (out * weights).sum().backward()
        grads.append((out, features.grad, {n: p.grad for n, p in head.named_parameters()}))
    (out_s, g_s, p_s), (out_u, g_u, p_u) = grads
    torch.testing.assert_close(out_s, out_u)  # forward unchanged
    assert g_u.abs().min() > 0
    torch.testing.assert_close(g_s, 2**-0.5 * g_u, rtol=1e-6, atol=0)
    for name in p_s:  # only the trunk's gradient is scaled, not the head's own parameters
        torch.testing.assert_close(p_s[name], p_u[name])


@pytest.mark.parametrize(
    ("make_head", "bias_shape"),
    [
        (lambda: DuelingHeadModel(10, [16], N_ACTIONS), (1,)),
        (lambda: DistributionalDuelingHeadModel(10, [16], N_ACTIONS, 5), (5,)),
        (lambda: AtariDqnModel(_ATARI, N_ACTIONS, dueling=True).head, (1,)),
        (lambda: AtariCatDqnModel(_ATARI, N_ACTIONS, n_atoms=5, dueling=True).head, (5,)),
    ],
    ids=["dueling", "distributional_dueling", "atari", "atari_cat"],
)
def test_advantage_bias_is_shared_across_actions(make_head, bias_shape):
    head = make_head()
    assert head.advantage_out.bias is None
    assert head.advantage_bias.shape == bias_shape
    # No parameter of the head has a per-action bias shape.
    n_out = head.advantage_out.weight.shape[0]
    assert all(p.shape != (n_out,) for p in head.parameters())
    x = torch.randn(2, head.advantage_hidden.net[0].in_features)
    before = head(x)
    with torch.no_grad():
        head.advantage_bias.add_(3.0)
    torch.testing.assert_close(head(x), before)


_SMALL = (4, 44, 44)  # a smaller Atari-like frame keeps the backward passes cheap
_MODELS = {  # name: (model factory, observation factory)
    "atari": (lambda: AtariDqnModel(_SMALL, 3), lambda: _frames((2,), _SMALL)),
    "atari_duel": (lambda: AtariDqnModel(_SMALL, 3, dueling=True), lambda: _frames((2,), _SMALL)),
    "atari_cat": (lambda: AtariCatDqnModel(_SMALL, 3, n_atoms=5), lambda: _frames((2,), _SMALL)),
    "atari_cat_duel": (
        lambda: AtariCatDqnModel(_SMALL, 3, n_atoms=5, dueling=True),
        lambda: _frames((2,), _SMALL),
    ),
    "atari_maxpool": (
        lambda: AtariDqnModel(_SMALL, 3, use_maxpool=True, fc_sizes=[32, 16]),
        lambda: _frames((2,), _SMALL),
    ),
    "mlp": (lambda: DqnMlpModel(5, 3), lambda: torch.randn(4, 5)),
    "mlp_duel": (lambda: DqnMlpModel(5, 3, dueling=True), lambda: torch.randn(4, 5)),
    "cat_mlp": (lambda: CatDqnMlpModel(5, 3, n_atoms=5), lambda: torch.randn(4, 5)),
    "cat_mlp_duel": (
        lambda: CatDqnMlpModel(5, 3, n_atoms=5, dueling=True),
        lambda: torch.randn(4, 5),
    ),
}


@pytest.mark.parametrize("name", list(_MODELS))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    make_model, make_obs = _MODELS[name]
    model, obs = make_model(), make_obs()
    out = model(obs, None, None)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        if pname.endswith("advantage_bias"):
            # Cancels in the centring by construction: zero up to rounding.
            assert p.grad.abs().max() < 1e-5, pname
        else:
            assert p.grad.abs().sum() > 0, pname


def test_maxpool_variant():
    conv = Conv2dModel(4, [32, 64, 64], [8, 4, 3], [4, 2, 1], [0, 1, 1], use_maxpool=True)
    convs = [m for m in conv.modules() if isinstance(m, nn.Conv2d)]
    pools = [m for m in conv.modules() if isinstance(m, nn.MaxPool2d)]
    assert [c.stride for c in convs] == [(1, 1)] * 3
    assert [p.kernel_size for p in pools] == [4, 2] and [p.stride for p in pools] == [4, 2]
    # 84 -8+1 = 77 -> pool 4 -> 19; 19 +2-4+1 = 18 -> pool 2 -> 9; 9 +2-3+1 = 9
    assert conv.conv_out_shape(84, 84) == (64, 9, 9)
    assert conv(torch.zeros(2, 4, 84, 84)).shape == (2, 64, 9, 9)
    # 104 -> 97 -> 24 -> 23 -> 11 -> 11;  80 -> 73 -> 18 -> 17 -> 8 -> 8
    assert conv.conv_out_shape(104, 80) == (64, 11, 8)
    assert conv(torch.zeros(1, 4, 104, 80)).shape == (1, 64, 11, 8)
    strided = Conv2dModel(4, [32, 64, 64], [8, 4, 3], [4, 2, 1], [0, 1, 1])
    assert strided.conv_out_size(84, 84) == 64 * 10 * 10
    assert strided.conv_out_size(104, 80) == 64 * 12 * 9
    model = AtariDqnModel((4, 84, 84), N_ACTIONS, use_maxpool=True)
    assert model.trunk.output_size == 64 * 9 * 9
    assert model(_frames((3, 2), (4, 84, 84)), None, None).shape == (3, 2, N_ACTIONS)


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: Conv2dModel(0, [8], [3], [1]), "in_channels"),
        (lambda: Conv2dModel(3, [8, 8], [3], [1, 1]), "kernel_sizes"),
        (lambda: Conv2dModel(3, [8], [3], [0]), "strides"),
        (lambda: Conv2dModel(3, [8], [3], [1], [-1]), "paddings"),
        (lambda: Conv2dModel(3, [], [], []), "channels"),
        (lambda: Conv2dHeadModel((3, 8), [8], [3], [1], [16]), "image_shape"),
        (lambda: Conv2dHeadModel((3, 8, 8), [8], [3], [1], [0]), "hidden_sizes"),
        (lambda: Conv2dHeadModel((3, 8, 8), [8], [3], [1], [16], 0), "output_size"),
        (lambda: AtariDqnModel((4, 6, 6), N_ACTIONS), "too small"),
        (lambda: AtariDqnModel((4, 84, 84), 0), "output_size"),
        (lambda: AtariDqnModel((4, 84, 84), N_ACTIONS, fc_sizes=0), "fc_sizes"),
        (lambda: AtariDqnModel((84, 84), N_ACTIONS), "image_shape"),
        (lambda: AtariCatDqnModel((4, 84, 84), N_ACTIONS, n_atoms=1), "n_atoms"),
        (lambda: AtariCatDqnModel((4, 84, 84), N_ACTIONS, strides=(4, 2)), "strides"),
        (lambda: DuelingHeadModel(10, [16], N_ACTIONS, grad_scale=0.0), "grad_scale"),
        (lambda: DuelingHeadModel(0, [16], N_ACTIONS), "input_size"),
        (lambda: DuelingHeadModel(10, [16], 0), "output_size"),
        (lambda: DistributionalHeadModel(10, [16], N_ACTIONS, 0), "n_atoms"),
        (lambda: DistributionalDuelingHeadModel(10, [16], 3, 5, float("nan")), "grad_scale"),
        (lambda: DqnMlpModel(0, N_ACTIONS), "observation_size"),
        (lambda: DqnMlpModel(5, N_ACTIONS, hidden_sizes=(64, -1)), "hidden_sizes"),
        (lambda: CatDqnMlpModel(5, N_ACTIONS, n_atoms=1, dueling=True), "n_atoms"),
    ],
)
def test_bad_arguments_raise(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_wrong_image_shape_at_forward_raises():
    model = AtariDqnModel((4, 84, 84), N_ACTIONS)
    with pytest.raises(ValueError, match="expected observation"):
        model(_frames((2,), (4, 80, 84)), None, None)
