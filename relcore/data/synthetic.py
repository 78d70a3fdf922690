"""A deterministic synthetic temporal relational database ("rel-synthetic").

The generator is fully vectorised (numpy/pandas, no Python loop over rows), so it
serves both as a few-hundred-row fixture for fast tests and as a multi-million-row
database for scale runs. The same ``(num_rows, seed)`` always yields identical
tables.

Schema (primary keys are 0..n-1; ``->`` is a foreign key; ``?`` marks nullable)
------------------------------------------------------------------------------
* ``customers`` (dimension, no time column): ``customer_id``, ``age``? (float),
  ``region`` (categorical), ``loyalty_tier`` (categorical), ``signup_time``
  (timestamp), ``bio``? (free text), ``home_store_id``? -> stores.
* ``products`` (dimension): ``product_id``, ``category``, ``brand``
  (categorical), ``price`` (numerical), ``weight_kg``? (numerical),
  ``description``? (free text). Each product also has a hidden latent
  *quality* that is NOT stored as a column.
* ``stores`` (dimension): ``store_id``, ``city`` (categorical), ``size_sqm``
  (numerical), ``opened_time`` (timestamp), ``manager_id``? -> customers.
  Together with ``customers.home_store_id`` this forms the schema cycle
  customers -> stores -> customers.
* ``orders`` (event, time column ``order_time``): ``order_id``,
  ``customer_id`` -> customers, ``store_id``? -> stores (null for online
  orders), ``channel`` (categorical), ``payment``? (categorical).
* ``order_items`` (event, time column ``item_time`` = the order's time):
  ``item_id``, ``order_id`` -> orders, ``product_id`` -> products,
  ``quantity`` (small int), ``unit_price`` (numerical).
* ``reviews`` (event, time column ``review_time``): ``review_id``,
  ``customer_id`` -> customers, ``product_id`` -> products, ``rating``
  (1..5), ``text``? (free text).

Timestamps span 2015-01-01 .. 2024-12-31; ``val_timestamp`` is 2023-01-01 and
``test_timestamp`` is 2024-01-01.

Why the labels are multi-hop
----------------------------
Every customer has a hidden *taste*; when they order, each item's product is
drawn from the quality ranking around that taste, so good-taste customers buy
good products. After each order the customer churns (never orders again) with a
probability that rises steeply as the mean quality of that order's products
falls, and review ratings rise with the reviewed product's quality. Neither
taste nor quality is stored. Quality is visible only through product features
(brand, price relative to category, description wording) and through the
ratings that *other* customers give the product. So the churn and rating labels
of a customer are predicted by customer -> orders -> order_items -> products
(-> reviews) aggregates, while the customer row itself (age, region, tier,
bio) is independent of taste; only tenure (signup time relative to the
prediction time) is weakly informative, through survivorship.
"""

from __future__ import annotations

from functools import reduce

import duckdb
import numpy as np
import pandas as pd
import relbench.datasets
import relbench.tasks
from relbench.base import Database, Dataset, EntityTask, Table, TaskType
from relbench.metrics import accuracy, average_precision, f1, mae, r2, rmse, roc_auc
from scipy.special import expit, ndtr, ndtri

from relcore.errors import RelcoreError

__all__ = [
    "SyntheticDataset",
    "CustomerChurnTask",
    "CustomerRatingTask",
    "SYNTHETIC_TASKS",
]

_START = pd.Timestamp("2015-01-01")
_END = pd.Timestamp("2024-12-31")
_DAY_NS = 86_400 * 10**9

# Row shares of the dimension tables; the rest of the budget goes to customers
# and their events. _ROWS_PER_CUSTOMER is the measured average number of rows a
# customer brings (itself + orders + items + reviews) with the constants below.
# We simulate _OVERSAMPLE times that many customers (plus a few, because one
# long-lived customer can bring hundreds of rows) and keep the shortest prefix
# of customers that fills the budget, so small databases hit their size too.
_PRODUCT_SHARE = 0.02
_STORE_SHARE = 0.002
_ROWS_PER_CUSTOMER = 26.9
_OVERSAMPLE = 1.2
_EXTRA_CUSTOMERS = 25

