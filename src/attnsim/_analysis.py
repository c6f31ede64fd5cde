"""Diagnostics of the paper's theory, computed post hoc from a ``Result``.

Everything here reads the arrays a run recorded (per save time) and never steps
the model again. The quantities follow Sakamoto & Sato (ICML 2025):

- per-role attention mass, the argmax token and which noisy samples are fitted;
- ``frak_S_i = m_i (1 - m_i)`` summed over time (``Result.frak_cum``, exact over
  every step) and aggregated over the clean samples of each class and over the
  noisy samples;
- attention gaps ``Lambda_{i,t}`` (clean samples: relevant token over token t) and
  ``Gamma_{i,u}`` (noisy samples: the token aligned with the observed label over
  token u), and the growth function ``g(x) = 2x + 2 sinh(x - log T)``;
- the signal/noise decomposition of the effective query ``W^T p``;
- a regime classifier and first-passage times.

Functions that need the training tokens themselves (the noise vectors, the token
values) take a ``Data`` or regenerate it from ``result.config``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._data import ROLE_NAMES, ROLE_RELEVANT, ROLE_WEAK, ROLE_WEAK_OPPOSITE, Data, run_data
from ._datamodel import role_coefficients, signal_part
from ._validation import ConfigError

#: Returned by the first-passage functions when the event never happens within the run.
NEVER = -1

REGIMES = ("not overfitting", "benign overfitting", "harmful overfitting")


# --------------------------------------------------------------------- attention


def role_mass(result) -> np.ndarray:
    """Attention mass on each token role, per save time and sample.

    Returns
    -------
    ndarray, shape (S, n, 4)
        ``[..., r]`` is ``sum_{t: role_t = r} s_it`` for the roles in ``ROLE_NAMES`` order
        (R, W_{Y*}, W_{-Y*}, I); a role with no position gets 0. The last axis sums to 1.

    Examples
    --------
    >>> import attnsim
    >>> res = attnsim.simulate(attnsim.Config(d=30, n_test=0, steps=3))
    >>> role_mass(res)[0, 0].tolist()   # uniform attention at p0 = 0: 1/8, 1/8, 1/8, 5/8
    [0.125, 0.125, 0.125, 0.625]
    """
    roles = np.asarray(result.roles)
    out = np.zeros(result.attention.shape[:2] + (len(ROLE_NAMES),))
    for code in range(len(ROLE_NAMES)):
        out[..., code] = result.attention[..., roles == code].sum(axis=-1)
    return out


def argmax_token(result) -> np.ndarray:
    """Position of the token with the highest attention, shape (S, n), int64 (first on ties)."""
    return np.argmax(result.scores, axis=-1).astype(np.int64)


def fitted(result) -> np.ndarray:
    """Whether each training sample is classified as its observed label, shape (S, n), bool."""
    return np.asarray(result.margins) > 0


def noisy_fitted(result) -> np.ndarray:
    """Whether each noisy sample is fitted (its flipped label predicted), shape (S, n_noisy), bool.

    Columns follow ``np.flatnonzero(result.noisy)``.
    """
    return fitted(result)[:, np.asarray(result.noisy, dtype=bool)]


# --------------------------------------------------------------------- frak S


@dataclass(frozen=True)
class FrakSums:
    """Cumulative ``frak_S`` aggregated over groups of training samples.

    All arrays have shape (S,), indexed like ``result.steps``; ``frak_cum`` at
    step tau is ``sum_{tau' < tau} m_i(tau') (1 - m_i(tau'))``.

    Attributes
    ----------
    clean_pos, clean_neg : ndarray
        Sums over the clean samples whose true label is +1 / -1.
    noisy : ndarray
        Sum over the noisy samples.
    n_clean_pos, n_clean_neg, n_noisy : int
        Group sizes.
    """

    clean_pos: np.ndarray
    clean_neg: np.ndarray
    noisy: np.ndarray
    n_clean_pos: int
    n_clean_neg: int
    n_noisy: int

    @property
    def clean(self) -> np.ndarray:
        return self.clean_pos + self.clean_neg

    @property
    def clean_noisy_ratio(self) -> np.ndarray:
        """``sum_{i in C} / sum_{i in N}`` (NaN where undefined: no noisy sample or 0/0)."""
        return _ratio(self.clean, self.noisy)

    @property
    def clean_noisy_ratio_per_sample(self) -> np.ndarray:
        """The same ratio between per-sample means (independent of the group sizes)."""
        return _ratio(self.clean / max(self.n_clean_pos + self.n_clean_neg, 1),
                      self.noisy / self.n_noisy if self.n_noisy else np.full_like(self.noisy, np.nan))

    @property
    def class_balance(self) -> np.ndarray:
        """``mean_{i in C_+} / mean_{i in C_-}`` of the cumulative sums (1 = balanced classes)."""
        pos = self.clean_pos / self.n_clean_pos if self.n_clean_pos else np.full_like(self.clean_pos, np.nan)
        neg = self.clean_neg / self.n_clean_neg if self.n_clean_neg else np.full_like(self.clean_neg, np.nan)
        return _ratio(pos, neg)


def _ratio(a, b):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out


def frak_sums(result) -> FrakSums:
    """Aggregate ``result.frak_cum`` over clean samples of each class and over noisy samples.

    Examples
    --------
    >>> import attnsim
    >>> res = attnsim.simulate(attnsim.Config(d=30, n_test=0, steps=4))
    >>> fs = frak_sums(res)          # m = 1/8 for 4 steps: 4 * (1/8)(7/8) per sample
    >>> float(fs.noisy[1] / fs.n_noisy)
    0.109375
    """
    noisy = np.asarray(result.noisy, dtype=bool)
    true = np.asarray(result.y_true)
    cum = np.asarray(result.frak_cum)
    pos, neg = ~noisy & (true > 0), ~noisy & (true < 0)
    return FrakSums(
        clean_pos=cum[:, pos].sum(axis=1), clean_neg=cum[:, neg].sum(axis=1), noisy=cum[:, noisy].sum(axis=1),
        n_clean_pos=int(pos.sum()), n_clean_neg=int(neg.sum()), n_noisy=int(noisy.sum()),
    )


# --------------------------------------------------------------------- gaps


def growth(x, T):
    """The paper's growth function ``g(x) = 2x + 2 sinh(x - log T)``.

    If one token leads ``T`` others by ``x`` its probability ``s`` satisfies
    ``1 / (s (1 - s)) = g'(x)``, so under gradient flow ``g`` of a gap grows
    linearly in time and a gap ``x`` costs a time of order ``e^x``.
    """
    x = np.asarray(x, dtype=float)
    return 2.0 * x + 2.0 * np.sinh(x - np.log(T))


def token_values(data: Data, nu=None) -> np.ndarray:
    """Token values ``nu^T x_it``, shape (n, T), of the data's head or of ``nu`` (d,) if given:
    with a trained head (``trainable="p+nu"``, ``"Wp+nu"``) pass ``result.nu``, the final head."""
    return data.X @ (data.nu if nu is None else np.asarray(nu, dtype=float))


def anchor_tokens(result, values=None) -> np.ndarray:
    """The token each sample's gap is measured from, shape (n,), int64.

    Clean samples: the first relevant position (the token benign overfitting selects).
    Noisy samples: the token aligned with the observed label, ``argmax_t y_i nu^T x_it``
    when ``values`` (shape (n, T), see ``token_values``) are given, else the first
    ``W_{-Y*}`` position (``rho mu_{-y*}``, aligned with the flipped label by construction;
    isotropic noise can make another token more aligned at small ``||mu||``).
    """
    roles = np.asarray(result.roles)
    noisy = np.asarray(result.noisy, dtype=bool)
    relevant = np.flatnonzero(np.asarray(result.relevant))
    anchor = np.full(noisy.size, relevant[0], dtype=np.int64)
    if values is not None:
        values = np.asarray(values, dtype=float)
        if values.shape != result.scores.shape[1:]:
            raise ConfigError(f"values must have shape (n, T) = {result.scores.shape[1:]}; got {values.shape}")
        aligned = np.argmax(np.asarray(result.y)[:, None] * values, axis=1)
    else:
        opposite = np.flatnonzero(roles == ROLE_WEAK_OPPOSITE)
        aligned = np.full(noisy.size, opposite[0] if opposite.size else relevant[0], dtype=np.int64)
    anchor[noisy] = aligned[noisy]
    return anchor


def gaps(result, anchor=None) -> np.ndarray:
    """Attention-logit gaps of each sample's anchor token over every token.

    ``gap[k, i, t] = z_{i, a_i}(tau_k) - z_{i, t}(tau_k)``: ``Lambda_{i,t}`` for clean samples
    and ``Gamma_{i,t}`` for noisy samples; the anchor's own entry is NaN.

    Parameters
    ----------
    anchor : ndarray of int, shape (n,), optional
        Default ``anchor_tokens(result)``.

    Returns
    -------
    ndarray, shape (S, n, T)
    """
    z = np.asarray(result.scores)
    anchor = anchor_tokens(result) if anchor is None else np.asarray(anchor, dtype=np.int64)
    idx = np.arange(z.shape[1])
    out = z[:, idx, anchor][:, :, None] - z
    out[:, idx, anchor] = np.nan
    return out


def min_gap(result, anchor=None) -> np.ndarray:
    """Smallest gap of each sample's anchor over the other tokens, shape (S, n).

    Positive once the anchor token has the highest score.
    """
    return np.nanmin(gaps(result, anchor), axis=-1)


# --------------------------------------------------------------------- query decomposition


def token_noise(data: Data, rho: float) -> np.ndarray:
    """The noise vectors ``eps_it = x_it - (role signal)`` of the training tokens, shape (n, T, d).

    ``rho`` is the weak-token signal strength (``Config.rho``); it is not stored in ``Data``.
    """
    return data.X - signal_part(role_coefficients(data.roles, rho), data.y_true, data.mu_pos, data.mu_neg)


@dataclass(frozen=True)
class QueryDecomposition:
    """Least-squares coordinates of ``W^T p`` in the basis ``[mu_+, mu_-, eps_11, ..., eps_nT]``.

    ``W^T p = gamma_+ mu_+ / ||mu||^2 + gamma_- mu_- / ||mu||^2 + sum_it zeta_it eps_it / ||eps_it||^2
    + (orthogonal rest)``, the paper's signal-learning / noise-memorisation split.

    Attributes
    ----------
    signal : ndarray, shape (S, 2)
        ``gamma_+, gamma_-``.
    noise : ndarray, shape (S, n, T)
        ``zeta_it`` (memorisation coefficients).
    signal_norm, noise_norm : ndarray, shape (S,)
        Norms of the signal part and of the noise part of the projection.
    """

    signal: np.ndarray
    noise: np.ndarray
    signal_norm: np.ndarray
    noise_norm: np.ndarray


def noise_probes(config, data: Data | None = None) -> np.ndarray:
    """Probe matrix ``[mu_+, mu_-, eps_11, ..., eps_nT]``, shape (2 + n T, d) (what ``probes="noise"`` records)."""
    data = run_data(config) if data is None else data
    eps = token_noise(data, config.rho)
    return np.concatenate([data.mu_pos[None], data.mu_neg[None], eps.reshape(-1, data.X.shape[2])])


def decompose_query(result, data: Data | None = None) -> QueryDecomposition:
    """Signal/noise decomposition of the effective query ``W^T p`` at every save time.

    Needs a run recorded with ``simulate(config, probes="noise")`` (``result.query_probe``
    holds ``<W^T p, r>`` for ``r`` in ``noise_probes(config)``). ``data`` defaults to
    ``run_data(result.config)`` (an implicit run's coordinates: inner products are what matter).

    Raises
    ------
    ConfigError
        If the result was not recorded with the noise probes.
    """
    if result.config is None:
        raise ConfigError("decompose_query needs result.config; run it through simulate(config, probes='noise')")
    config = result.config
    n, T = result.scores.shape[1:]
    k = 2 + n * T
    if result.query_probe.shape[1] != k:
        raise ConfigError(
            f"decompose_query needs query_probe of width 2 + n T = {k}; got {result.query_probe.shape[1]}; "
            "record the run with simulate(config, probes='noise')"
        )
    data = run_data(config) if data is None else data
    basis = noise_probes(config, data)                       # (k, d)
    gram = basis @ basis.T
    coef = np.linalg.lstsq(gram, np.asarray(result.query_probe).T, rcond=None)[0].T   # (S, k)
    sig, noi = coef[:, :2], coef[:, 2:]
    sig_norm = np.sqrt(np.maximum(np.einsum("sa,ab,sb->s", sig, gram[:2, :2], sig), 0.0))
    noi_norm = np.sqrt(np.maximum(np.einsum("sa,ab,sb->s", noi, gram[2:, 2:], noi), 0.0))
    norms2 = np.diag(gram)
    return QueryDecomposition(
        signal=sig * norms2[:2], noise=(noi * norms2[2:]).reshape(-1, n, T),
        signal_norm=sig_norm, noise_norm=noi_norm,
    )


# --------------------------------------------------------------------- first passage


def first_passage(steps, values, level, *, above=True) -> int:
    """First save step at which ``values >= level`` (or ``<= level`` with ``above=False``).

    Resolution is that of the save times. Returns ``NEVER`` (-1) if it never happens;
    NaN values never count.

    Examples
    --------
    >>> first_passage([0, 10, 100], [0.5, 0.9, 1.0], 0.9)
    10
    >>> first_passage([0, 10, 100], [2.0, 1.0, 0.5], 0.1, above=False)
    -1
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        hit = values >= level if above else values <= level
    hit &= np.isfinite(values)
    return int(steps[np.argmax(hit)]) if hit.any() else NEVER


def time_to_fit_all(result) -> int:
    """First save step at which the training accuracy (observed labels) is 1."""
    return first_passage(result.steps, result.train_acc, 1.0)


def noisy_fit_times(result) -> np.ndarray:
    """First save step at which each noisy sample is fitted, shape (n_noisy,), int64 (``NEVER`` if not)."""
    fit = noisy_fitted(result)
    steps = np.asarray(result.steps, dtype=np.int64)
    out = np.full(fit.shape[1], NEVER, dtype=np.int64)
    ever = fit.any(axis=0)
    out[ever] = steps[np.argmax(fit[:, ever], axis=0)]
    return out


def time_to_test_acc(result, level) -> int:
    """First save step at which the test accuracy reaches ``level``."""
    return first_passage(result.steps, result.test_acc, level)


def time_to_test_loss(result, level) -> int:
    """First save step at which the test loss falls to ``level`` or below."""
    return first_passage(result.steps, result.test_loss, level, above=False)


# --------------------------------------------------------------------- regime


@dataclass(frozen=True)
class Regime:
    """Outcome of ``classify_regime``: ``name`` is one of ``REGIMES``; the rest is the evidence."""

    name: str
    train_acc: float
    test_acc: float
    noisy_fitted: float
    relevant_mass_clean: float

    def __str__(self):
        return self.name


def classify_regime(result, *, at=-1, benign_test_acc=0.95, fit_train_acc=1.0) -> Regime:
    """Classify a run as not overfitting, benign overfitting or harmful overfitting.

    Thresholds (read at save index ``at``, default the last):

    - **not overfitting**: training accuracy on the observed labels < ``fit_train_acc``
      (default 1.0, i.e. some noisy sample is not fitted);
    - **benign overfitting**: training accuracy >= ``fit_train_acc`` and clean test
      accuracy >= ``benign_test_acc`` (default 0.95);
    - **harmful overfitting**: training accuracy >= ``fit_train_acc`` and test accuracy
      < ``benign_test_acc``.

    The default 0.95 sits between the official step-1000 test accuracies of the
    balanced (0.996) and large-noise (0.867) presets (REFERENCE.md). Without a test
    set an overfitting run is classified by its clean samples' mean relevant mass
    (benign if >= 0.5). Accuracy-based, so it also applies away from the paper's
    mechanism; ``relevant_mass_clean`` reports whether clean samples select R.

    It classifies the state at that save only: for a run that stopped early (``result.status``
    other than "finished", e.g. diverged at step 1), the last save is an earlier state than the
    run asked for, and a sweep's index gives such a run no regime.

    Examples
    --------
    >>> import attnsim
    >>> res = attnsim.simulate(attnsim.Config(d=30, n_test=10, steps=2))
    >>> classify_regime(res).name in REGIMES
    True
    """
    train_acc = float(result.train_acc[at])
    test_acc = float(result.test_acc[at])
    noisy = np.asarray(result.noisy, dtype=bool)
    nf = float(result.train_acc_noisy[at]) if noisy.any() else float("nan")
    mass = float(np.mean(result.relevant_mass[at][~noisy])) if (~noisy).any() else float("nan")
    if train_acc < fit_train_acc:
        name = REGIMES[0]
    elif np.isfinite(test_acc):
        name = REGIMES[1] if test_acc >= benign_test_acc else REGIMES[2]
    else:
        name = REGIMES[1] if mass >= 0.5 else REGIMES[2]
    return Regime(name=name, train_acc=train_acc, test_acc=test_acc, noisy_fitted=nf, relevant_mass_clean=mass)


__all__ = [
    "FrakSums", "NEVER", "QueryDecomposition", "REGIMES", "Regime", "anchor_tokens", "argmax_token",
    "classify_regime", "decompose_query", "first_passage", "fitted", "frak_sums", "gaps", "growth", "min_gap",
    "noise_probes", "noisy_fit_times", "noisy_fitted", "role_mass", "time_to_fit_all", "time_to_test_acc",
    "time_to_test_loss", "token_noise", "token_values",
]
