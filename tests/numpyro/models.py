"""NumPyro's own example models, written out as NumPyro users write them (``numpyro.*``
primitives, NumPy on data, ``scan``, ``obs_mask``, enumeration), with generated data.

Each entry of :data:`MODELS` is ``(model, args, kwargs)``; the data are drawn with a
fixed NumPy seed (the data are not what the tests vary; the sampler keys are).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan
from numpyro.contrib.funsor import config_enumerate

RNG = np.random.default_rng(20261201)


def ar2(y, T=None):
    """NumPyro's ``ar2`` example: an AR(2) process with ``scan``."""
    alpha_1 = numpyro.sample("alpha_1", dist.Normal(0.0, 1.0))
    alpha_2 = numpyro.sample("alpha_2", dist.Normal(0.0, 1.0))
    const = numpyro.sample("const", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))

    def transition(carry, y_t):
        y_1, y_2 = carry
        m_t = const + alpha_1 * y_1 + alpha_2 * y_2
        y_t = numpyro.sample("y", dist.Normal(m_t, sigma), obs=y_t)
        return (y_t, y_1), m_t

    scan(transition, (y[1], y[0]), y[2:] if T is None else None, length=T)


def _ar2_data(n=40):
    y = np.zeros(n)
    for t in range(2, n):
        y[t] = 0.2 + 0.6 * y[t - 1] - 0.3 * y[t - 2] + 0.5 * RNG.normal()
    return y.astype(np.float32)


def ucbadmit(dept, male, applications, admit=None):
    """NumPyro's ``ucbadmit`` example: the number of departments read with NumPy."""
    num_depts = len(np.unique(dept))
    a_bar = numpyro.sample("a_bar", dist.Normal(0, 4))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    b = numpyro.sample("b", dist.Normal(0, 1))
    with numpyro.plate("dept", num_depts):
        a = numpyro.sample("a", dist.Normal(a_bar, sigma))
    logits = a[dept] + b * male
    with numpyro.plate("obs", len(dept)):
        numpyro.sample("admit", dist.Binomial(applications, logits=logits), obs=admit)


def _ucb_data():
    dept = np.repeat(np.arange(6), 2)
    male = np.tile([1, 0], 6)
    applications = np.array([825, 108, 560, 25, 325, 593, 417, 375, 191, 393, 373, 341])
    admit = np.array([512, 89, 353, 17, 120, 202, 138, 131, 53, 94, 22, 24])
    return (dept, male, applications), {"admit": admit}


def impute(x, y):
    """The imputation notebook's pattern: missing responses marked by NaN and ``obs_mask``."""
    a = numpyro.sample("a", dist.Normal(0.0, 5.0))
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    with numpyro.plate("obs", len(x)):
        numpyro.sample("y", dist.Normal(a + b * x, 1.0), obs=y, obs_mask=~np.isnan(y))


def _impute_data(n=12, missing=(2, 7)):
    x = np.linspace(-1, 1, n).astype(np.float32)
    y = (0.5 + 1.5 * x + RNG.normal(size=n)).astype(np.float32)
    y[list(missing)] = np.nan
    return (x, y), {}


@config_enumerate
def gmm(y):
    """The Gaussian-mixture tutorial: the component of each point summed out."""
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    locs = numpyro.sample("locs", dist.Normal(jnp.array([-2.0, 2.0]), 2.0).to_event(1))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("data", len(y)):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("y", dist.Normal(locs[z], scale), obs=y)


def _gmm_data(n=20):
    z = RNG.random(n) < 0.4
    return (np.where(z, -2.0, 2.0) + 0.7 * RNG.normal(size=n)).astype(np.float32)


def mvn(y):
    """An observed site with an event shape: a correlated 3-vector per row."""
    mu = numpyro.sample("mu", dist.Normal(jnp.zeros(3), 3.0).to_event(1))
    chol = numpyro.sample("chol", dist.LKJCholesky(3, 2.0))
    sd = numpyro.sample("sd", dist.HalfNormal(jnp.ones(3)).to_event(1))
    with numpyro.plate("row", y.shape[0]):
        numpyro.sample("y", dist.MultivariateNormal(mu, scale_tril=sd[:, None] * chol), obs=y)


def dirichlet_obs(p):
    """An observed simplex per row (event shape (3,))."""
    concentration = numpyro.sample("concentration", dist.Gamma(2.0, 0.5).expand([3]).to_event(1))
    with numpyro.plate("row", p.shape[0]):
        numpyro.sample("p", dist.Dirichlet(concentration), obs=p)


def gp(x, y):
    """A GP likelihood: one observed site of event shape (n,)."""
    var = numpyro.sample("var", dist.LogNormal(0.0, 1.0))
    length = numpyro.sample("length", dist.LogNormal(0.0, 1.0))
    noise = numpyro.sample("noise", dist.LogNormal(-1.0, 1.0))
    k = var * jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / length**2) + (noise + 1e-5) * jnp.eye(len(x))
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(len(x)), covariance_matrix=k), obs=y)


def _gp_data(n=15):
    x = np.linspace(-2, 2, n).astype(np.float32)
    return (x, (np.sin(2 * x) + 0.2 * RNG.normal(size=n)).astype(np.float32)), {}


def positive_only(y):
    """Python control flow on data (``if y.sum() > 0``)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    if y.sum() > 0:
        mu = mu + 1.0
    with numpyro.plate("obs", len(y)):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


_Y_MVN = (RNG.normal(size=(25, 3)) @ np.array([[1.0, 0, 0], [0.6, 0.8, 0], [0.2, 0.3, 0.9]])).astype(
    np.float32
)
_P = RNG.dirichlet([2.0, 3.0, 4.0], size=20).astype(np.float32)

#: name -> (model, args, kwargs)
MODELS = {
    "ar2": (ar2, (_ar2_data(),), {}),
    "ucbadmit": (ucbadmit, *_ucb_data()),
    "impute": (impute, *_impute_data()),
    "gmm": (gmm, (_gmm_data(),), {}),
    "mvn": (mvn, (_Y_MVN,), {}),
    "dirichlet": (dirichlet_obs, (_P,), {}),
    "gp": (gp, *_gp_data()),
    "positive_only": (positive_only, (np.array([0.5, 1.5, 2.0], np.float32),), {}),
}