# Behavioural constants (see the module docstring).
_TASTE_CORR = 0.8  # how tightly product choice follows taste
_CHURN_BASE = -2.0  # logit of churning after an order of average quality
_CHURN_SLOPE = -2.0  # extra logit per unit of order quality
_MEAN_GAP_DAYS = 60.0  # typical gap between a customer's orders
_REVIEW_PROB = 0.3

_REGIONS = np.array(["north", "south", "east", "west", "central"], dtype=object)
_TIERS = np.array(["bronze", "silver", "gold"], dtype=object)
_CITIES = np.array(
    ["Avalon", "Brookfield", "Cedar Falls", "Dunmore", "Eastwick", "Fairview"],
    dtype=object,
)
_CATEGORIES = np.array(
    ["books", "toys", "garden", "kitchen", "sports", "beauty", "tools", "music"],
    dtype=object,
)
_CATEGORY_NOUNS = np.array(
    ["novel", "puzzle", "planter", "pan", "racket", "lotion", "drill", "speaker"],
    dtype=object,
)
_CHANNELS = np.array(["store", "web", "app"], dtype=object)
_PAYMENTS = np.array(["card", "cash", "voucher", "paypal"], dtype=object)

_BIO_TRAITS = np.array(
    "busy curious friendly quiet thrifty sporty artistic practical cheerful "
    "careful adventurous relaxed ambitious patient witty".split(),
    dtype=object,
)
_BIO_ROLES = np.array(
    "teacher nurse engineer student chef farmer designer driver writer "
    "musician parent retiree baker coach pilot".split(),
    dtype=object,
)
_BIO_HOBBIES = np.array(
    "hiking cooking reading gaming cycling gardening painting fishing "
    "knitting running baking chess yoga travel photography camping".split(),
    dtype=object,
)
_GOOD_ADJ = np.array(
    "premium durable sturdy elegant reliable handcrafted superb refined".split(),
    dtype=object,
)
_BAD_ADJ = np.array(
    "basic flimsy cheap plain lightweight budget simple generic".split(), dtype=object
)
_MATERIALS = np.array(
    "wooden steel plastic ceramic cotton leather glass bamboo".split(), dtype=object
)
_FEATURES = np.array(
    "warranty gift-box spare-parts manual travel-case cleaning-kit "
    "stickers charger refill strap".split(),
    dtype=object,
)
_SENTIMENT = {
    1: "terrible awful useless broken disappointing".split(),
    2: "poor mediocre weak unreliable underwhelming".split(),
    3: "okay decent average acceptable fair".split(),
    4: "good solid nice pleasant handy".split(),
    5: "excellent fantastic perfect outstanding brilliant".split(),
}
_REVIEW_CLOSERS = np.array(
    "would-buy-again returned-it as-described arrived-late fast-delivery "
    "for-my-kids as-a-gift daily-use weekend-use".split(),
    dtype=object,
)


def _pick(rng: np.random.Generator, vocab: np.ndarray, n: int) -> np.ndarray:
    """Draw ``n`` words from ``vocab`` (an object array) uniformly."""
    return vocab[rng.integers(0, len(vocab), n)]


def _join(*parts: np.ndarray | str) -> np.ndarray:
    """Join object arrays (or constant strings) element-wise with spaces."""
    return reduce(lambda a, b: a + " " + b, parts)


def _null_out(values: np.ndarray, rng: np.random.Generator, frac: float) -> np.ndarray:
    """Return an object copy of ``values`` with a random ``frac`` set to None."""
    out = values.astype(object)
    out[rng.random(len(out)) < frac] = None
    return out


def _days_to_ts(days: np.ndarray) -> np.ndarray:
    """Days since _START (float) -> datetime64[ns], rounded to whole seconds."""
    secs = np.round(days * 86_400.0).astype(np.int64)
    return (_START.value + secs * 10**9).astype("datetime64[ns]")


