"""How small is the eigenvalue the authors' PV finds along a direction its samples do not span?

    python experiments/pv_authors.py [--trials 200]

The authors' code fits sklearn's ``PCA()`` to a class's float32 logits. For n ≤ C samples it
keeps n components, and the last one is round-off. ``plugins/class_volume/__init__.py`` stands in
``ROUND_OFF`` × the class's largest eigenvalue for it; this script prints the spread of the real
ratio over random classes of n ≤ C samples, C = 10 and 100, so that the constant is a measured one.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    import sklearn
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    print(f"sklearn {sklearn.__version__}, numpy {np.__version__}")
    print("| C | n | ratio: 5 % | median | 95 % |")
    print("|---|---|---|---|---|")
    for c in (10, 100):
        for n in sorted({3, 5, c // 2, c}):
            ratios = []
            for _ in range(args.trials):
                x = rng.normal(size=(n, c)) * rng.uniform(0.3, 3.0, size=c) + rng.normal(size=c)
                ev = PCA().fit(x.astype(np.float32)).explained_variance_
                ratios.append(float(ev[-1] / ev[0]))
            lo, mid, hi = np.quantile(ratios, [0.05, 0.5, 0.95])
            print(f"| {c} | {n} | {lo:.1e} | {mid:.1e} | {hi:.1e} |")


if __name__ == "__main__":
    main()
