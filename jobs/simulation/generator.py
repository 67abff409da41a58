"""Synthetic card transactions with a known, readable fraud mechanism.

Every event is a pure function of (seed, event index). Randomness comes in
fixed blocks of BLOCK events, each drawn from its own generator seeded with
[seed, block], so a producer can start at any index and get exactly the events
a run from zero would have produced there, and drift can be keyed on the index.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from whystream.errors import WhystreamError

BLOCK = 1024  # events per random block; changing it changes every stream
_BLOCKS_PER_PASS = 64  # blocks simulated together; bounds memory on big samples

MERCHANT_CATEGORIES = (
    "grocery", "restaurant", "fuel", "retail", "electronics", "travel",
    "entertainment", "digital_goods", "health", "utilities", "gambling",
    "cash_withdrawal",
)
POS_ENTRY_MODES = ("chip", "contactless", "swipe", "keyed")
CARD_TYPES = ("debit", "credit", "prepaid")
COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "NG")
CHANNELS = ("pos", "ecom", "atm")


@dataclass(frozen=True)
class Feature:
    """One model input column: its name, kind, meaning and unit."""

    name: str
    kind: Literal["numeric", "categorical"]
    description: str
    unit: str


def _codes(names: Sequence[str]) -> str:
    return ", ".join(f"{i}={n}" for i, n in enumerate(names))


FEATURES: list[Feature] = [
    Feature("amount", "numeric", "transaction amount", "USD"),
    Feature("merchant_category", "categorical", f"merchant category ({_codes(MERCHANT_CATEGORIES)})", "code"),
    Feature("hour_of_day", "numeric", "local hour the transaction happened", "hour 0-23"),
    Feature("day_of_week", "categorical", "day of the week (0=Monday)", "code"),
    Feature("card_present", "numeric", "the physical card was read", "flag"),
    Feature("online", "numeric", "e-commerce transaction", "flag"),
    Feature("pos_entry_mode", "categorical", f"card read as ({_codes(POS_ENTRY_MODES)}); missing online", "code"),
    Feature("card_type", "categorical", f"card product ({_codes(CARD_TYPES)})", "code"),
    Feature("amount_to_avg_ratio", "numeric", "amount / avg_amount_30d; missing without 30-day history", "ratio"),
    Feature("avg_amount_30d", "numeric", "mean amount over 30 days; missing for accounts under a week old", "USD"),
    Feature("amount_sum_24h", "numeric", "total spent in the last 24 hours, this transaction included", "USD"),
    Feature("txn_count_1h", "numeric", "earlier transactions in the last hour", "count"),
    Feature("txn_count_24h", "numeric", "earlier transactions in the last 24 hours", "count"),
    Feature("distinct_merchants_24h", "numeric", "distinct merchants in the last 24 hours, this one included", "count"),
    Feature("declines_24h", "numeric", "declined attempts in the last 24 hours", "count"),
    Feature("time_since_last_txn_min", "numeric", "since the previous transaction; missing if none on record", "minutes"),
    Feature("distance_from_home_km", "numeric", "distance from home; online it is IP-based, sometimes missing", "km"),
    Feature("distance_from_last_txn_km", "numeric", "from the previous transaction; missing if none on record", "km"),
    Feature("country_mismatch", "numeric", "transaction country differs from the card's home country", "flag"),
    Feature("account_age_days", "numeric", "age of the account", "days"),
    Feature("card_age_days", "numeric", "age of this card", "days"),
    Feature("customer_age_years", "numeric", "cardholder's age; sometimes missing", "years"),
    Feature("credit_limit", "numeric", "credit limit; missing for debit and prepaid cards", "USD"),
    Feature("credit_utilisation", "numeric", "balance / credit limit; missing for debit and prepaid cards", "fraction"),
    Feature("chargebacks_90d", "numeric", "chargebacks on the account in the last 90 days", "count"),
    Feature("password_reset_7d", "numeric", "account password was reset in the last 7 days", "flag"),
    Feature("address_change_30d", "numeric", "billing address changed in the last 30 days", "flag"),
    Feature("email_domain_age_days", "numeric", "age of the e-mail's domain; missing when the lookup failed", "days"),
    Feature("new_device", "numeric", "device first seen on this account; online only", "flag"),
    Feature("device_age_days", "numeric", "time since the device was first seen anywhere; online only", "days"),
    Feature("ip_risk_score", "numeric", "IP reputation (proxy, hosting, abuse lists); online only", "score 0-100"),
    Feature("browser_language_mismatch", "numeric", "browser language unusual for the country; online only", "flag"),
    Feature("cvv_match", "numeric", "CVV supplied and correct; online only, missing when not supplied", "flag"),
    Feature("three_ds_authenticated", "numeric", "3-D Secure authentication passed; online only", "flag"),
    Feature("shipping_billing_mismatch", "numeric", "shipping differs from billing; online physical goods only", "flag"),
    Feature("recurring", "numeric", "subscription / recurring payment", "flag"),
    Feature("failed_pin_attempts", "numeric", "wrong PINs entered before this one; chip and ATM only", "count"),
    Feature("merchant_risk_score", "numeric", "merchant's historical fraud rate", "fraction"),
    Feature("merchant_age_days", "numeric", "time the merchant has been on the network", "days"),
]
FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
CATEGORICAL_FEATURES: list[str] = [f.name for f in FEATURES if f.kind == "categorical"]
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}

# Merchant-category mix per channel (rows: pos, ecom, atm), typical amount and fraud rate.
_MCC_BY_CHANNEL = np.array([
    [.25, .18, .12, .20, .05, .03, .07, .00, .06, .02, .02, .00],
    [.08, .08, .00, .25, .15, .12, .08, .15, .03, .04, .02, .00],
    [.00, .00, .00, .00, .00, .00, .00, .00, .00, .00, .00, 1.0],
])
_MCC_MEDIAN_USD = np.array([45, 30, 50, 60, 220, 350, 40, 12, 55, 85, 70, 100.0])
_MCC_FRAUD_RATE = np.array([.002, .002, .003, .004, .012, .010, .004, .015, .002, .002, .020, .006])
_COUNTRY_WEIGHTS = [.34, .14, .12, .10, .07, .07, .05, .05, .04, .02]
_HOUR_WEIGHTS = np.array([2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 9, 10, 11, 10, 9, 9, 10, 11, 11, 10, 8, 6, 4, 3.0])
_DAY_WEIGHTS = [14, 14, 14, 14, 15, 15, 14.0]

# Draws available per event (_simulate uses 44 and 13); new draws go at the end
# of _simulate so existing streams keep their values.
_N_UNIFORM = 48
_N_NORMAL = 16


@dataclass(frozen=True)
class DriftSpec:
    """Add `shift` (in the feature's own unit) to `feature` for events with index >= `start`."""

    feature: str
    shift: float
    start: int

    def __post_init__(self) -> None:
        if self.feature not in _COL:
            raise WhystreamError(f"unknown drift feature {self.feature!r}; {_suggest(self.feature)}")
        if _kind(self.feature) == "categorical":
            raise WhystreamError(f"cannot shift categorical feature {self.feature!r}; its values are codes")
        if not math.isfinite(self.shift):
            raise WhystreamError(f"drift shift for {self.feature!r} must be a finite number, not {self.shift}")
        if self.start < 0:
            raise WhystreamError(f"drift start index must be >= 0, not {self.start}")

    @classmethod
    def parse(cls, text: str) -> DriftSpec:
        """Parse `FEATURE:SHIFT@INDEX`, e.g. `distance_from_home_km:80@25000`."""
        form = "expected FEATURE:SHIFT@INDEX, e.g. distance_from_home_km:80@25000"
        feature, colon, rest = text.strip().partition(":")
        shift_text, at, start_text = rest.rpartition("@")
        if not (colon and at and feature):
            raise WhystreamError(f"bad drift spec {text!r}: {form}")
        feature = feature.strip()
        if feature not in _COL:
            raise WhystreamError(f"bad drift spec {text!r}: unknown feature {feature!r}; {_suggest(feature)} ({form})")
        try:
            shift, start = float(shift_text), int(start_text)
        except ValueError:
            raise WhystreamError(f"bad drift spec {text!r}: {form}") from None
        return cls(feature, shift, start)


def _kind(name: str) -> str:
    return FEATURES[_COL[name]].kind


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, FEATURE_NAMES, n=4, cutoff=0.5)
    if close:
        return "did you mean " + ", ".join(close) + "?"
    return "known features: " + ", ".join(FEATURE_NAMES)


