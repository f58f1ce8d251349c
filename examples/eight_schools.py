"""Eight schools (non-centred) with NUTS: summary, trace plot and netCDF.

Run:  python examples/eight_schools.py [--quick] [--out DIR]
Writes DIR/eight_schools_trace.png and DIR/eight_schools.nc (default DIR: examples/output).
"""

import argparse
import pathlib

import arviz as az
import jax
import matplotlib
import numpy as np

import ppl
from ppl import dist

matplotlib.use("Agg")

SCHOOLS = [
    "Choate",
    "Deerfield",
    "Phillips Andover",
    "Phillips Exeter",
    "Hotchkiss",
    "Lawrenceville",
    "St. Paul's",
    "Mt. Hermon",
]
Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    with ppl.plate("school", len(sigma)):
        eta = ppl.sample("eta", dist.Normal(0.0, 1.0))
        theta = ppl.deterministic("theta", mu + tau * eta)
        ppl.sample("y", dist.Normal(theta, sigma), obs=y)


def main(quick: bool, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    warmup, draws = (200, 200) if quick else (1000, 1000)
    posterior = ppl.nuts(
        eight_schools,
        SIGMA,
        y=Y,
        key=jax.random.key(0),
        chains=4,
        warmup=warmup,
        draws=draws,
        target_accept=0.9,
    )
    ppc = ppl.predictive(eight_schools, posterior, SIGMA, key=jax.random.key(1))
    idata = posterior.to_arviz(posterior_predictive=ppc, coords={"school": SCHOOLS})
    print(az.summary(idata, var_names=["mu", "tau", "theta"]))
    print(az.loo(idata))
    az.plot_trace(idata, var_names=["mu", "tau"])
    matplotlib.pyplot.tight_layout()
    matplotlib.pyplot.savefig(out / "eight_schools_trace.png", dpi=80)
    ppl.save(idata, str(out / "eight_schools.nc"))
    print(f"wrote {out / 'eight_schools_trace.png'} and {out / 'eight_schools.nc'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run for CI")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/output"))
    options = parser.parse_args()
    main(options.quick, options.out)