def _segment_starts(counts: np.ndarray) -> np.ndarray:
    """Start offsets of consecutive segments of the given lengths."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


class SyntheticDataset(Dataset):
    """Deterministic synthetic retail database with a hidden multi-hop signal.

    Args:
        num_rows: Approximate total number of rows over all tables
            (supported range about 300 .. 5,000,000).
        seed: Random seed; equal ``(num_rows, seed)`` give identical tables.
        cache_dir: Optional relbench cache directory for the built database.
    """

    val_timestamp = pd.Timestamp("2023-01-01")
    test_timestamp = pd.Timestamp("2024-01-01")

    def __init__(
        self, num_rows: int = 5_000, seed: int = 0, cache_dir: str | None = None
    ) -> None:
        if num_rows < 1:
            raise RelcoreError(f"synthetic dataset needs num_rows >= 1, got {num_rows}")
        self.num_rows = int(num_rows)
        self.seed = int(seed)
        super().__init__(cache_dir=cache_dir)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_rows={self.num_rows}, seed={self.seed})"

    def budget(self) -> tuple[int, int, int]:
        """Return (rows for customers and their events, num_products, num_stores)."""
        n = self.num_rows
        num_products = max(8, round(n * _PRODUCT_SHARE))
        num_stores = max(3, round(n * _STORE_SHARE))
        return max(1, n - num_products - num_stores), num_products, num_stores

    def make_db(self) -> Database:
        """Generate all tables (primary keys 0..n-1, event tables time-sorted)."""
        rng = np.random.default_rng(self.seed)
        customer_rows, num_products, num_stores = self.budget()
        num_simulated = int(np.ceil(customer_rows / _ROWS_PER_CUSTOMER * _OVERSAMPLE))
        num_simulated += _EXTRA_CUSTOMERS

        taste = rng.standard_normal(num_simulated)  # hidden
        customers = _make_customers(rng, num_simulated, num_stores)
        products, quality = _make_products(rng, num_products)
        orders, items = _make_orders_and_items(
            rng, customers, products, quality, taste, num_stores
        )
        reviews = _make_reviews(rng, items, orders, products, quality)
        customers, orders, items, reviews = _trim_to_budget(
            customer_rows, customers, orders, items, reviews
        )
        # Stores come last: their managers must be among the kept customers.
        stores = _make_stores(rng, num_stores, len(customers))

        return Database(
            {
                "customers": Table(
                    customers,
                    {"home_store_id": "stores"},
                    pkey_col="customer_id",
                ),
                "products": Table(products, {}, pkey_col="product_id"),
                "stores": Table(stores, {"manager_id": "customers"}, pkey_col="store_id"),
                "orders": Table(
                    orders,
                    {"customer_id": "customers", "store_id": "stores"},
                    pkey_col="order_id",
                    time_col="order_time",
                ),
                "order_items": Table(
                    items,
                    {"order_id": "orders", "product_id": "products"},
                    pkey_col="item_id",
                    time_col="item_time",
                ),
                "reviews": Table(
                    reviews,
                    {"customer_id": "customers", "product_id": "products"},
                    pkey_col="review_id",
                    time_col="review_time",
                ),
            }
        )


def _renumber(mask: np.ndarray) -> np.ndarray:
    """Old row index -> new index among the rows ``mask`` keeps (-1 if dropped)."""
    return np.where(mask, np.cumsum(mask) - 1, -1)


def _trim_to_budget(
    budget: int,
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    items: pd.DataFrame,
    reviews: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Keep the shortest prefix of customers whose rows (own + events) fill
    ``budget``; drop the rest with their events and renumber the keys."""
    num = len(customers)
    order_cust = orders["customer_id"].to_numpy()
    rows = (
        1
        + np.bincount(order_cust, minlength=num)
        + np.bincount(order_cust[items["order_id"].to_numpy()], minlength=num)
        + np.bincount(reviews["customer_id"].to_numpy(), minlength=num)
    )
    keep = min(int(np.searchsorted(np.cumsum(rows), budget)) + 1, num)

    order_mask = order_cust < keep
    new_order = _renumber(order_mask)
    item_order = items["order_id"].to_numpy()
    items = items[order_mask[item_order]].reset_index(drop=True)
    items["item_id"] = np.arange(len(items), dtype=np.int64)
    items["order_id"] = new_order[items["order_id"].to_numpy()]
    orders = orders[order_mask].reset_index(drop=True)
    orders["order_id"] = np.arange(len(orders), dtype=np.int64)
    reviews = reviews[reviews["customer_id"].to_numpy() < keep].reset_index(drop=True)
    reviews["review_id"] = np.arange(len(reviews), dtype=np.int64)
    return customers.iloc[:keep].copy(), orders, items, reviews


