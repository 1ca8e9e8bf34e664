"""The learned stop rule's classifier: an L2 logistic regression saved as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from racer.policies.stop_model import StopModel


def _data(seed: int = 0, n: int = 400, f: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)) * np.arange(1, f + 1) + np.arange(f)
    x[:, -1] = rng.integers(0, 2, size=n)  # a binary feature, as most stop features are
    logit = 0.8 * x[:, 0] - 0.3 * x[:, 1] + 1.5 * x[:, -1] - 0.5
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(float)
    return x, y


def _sklearn(z: np.ndarray, y: np.ndarray, l2: float, weight=None) -> LogisticRegression:
    model = LogisticRegression(C=1.0 / l2, tol=1e-12, max_iter=10_000)
    return model.fit(z, y, sample_weight=weight)


@pytest.mark.parametrize("l2", [0.1, 1.0, 25.0])
def test_coefficients_equal_scikit_learns_with_the_same_penalty(l2):
    x, y = _data()
    model = StopModel.fit(x, y, l2=l2)
    # Standardised by the training mean and (population) standard deviation.
    np.testing.assert_allclose(model.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model.scale, x.std(axis=0), rtol=1e-12)
    reference = _sklearn((x - x.mean(axis=0)) / x.std(axis=0), y, l2)
    np.testing.assert_allclose(model.coef, reference.coef_[0], atol=1e-4)
    assert model.intercept == pytest.approx(reference.intercept_[0], abs=1e-4)
    np.testing.assert_allclose(
        model.predict_proba(x), reference.predict_proba((x - model.mean) / model.scale)[:, 1],
        atol=1e-5,
    )  # fmt: skip


def test_graded_targets_equal_the_weighted_expansion():
    # A target q in [0, 1] is the row counted q times right and 1 - q times wrong.
    x, _ = _data(seed=1)
    q = np.random.default_rng(2).random(x.shape[0])
    model = StopModel.fit(x, q, l2=1.0)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    doubled = np.vstack([z, z])
    labels = np.concatenate([np.ones_like(q), np.zeros_like(q)])
    reference = _sklearn(doubled, labels, 1.0, weight=np.concatenate([q, 1.0 - q]))
    np.testing.assert_allclose(model.coef, reference.coef_[0], atol=1e-4)
    assert model.intercept == pytest.approx(reference.intercept_[0], abs=1e-4)


def test_a_constant_feature_gets_no_weight_and_predicts_on_any_batch_shape():
    x, y = _data(seed=3)
    x[:, 2] = 7.0
    model = StopModel.fit(x, y, ("a", "b", "c", "d", "e"))
    assert model.scale[2] == 1.0 and model.coef[2] == 0.0
    batch = x[:12].reshape(3, 4, 5)
    np.testing.assert_array_equal(
        model.predict_proba(batch), model.predict_proba(x[:12]).reshape(3, 4)
    )
    with pytest.raises(ValueError, match="reads 5 features"):
        model.predict_proba(x[:, :4])


def test_constant_targets_give_a_shrunk_rate_without_coefficients():
    x, _ = _data(seed=4, n=9)
    model = StopModel.fit(x, np.ones(9))
    assert model.coef == (0.0,) * 5
    assert model.intercept == pytest.approx(np.log(9.5 / 0.5))


def test_json_round_trip_is_exact_and_other_versions_are_refused():
    x, y = _data(seed=5)
    model = StopModel.fit(x, y, tuple("vwxyz"), l2=2.0)
    restored = StopModel.from_state(json.loads(json.dumps(model.state())))
    assert restored == model and restored.digest == model.digest
    np.testing.assert_array_equal(restored.predict_proba(x), model.predict_proba(x))
    assert hash(restored) == hash(model)
    other = StopModel.fit(x, y, tuple("vwxyz"), l2=3.0)
    assert other.digest != model.digest
    state = model.state() | {"stop_model_format_version": 99}
    with pytest.raises(
        ValueError, match="format version 99; this version of racer reads version 1"
    ):
        StopModel.from_state(state)
    with pytest.raises(ValueError, match="one value per feature"):
        StopModel.from_state(model.state() | {"coef": [1.0]})


def test_bad_inputs_are_refused():
    x, y = _data(seed=6, n=20)
    with pytest.raises(ValueError, match="targets must lie in"):
        StopModel.fit(x, y * 2)
    with pytest.raises(ValueError, match="finite"):
        StopModel.fit(np.where(x > 3, np.nan, x), y)
    with pytest.raises(ValueError, match="feature names"):
        StopModel.fit(x, y, ("a",))
