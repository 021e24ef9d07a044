"""Count likelihoods for the native model's cell-level decoder (pure JAX).

:func:`nb_log_prob`
    Log-probability of counts under a negative binomial with mean ``mu`` and
    inverse dispersion ``theta`` (variance ``mu + mu**2 / theta``), the
    parameterisation scVI uses::

        log NB(x; mu, theta) = lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
                               + theta * log(theta / (theta + mu))
                               + x * log(mu / (theta + mu))

    Written with ``log(theta + mu)`` computed once and ``mu``/``theta`` floored
    at a tiny positive value, so zero counts with a tiny mean stay finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

__all__ = ["nb_log_prob"]

#: Floor on the mean and the inverse dispersion (keeps the logs finite).
_EPS = 1e-8


def nb_log_prob(x: jax.Array, mu: jax.Array, theta: jax.Array) -> jax.Array:
    """Elementwise negative-binomial log-probability of counts ``x``.

    Parameters
    ----------
    x
        Non-negative counts (float; whole numbers for a probability mass).
    mu
        Means, broadcastable to ``x``; > 0.
    theta
        Inverse dispersions, broadcastable to ``x``; > 0. ``theta -> inf``
        gives the Poisson distribution.

    Returns
    -------
    Array of the broadcast shape with ``log P(X = x)``.
    """
    x = jnp.asarray(x, jnp.float32)
    mu = jnp.maximum(jnp.asarray(mu, jnp.float32), _EPS)
    theta = jnp.maximum(jnp.asarray(theta, jnp.float32), _EPS)
    log_theta_mu = jnp.log(theta + mu)
    return (
        gammaln(x + theta)
        - gammaln(theta)
        - gammaln(x + 1.0)
        + theta * (jnp.log(theta) - log_theta_mu)
        + x * (jnp.log(mu) - log_theta_mu)
    )