def _make_customers(
    rng: np.random.Generator, n: int, num_stores: int
) -> pd.DataFrame:
    """Customers; all columns are independent of the hidden taste on purpose."""
    # Signups run until mid-2024 so that customers are active in val and test.
    signup_days = rng.uniform(0, (pd.Timestamp("2024-06-30") - _START).days, n)
    age = np.round(rng.normal(42, 13, n).clip(18, 90))
    age[rng.random(n) < 0.06] = np.nan
    # Enough word combinations (~10^6) that bios stay free text, not categories,
    # even with millions of customers.
    bio = _join(
        _pick(rng, _BIO_TRAITS, n),
        _pick(rng, _BIO_TRAITS, n),
        _pick(rng, _BIO_ROLES, n),
        "who enjoys",
        _pick(rng, _BIO_HOBBIES, n),
        "and",
        _pick(rng, _BIO_HOBBIES, n),
    )
    home = pd.array(rng.integers(0, num_stores, n), dtype="Int64")
    home[rng.random(n) < 0.15] = pd.NA
    return pd.DataFrame(
        {
            "customer_id": np.arange(n, dtype=np.int64),
            "age": age,
            "region": _pick(rng, _REGIONS, n),
            "loyalty_tier": _TIERS[rng.choice(3, n, p=[0.6, 0.3, 0.1])],
            "signup_time": _days_to_ts(signup_days),
            "bio": _null_out(bio, rng, 0.12),
            "home_store_id": home,
        }
    )