@dataclass
class Batch:
    """A run of consecutive events: features, labels and segment attributes."""

    X: np.ndarray  # float64 [n, F]; NaN = missing
    y: np.ndarray  # int8 [n]; 1 = fraud
    country: np.ndarray  # str [n]; country the transaction happened in
    channel: np.ndarray  # str [n]; "pos", "ecom" or "atm"
    index: np.ndarray  # int64 [n]; event indices

    def __len__(self) -> int:
        return len(self.y)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# Chosen so that about 2% of events are fraud (see tests/jobs/simulation/test_generator.py).
_FRAUD_INTERCEPT = -6.5


def fraud_logit(X: np.ndarray) -> np.ndarray:
    """The true fraud log-odds of each row of X (columns as in FEATURE_NAMES).

    A hand-written logistic model, so explanations can be checked against it.
    Missing values count as the unremarkable case.
    """
    def f(name: str, fill: float = 0.0) -> np.ndarray:
        return np.nan_to_num(X[:, _COL[name]], nan=fill)

    big_amount = np.maximum(np.log(np.maximum(f("amount_to_avg_ratio", 1.0), 1e-9)), 0.0)
    return (
        _FRAUD_INTERCEPT
        + 0.6 * big_amount
        + 2.5 * f("new_device") * big_amount  # a large purchase from a device new to the account
        + 1.0 * f("online") * np.log1p(np.maximum(f("distance_from_home_km"), 0.0) / 50)  # ordered online from far away
        + 1.5 * np.minimum(f("failed_pin_attempts"), 3)
        + 1.7 * f("country_mismatch")
        + 3.0 * np.exp(-np.maximum(f("account_age_days", 1e4), 0.0) / 30)  # brand-new account
        + 0.08 * np.maximum(f("ip_risk_score") - 40, 0.0)
        + 0.5 * np.minimum(f("txn_count_1h"), 8)  # velocity
        + 2.5 * (1 - f("cvv_match", 1.0))
        + 2.5 * f("password_reset_7d") * f("new_device")  # account takeover
        + 0.8 * np.minimum(f("chargebacks_90d"), 3)
        + 1.4 * f("shipping_billing_mismatch")
        + 1.4 * (f("email_domain_age_days", 1e4) < 30)
        + 1.0 * (f("hour_of_day", 12) < 6)
        + 50.0 * f("merchant_risk_score")
        - 1.7 * f("three_ds_authenticated")
    )


