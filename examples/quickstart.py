"""Calibrate a base router on RouterDC MMLU and route the test queries with a guarantee.

Run from the repository root, with the shared data beside it:
``python examples/quickstart.py``.
"""

from pathlib import Path

from racer import RACER, load_dataset, make_router, train_test_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "routerdc"


def main() -> None:
    train = load_dataset(DATA / "mmlu_train.json")
    pool = load_dataset(DATA / "mmlu_test.json")
    calibration, test = train_test_split(pool, test_size=0.5, random_state=0)

    router = make_router("logistic").fit(
        train.queries, train.labels, model_names=train.model_names
    )
    racer = RACER(alpha=0.1, delta=0.1)
    racer.fit(router.predict_proba(calibration.queries), calibration.labels)

    sets = racer.predict(router.predict_proba(test.queries))
    print(f"lambda = {racer.threshold_:.4f}, calibration risk {racer.empirical_risk_:.4f}, "
          f"bound {racer.risk_bound_:.4f} on n = {racer.n_calibration_}")
    print(f"test risk {racer.risk(router.predict_proba(test.queries), test.labels):.4f}, "
          f"mean set size {sets.sum(1).mean():.2f}, refusal rate {(~sets.any(1)).mean():.3f}")


if __name__ == "__main__":
    main()