def _make_products(
    rng: np.random.Generator, n: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Products plus their hidden quality (returned separately, never stored)."""
    noise = rng.standard_normal(n)
    # Up to 20 brands, but few enough that each has several products, so the
    # column reads as categorical (not free text) even in small databases.
    num_brands = int(np.clip(n // 12, 2, 20))
    brand_effect = rng.normal(0, 1, num_brands)
    brand = rng.integers(0, num_brands, n)
    # Brand explains part of the quality so that the brand column carries signal.
    raw = 0.6 * brand_effect[brand] + 0.8 * noise
    # Rank-normalise to an exact standard normal marginal: otherwise the random
    # brand effects shift the overall quality level, and with it churn and the
    # number of rows, from seed to seed.
    ranks = np.argsort(np.argsort(raw, kind="stable"), kind="stable")
    quality = ndtri((ranks + 0.5) / n)
    cat = rng.integers(0, len(_CATEGORIES), n)
    cat_base = np.linspace(1.5, 4.0, len(_CATEGORIES))
    # Within a category, better products cost more.
    price = np.round(np.exp(cat_base[cat] + 0.5 * quality + 0.25 * rng.standard_normal(n)), 2)
    weight = np.round(rng.lognormal(0, 0.8, n), 3)
    weight[rng.random(n) < 0.08] = np.nan
    good_word = rng.random(n) < expit(1.5 * quality)
    adjective = np.where(good_word, _pick(rng, _GOOD_ADJ, n), _pick(rng, _BAD_ADJ, n))
    description = _join(
        adjective,
        _pick(rng, _MATERIALS, n),
        _CATEGORY_NOUNS[cat],
        "for",
        _pick(rng, _BIO_HOBBIES, n),
        "with",
        _pick(rng, _FEATURES, n),
        "and",
        _pick(rng, _FEATURES, n),
    )
    products = pd.DataFrame(
        {
            "product_id": np.arange(n, dtype=np.int64),
            "category": _CATEGORIES[cat],
            "brand": np.char.add("brand_", brand.astype(str)).astype(object),
            "price": price,
            "weight_kg": weight,
            "description": _null_out(description, rng, 0.05),
        }
    )
    return products, quality


def _make_stores(rng: np.random.Generator, n: int, num_customers: int) -> pd.DataFrame:
    """Stores; ``manager_id`` closes the customers <-> stores schema cycle."""
    manager = pd.array(rng.integers(0, num_customers, n), dtype="Int64")
    manager[rng.random(n) < 0.1] = pd.NA
    return pd.DataFrame(
        {
            "store_id": np.arange(n, dtype=np.int64),
            "city": _pick(rng, _CITIES, n),
            "size_sqm": np.round(rng.lognormal(6.5, 0.5, n), 1),
            "opened_time": _days_to_ts(rng.uniform(-3650, 0, n)),
            "manager_id": manager,
        }
    )


def _choose_products(
    rng: np.random.Generator, taste_per_item: np.ndarray, quality: np.ndarray
) -> np.ndarray:
    """Pick one product per item near the customer's taste in the quality ranking."""
    by_quality = np.argsort(quality, kind="stable")
    z = _TASTE_CORR * taste_per_item + np.sqrt(1 - _TASTE_CORR**2) * rng.standard_normal(
        len(taste_per_item)
    )
    rank = np.minimum((ndtr(z) * len(quality)).astype(np.int64), len(quality) - 1)
    return by_quality[rank]


def _candidate_orders(
    rng: np.random.Generator, signup_days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All orders each customer would place if they never churned.

    Returns (customer index, order day) sorted by customer then time.
    """
    horizon = float((_END - _START).days)
    gap_mean = rng.lognormal(np.log(_MEAN_GAP_DAYS), 0.35, len(signup_days))
    span = horizon - signup_days
    # Enough candidates to reach the horizon in almost all cases (gaps are
    # Gamma(4), i.e. fairly regular); anything past the horizon is dropped.
    counts = np.ceil(span / gap_mean * 1.25 + 2).astype(np.int64)
    cust = np.repeat(np.arange(len(signup_days)), counts)
    gaps = rng.gamma(4.0, gap_mean[cust] / 4.0)
    csum = np.cumsum(gaps)
    starts = _segment_starts(counts)
    seg_base = csum[starts] - gaps[starts]  # cumsum just before each segment
    day = signup_days[cust] + csum - np.repeat(seg_base, counts)
    keep = day <= horizon
    return cust[keep], day[keep]


def _make_orders_and_items(
    rng: np.random.Generator,
    customers: pd.DataFrame,
    products: pd.DataFrame,
    quality: np.ndarray,
    taste: np.ndarray,
    num_stores: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate orders/items, truncating each customer after their churn order."""
    signup_days = (
        customers["signup_time"].to_numpy().astype(np.int64) - _START.value
    ) / _DAY_NS
    cust, day = _candidate_orders(rng, signup_days)
    num_cand = len(cust)

    # Items of every candidate order, products chosen by the customer's taste.
    n_items = 1 + rng.poisson(0.6, num_cand)
    item_order = np.repeat(np.arange(num_cand), n_items)
    item_product = _choose_products(rng, taste[cust[item_order]], quality)

    # Churn: after each order, leave with a probability driven by the mean
    # quality of that order's products. Orders after the first churn are dropped.
    order_quality = np.bincount(item_order, quality[item_product], num_cand) / n_items
    churns = rng.random(num_cand) < expit(_CHURN_BASE + _CHURN_SLOPE * order_quality)
    cum = np.cumsum(churns)
    counts = np.bincount(cust, minlength=len(taste))
    starts = _segment_starts(counts)[cust]
    churns_before = cum - churns - (cum[starts] - churns[starts])
    kept = np.flatnonzero(churns_before == 0)

    orders = _order_frame(rng, customers, cust[kept], day[kept], num_stores)
    # Map candidate index -> new order_id (orders are re-sorted by time).
    new_id = np.full(num_cand, -1, dtype=np.int64)
    new_id[kept[orders.pop("_cand").to_numpy()]] = np.arange(len(orders))
    item_mask = new_id[item_order] >= 0
    items = _item_frame(
        rng, new_id[item_order[item_mask]], item_product[item_mask], orders, products
    )
    return orders, items


def _order_frame(
    rng: np.random.Generator,
    customers: pd.DataFrame,
    cust: np.ndarray,
    day: np.ndarray,
    num_stores: int,
) -> pd.DataFrame:
    """Build the time-sorted orders table (with a temporary ``_cand`` column)."""
    n = len(cust)
    perm = np.argsort(day, kind="stable")
    cust, day = cust[perm], day[perm]
    channel = _CHANNELS[rng.choice(3, n, p=[0.55, 0.3, 0.15])]
    in_store = channel == "store"
    home = customers["home_store_id"].to_numpy(dtype=np.float64, na_value=np.nan)[cust]
    random_store = rng.integers(0, num_stores, n).astype(np.float64)
    # Customers mostly shop at their home store; online orders have no store.
    use_home = ~np.isnan(home) & (rng.random(n) < 0.8)
    store = np.where(use_home, home, random_store)
    store[~in_store] = np.nan
    payment = _null_out(_PAYMENTS[rng.choice(4, n, p=[0.6, 0.15, 0.1, 0.15])], rng, 0.05)
    return pd.DataFrame(
        {
            "order_id": np.arange(n, dtype=np.int64),
            "customer_id": cust.astype(np.int64),
            "store_id": pd.array(store, dtype="Int64"),
            "order_time": _days_to_ts(day),
            "channel": channel,
            "payment": payment,
            "_cand": perm,
        }
    )


def _item_frame(
    rng: np.random.Generator,
    order_id: np.ndarray,
    product_id: np.ndarray,
    orders: pd.DataFrame,
    products: pd.DataFrame,
) -> pd.DataFrame:
    """Build the order_items table, sorted by order (hence by time)."""
    perm = np.argsort(order_id, kind="stable")
    order_id, product_id = order_id[perm], product_id[perm]
    n = len(order_id)
    discount = np.array([0.0, 0.1, 0.2])[rng.choice(3, n, p=[0.7, 0.2, 0.1])]
    unit_price = np.round(products["price"].to_numpy()[product_id] * (1 - discount), 2)
    return pd.DataFrame(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "order_id": order_id,
            "product_id": product_id,
            "item_time": orders["order_time"].to_numpy()[order_id],
            "quantity": np.minimum(1 + rng.poisson(0.4, n), 6),
            "unit_price": unit_price,
        }
    )


def _make_reviews(
    rng: np.random.Generator,
    items: pd.DataFrame,
    orders: pd.DataFrame,
    products: pd.DataFrame,
    quality: np.ndarray,
) -> pd.DataFrame:
    """Reviews of a random subset of purchased items; rating follows quality."""
    chosen = np.flatnonzero(rng.random(len(items)) < _REVIEW_PROB)
    product = items["product_id"].to_numpy()[chosen]
    customer = orders["customer_id"].to_numpy()[items["order_id"].to_numpy()[chosen]]
    bought_ns = items["item_time"].to_numpy().astype(np.int64)[chosen]
    delay_ns = (rng.gamma(2.0, 5.0, len(chosen)) * _DAY_NS).astype(np.int64)
    review_ns = (bought_ns + delay_ns) // 10**9 * 10**9
    in_range = review_ns <= _END.value
    product, customer, review_ns = product[in_range], customer[in_range], review_ns[in_range]
    n = len(product)

    perm = np.argsort(review_ns, kind="stable")
    product, customer, review_ns = product[perm], customer[perm], review_ns[perm]
    raw = 3.0 + 1.4 * quality[product] + 0.8 * rng.standard_normal(n)
    rating = np.clip(np.round(raw), 1, 5).astype(np.int64)
    text = _join(
        _review_sentiment(rng, rating),
        products["category"].to_numpy()[product],
        "item.",
        _pick(rng, _REVIEW_CLOSERS, n),
        "- used for",
        _pick(rng, _BIO_HOBBIES, n),
        "by a",
        _pick(rng, _BIO_TRAITS, n),
        _pick(rng, _BIO_ROLES, n),
    )
    return pd.DataFrame(
        {
            "review_id": np.arange(n, dtype=np.int64),
            "customer_id": customer,
            "product_id": product,
            "review_time": review_ns.astype("datetime64[ns]"),
            "rating": rating,
            "text": _null_out(text, rng, 0.15),
        }
    )


def _review_sentiment(rng: np.random.Generator, rating: np.ndarray) -> np.ndarray:
    """One sentiment word per review, from the word list of its rating."""
    vocab = np.array([_SENTIMENT[r] for r in range(1, 6)], dtype=object)  # (5, 5)
    return vocab[rating - 1, rng.integers(0, vocab.shape[1], len(rating))]


class CustomerChurnTask(EntityTask):
    """Predict whether a customer with an order in the past year places no order
    in the next 90 days."""

    task_type = TaskType.BINARY_CLASSIFICATION
    entity_col = "customer_id"
    entity_table = "customers"
    time_col = "timestamp"
    target_col = "churn"
    timedelta = pd.Timedelta(days=90)
    num_eval_timestamps = 4
    metrics = [average_precision, accuracy, f1, roc_auc]
    lookback = pd.Timedelta(days=365)

    def make_table(self, db: Database, timestamps: "pd.Series[pd.Timestamp]") -> Table:
        """Label customers active in the lookback window at each timestamp."""
        timestamp_df = pd.DataFrame({"timestamp": timestamps})
        orders = db.table_dict["orders"].df[["customer_id", "order_time"]]
        delta, lookback = self.timedelta.days, self.lookback.days
        df = duckdb.sql(f"""
            WITH active AS (
                SELECT DISTINCT t.timestamp, o.customer_id
                FROM timestamp_df t JOIN orders o
                ON o.order_time > t.timestamp - INTERVAL '{lookback} days'
                AND o.order_time <= t.timestamp
            ), future AS (
                SELECT DISTINCT t.timestamp, o.customer_id
                FROM timestamp_df t JOIN orders o
                ON o.order_time > t.timestamp
                AND o.order_time <= t.timestamp + INTERVAL '{delta} days'
            )
            SELECT a.timestamp, a.customer_id,
                   CAST(f.customer_id IS NULL AS BIGINT) AS churn
            FROM active a LEFT JOIN future f
            ON a.timestamp = f.timestamp AND a.customer_id = f.customer_id
            ORDER BY a.timestamp, a.customer_id
        """).df()
        return _task_table(df, self)


class CustomerRatingTask(EntityTask):
    """Predict the mean rating a customer (with at least one past order) gives
    to the reviews they write in the next 90 days."""

    task_type = TaskType.REGRESSION
    entity_col = "customer_id"
    entity_table = "customers"
    time_col = "timestamp"
    target_col = "rating"
    timedelta = pd.Timedelta(days=90)
    num_eval_timestamps = 4
    metrics = [r2, mae, rmse]

    def make_table(self, db: Database, timestamps: "pd.Series[pd.Timestamp]") -> Table:
        """Average future ratings of customers who have ordered before."""
        timestamp_df = pd.DataFrame({"timestamp": timestamps})
        orders = db.table_dict["orders"].df[["customer_id", "order_time"]]
        reviews = db.table_dict["reviews"].df[["customer_id", "review_time", "rating"]]
        delta = self.timedelta.days
        df = duckdb.sql(f"""
            WITH first_order AS (
                SELECT customer_id, MIN(order_time) AS first_time
                FROM orders GROUP BY customer_id
            )
            SELECT t.timestamp, r.customer_id,
                   AVG(CAST(r.rating AS DOUBLE)) AS rating
            FROM timestamp_df t
            JOIN reviews r
              ON r.review_time > t.timestamp
             AND r.review_time <= t.timestamp + INTERVAL '{delta} days'
            JOIN first_order f
              ON f.customer_id = r.customer_id AND f.first_time <= t.timestamp
            GROUP BY t.timestamp, r.customer_id
            ORDER BY t.timestamp, r.customer_id
        """).df()
        return _task_table(df, self)


def _task_table(df: pd.DataFrame, task: EntityTask) -> Table:
    """Wrap a label frame as a relbench task table with stable dtypes."""
    df["timestamp"] = pd.to_datetime(df["timestamp"]).astype("datetime64[ns]")
    df[task.entity_col] = df[task.entity_col].astype(np.int64)
    return Table(
        df=df.reset_index(drop=True),
        fkey_col_to_pkey_table={task.entity_col: task.entity_table},
        pkey_col=None,
        time_col=task.time_col,
    )


SYNTHETIC_TASKS: dict[str, type] = {
    "customer-churn": CustomerChurnTask,
    "customer-rating": CustomerRatingTask,
}

relbench.datasets.register_dataset("rel-synthetic", SyntheticDataset)
for _name, _cls in SYNTHETIC_TASKS.items():
    relbench.tasks.register_task("rel-synthetic", _name, _cls)