class TransactionGenerator:
    """Deterministic card-transaction stream: event i depends only on (seed, i) and the drift."""

    def __init__(self, seed: int = 0, drift: Sequence[DriftSpec] = ()):
        self.seed = seed
        self.drift = tuple(drift)

    def sample(self, n: int, start: int = 0) -> Batch:
        """Events start .. start+n-1, drift applied, labels drawn from fraud_logit."""
        if n < 0 or start < 0:
            raise ValueError(f"need n >= 0 and start >= 0, got n={n}, start={start}")
        X = np.empty((n, len(FEATURES)))
        country, channel, label_u = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
        step = BLOCK * _BLOCKS_PER_PASS
        for lo in range(start - start % BLOCK, start + n, step):
            # This pass simulates events lo .. lo+step-1; keep the part we were asked for.
            a, b = max(lo, start), min(lo + step, start + n)
            blocks = range(lo // BLOCK, (b - 1) // BLOCK + 1)
            Xt, country_code, channel_code, label = self._blocks(blocks)
            out, got = slice(a - start, b - start), slice(a - lo, b - lo)
            X[out] = Xt[:, got].T
            country[out], channel[out], label_u[out] = country_code[got], channel_code[got], label[got]
        index = np.arange(start, start + n, dtype=np.int64)
        for spec in self.drift:
            X[index >= spec.start, _COL[spec.feature]] += spec.shift
        # Labels come after drift, so a shifted feature changes fraud the way the mechanism says.
        y = (label_u < _sigmoid(fraud_logit(X))).astype(np.int8)
        return Batch(X=X, y=y, country=np.asarray(COUNTRIES)[country],
                     channel=np.asarray(CHANNELS)[channel], index=index)

    def _blocks(self, blocks: range):
        U, Z = [], []
        for b in blocks:
            rng = np.random.default_rng([self.seed, b])
            U.append(rng.random((_N_UNIFORM, BLOCK)))
            Z.append(rng.standard_normal((_N_NORMAL, BLOCK)))
        return _simulate(np.concatenate(U, axis=1), np.concatenate(Z, axis=1))


def _choice(u: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Category index per row from one uniform draw per row."""
    cum = np.cumsum(weights) / np.sum(weights)
    return np.searchsorted(cum[:-1], u, side="right")


def _choice_rows(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Like _choice, with a probability row per event."""
    cum = np.cumsum(probs, axis=1)
    return (u[:, None] >= cum[:, :-1]).sum(axis=1)


def _counts(u: np.ndarray, mean: float | np.ndarray) -> np.ndarray:
    """Geometric counts with the given mean: overdispersed, like real activity counts."""
    return np.floor(np.log1p(-u) / np.log(mean / (1.0 + mean)))


def _exponential(u: np.ndarray, mean: float) -> np.ndarray:
    return -mean * np.log1p(-u)


def _simulate(U: np.ndarray, Z: np.ndarray):
    """Turn draws (one row per variable, one column per event) into events.

    Returns X transposed [F, n], country and channel codes, and the label's uniform.
    """
    us, zs = iter(U), iter(Z)
    u, z = lambda: next(us), lambda: next(zs)  # each call takes the next row of draws
    nan = np.nan

    label_u = u()
    channel = _choice(u(), [.62, .33, .05])
    pos, ecom, atm = channel == 0, channel == 1, channel == 2
    keyed = pos & (u() < 0.03)  # mail/phone orders keyed in at a terminal
    card_present = ~ecom & ~keyed
    mcc = _choice_rows(u(), _MCC_BY_CHANNEL[channel])
    entry = np.where(atm, 0, _choice(u(), [.45, .40, .15])).astype(float)
    entry[keyed] = 3
    entry[ecom] = nan

    spend_level = np.exp(0.45 * z())  # how big a spender the cardholder is
    amount = _MCC_MEDIAN_USD[mcc] * spend_level * np.exp(0.8 * z())
    amount = np.where(atm, np.maximum(20, np.round(amount / 20) * 20), np.round(amount, 2))

    young = u() < 0.03
    account_age = np.floor(np.where(young, 30 * u(), np.clip(900 * np.exp(1.1 * z()), 30, 7300)))
    card_age = np.minimum(account_age, np.floor(500 * np.exp(z())))
    avg_30d = np.where(account_age < 7, nan, np.round(60 * spend_level * np.exp(0.2 * z()), 2))

    count_1h = _counts(u(), 0.25)
    count_24h = count_1h + _counts(u(), 2.5)
    no_history = (count_24h == 0) & (u() < 0.05)
    since_last = np.where(count_1h > 0, 60 * u(), 60 + _exponential(u(), 900))
    since_last = np.where(no_history, nan, np.round(since_last, 1))
    from_last = np.where(no_history, nan, np.round(3 * np.exp(1.6 * z()), 1))
    sum_24h = np.round(amount + count_24h * 60 * spend_level * np.exp(0.3 * z()), 2)
    merchants_24h = 1 + np.floor((count_24h + 1) * u())
    merchants_24h = np.minimum(merchants_24h, count_24h + 1)

    home = _choice(u(), _COUNTRY_WEIGHTS)
    mismatch = u() < np.where(ecom, 0.08, np.where(atm, 0.03, 0.04))
    txn_country = np.where(mismatch, (home + 1 + np.floor(9 * u()).astype(int)) % len(COUNTRIES), home)
    from_home = 8 * np.exp(1.3 * z()) + mismatch * (300 + 8000 * u() ** 2)
    from_home = np.where(ecom & (u() < 0.10), nan, np.round(from_home, 1))

    card_type = _choice(u(), [.55, .40, .05])
    credit = card_type == 1
    credit_limit = np.where(credit, np.maximum(500, np.round(5000 * np.exp(0.7 * z()), -2)), nan)
    utilisation = np.where(credit, np.round(u() ** 1.5, 3), nan)
    customer_age = np.where(u() < 0.10, nan, np.clip(np.round(44 + 15 * z()), 18, 95))
    email_age = np.where(u() < 0.04, _exponential(u(), 60), np.minimum(4000 * np.exp(0.6 * z()), 14000))
    email_age = np.where(u() < 0.06, nan, np.floor(email_age))

    # Device signals only exist online, and not when fingerprinting failed.
    fingerprint = ecom & (u() >= 0.08)
    new_device = u() < 0.07
    device_age = np.floor(np.where(new_device, _exponential(u(), 3), _exponential(u(), 500)))
    ip_risk = np.where(u() < 0.04, 60 + 40 * u(), 50 * u() ** 2.5)
    shipped = ecom & (mcc != MERCHANT_CATEGORIES.index("digital_goods"))
    pin_prompted = card_present & (entry == 0)

    def only(mask, values):
        return np.where(mask, values, nan)

    cols = {
        "amount": amount,
        "merchant_category": mcc,
        "hour_of_day": _choice(u(), _HOUR_WEIGHTS),
        "day_of_week": _choice(u(), _DAY_WEIGHTS),
        "card_present": card_present,
        "online": ecom,
        "pos_entry_mode": entry,
        "card_type": card_type,
        "amount_to_avg_ratio": np.round(amount / avg_30d, 4),
        "avg_amount_30d": avg_30d,
        "amount_sum_24h": sum_24h,
        "txn_count_1h": count_1h,
        "txn_count_24h": count_24h,
        "distinct_merchants_24h": merchants_24h,
        "declines_24h": _counts(u(), 0.08),
        "time_since_last_txn_min": since_last,
        "distance_from_home_km": from_home,
        "distance_from_last_txn_km": from_last,
        "country_mismatch": mismatch,
        "account_age_days": account_age,
        "card_age_days": card_age,
        "customer_age_years": customer_age,
        "credit_limit": credit_limit,
        "credit_utilisation": utilisation,
        "chargebacks_90d": _counts(u(), 0.03),
        "password_reset_7d": u() < 0.01,
        "address_change_30d": u() < 0.02,
        "email_domain_age_days": email_age,
        "new_device": only(fingerprint, new_device),
        "device_age_days": only(fingerprint, device_age),
        "ip_risk_score": only(ecom, np.round(ip_risk, 1)),
        "browser_language_mismatch": only(fingerprint, u() < 0.05),
        "cvv_match": only(ecom & (u() >= 0.05), u() < 0.985),
        "three_ds_authenticated": only(ecom, u() < 0.45),
        "shipping_billing_mismatch": only(shipped, u() < 0.10),
        "recurring": ecom & (u() < 0.12),
        "failed_pin_attempts": only(pin_prompted, _counts(u(), 0.04)),
        "merchant_risk_score": np.round(np.clip(_MCC_FRAUD_RATE[mcc] * np.exp(0.5 * z()), 0, 1), 5),
        "merchant_age_days": np.clip(np.floor(2000 * np.exp(z())), 1, 15000),
    }
    assert list(cols) == FEATURE_NAMES
    Xt = np.stack([np.asarray(v, dtype=float) for v in cols.values()])
    return Xt, txn_country, channel, label_u
