"""Seeded synthetic marketplace data for the two demo models; no downloads.

`generate(interface, n, seed)` returns `(events, labels)`: `events` are JSON-able dicts with `event_id` and every
feature of the interface (native str/float/int values inside the declared bounds and lengths), `labels` a numpy
array (fraud: 0/1 int64; price: the listing price in EUR, float64).

Fraud: a few percent of listings are fraudulent. Fraudsters tend to have new accounts with no sales, ask for
off-platform payment, write pressure or counterfeit words ("urgent", "wire transfer", "replica"), price far below
the category's usual price, attach few photos and sit far from the buyer; each signal also appears, less often,
in honest listings, a share of fraud comes from taken-over established accounts, and some labels are flipped.

Price (shaped like Mercari's second-hand listings): log-price = category base + brand premium + condition +
seller-paid shipping + words in the name/description ("new with tags", "vintage", "bundle", "for parts", ...)
+ noise, so it is heavy-tailed and only partly explained by the category.
"""

from __future__ import annotations

import zlib

import numpy as np

from model_handlers import interface as mi

# ----------------------------------------------------------------------------------------------------------------
# Fraud
# ----------------------------------------------------------------------------------------------------------------

# category: (median price EUR, log-sd, share of honest listings, share of fraud, item nouns)
_FRAUD_CATEGORIES = {
    "electronics": (
        220.0,
        0.9,
        0.18,
        0.34,
        ["iPhone 13", "laptop", "PS5 console", "camera", "headphones", "tablet", "smartwatch"],
    ),
    "fashion": (40.0, 0.8, 0.22, 0.16, ["jacket", "sneakers", "handbag", "dress", "jeans", "coat"]),
    "home": (60.0, 0.9, 0.14, 0.04, ["sofa", "lamp", "coffee table", "rug", "mirror", "bookshelf"]),
    "sports": (70.0, 0.9, 0.08, 0.03, ["road bike", "treadmill", "tennis racket", "ski boots", "dumbbells"]),
    "toys": (25.0, 0.8, 0.08, 0.02, ["lego set", "doll house", "board game", "rc car"]),
    "books": (12.0, 0.6, 0.08, 0.01, ["novel", "cookbook", "textbook", "comic collection"]),
    "beauty": (20.0, 0.7, 0.07, 0.05, ["perfume", "hair dryer", "makeup palette"]),
    "jewelry": (120.0, 1.0, 0.05, 0.14, ["gold necklace", "diamond ring", "watch", "bracelet"]),
    "collectibles": (80.0, 1.1, 0.05, 0.05, ["trading cards", "vinyl record", "coin set", "figurine"]),
    "automotive": (150.0, 1.0, 0.03, 0.04, ["car stereo", "alloy wheels", "roof box", "tyres"]),
    "tickets": (90.0, 0.7, 0.02, 0.12, ["concert tickets", "festival pass", "football tickets"]),
}
_SHIPPING = ["standard", "express", "pickup", "international"]
_SHIPPING_P = {0: [0.55, 0.15, 0.25, 0.05], 1: [0.35, 0.15, 0.05, 0.45]}
_PAYMENT = ["card", "wallet", "bank_transfer", "crypto", "gift_card"]
_PAYMENT_P = {0: [0.60, 0.30, 0.08, 0.01, 0.01], 1: [0.22, 0.15, 0.33, 0.15, 0.15]}
_ADJECTIVES = ["", "", "", "used", "great", "like new", "original", "brand new", "almost new", "nice", "cheap"]
# Title add-ons: the suspicious ones (pressure, off-platform payment, counterfeit) and harmless ones.
_SUSPICIOUS_TITLE = [
    "URGENT",
    "urgent sale",
    "wire transfer only",
    "gift card accepted",
    "replica",
    "1:1 copy",
    "today only",
    "must sell today",
    "contact on whatsapp",
    "western union",
    "cheap!!!",
    "aaa quality",
]
_HARMLESS_TITLE = [
    "",
    "",
    "",
    "",
    "with box",
    "good condition",
    "pickup only",
    "price negotiable",
    "barely used",
    "2 pcs",
]
_LEGIT_SENTENCES = [
    "Barely used, works perfectly.",
    "Smoke-free and pet-free home.",
    "Comes with the original box and receipt.",
    "Pickup possible in the city centre.",
    "Selling because I upgraded.",
    "Small scratch on the side, see photos.",
    "Happy to answer questions.",
    "Shipped within two days.",
    "Price is negotiable for quick buyers.",
    "Bought last year, still under warranty.",
    "Moving out, everything must go.",
    "Cleaned and tested.",
]
_FRAUD_SENTENCES = [
    "Payment by wire transfer only.",
    "Contact me on WhatsApp for a better price.",
    "Pay with gift cards and I ship today.",
    "Urgent, I am abroad and need the money fast.",
    "Email me directly, not through the app.",
    "Western Union or crypto accepted.",
    "Item is a high quality replica, looks original.",
    "Send deposit first to reserve.",
]


def _choice(rng: np.random.Generator, options, p, n) -> np.ndarray:
    return rng.choice(len(options), size=n, p=np.asarray(p) / np.sum(p))


def _fraud(n: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    fraud = rng.random(n) < 0.03
    nf = fraud.astype(int)

    names = list(_FRAUD_CATEGORIES)
    cat = np.where(
        fraud,
        _choice(rng, names, [c[3] for c in _FRAUD_CATEGORIES.values()], n),
        _choice(rng, names, [c[2] for c in _FRAUD_CATEGORIES.values()], n),
    )
    median = np.array([c[0] for c in _FRAUD_CATEGORIES.values()])[cat]
    sd = np.array([c[1] for c in _FRAUD_CATEGORIES.values()])[cat]
    price = np.exp(np.log(median) + sd * rng.standard_normal(n))
    # Most fraud is "too good to be true": a fraction of the category's usual price.
    too_good = fraud & (rng.random(n) < 0.65)
    price = np.where(too_good, price * np.exp(np.log(0.3) + 0.5 * rng.standard_normal(n)), price)
    price = np.round(np.clip(price, 1.0, 1_000_000.0), 2)

    # Accounts: honest sellers are mostly established, some new; most fraud uses fresh accounts, some taken-over ones.
    fresh = np.where(fraud, rng.random(n) < 0.7, rng.random(n) < 0.12)
    age = np.where(
        fresh,
        rng.exponential(np.where(fraud, 6.0, 30.0), n),
        np.exp(np.log(700.0) + 1.0 * rng.standard_normal(n)),
    )
    age = np.clip(np.floor(age), 0, 36_500).astype(np.int64)
    activity = np.exp(0.8 * rng.standard_normal(n))  # sales per month, roughly
    sales = np.floor(activity * age / 30.0 * rng.random(n))
    sales = np.where(fraud & fresh, rng.geometric(0.6, n) - 1, sales)
    sales = np.clip(sales, 0, 1_000_000).astype(np.int64)
    rating = np.where(
        fraud, np.clip(4.1 + 0.8 * rng.standard_normal(n), 1, 5), np.clip(4.6 + 0.35 * rng.standard_normal(n), 1, 5)
    )
    rating = np.where(sales == 0, 0.0, np.round(rating, 1))

    shipping = np.empty(n, dtype=np.int64)
    payment = np.empty(n, dtype=np.int64)
    for label in (0, 1):
        mask = nf == label
        shipping[mask] = _choice(rng, _SHIPPING, _SHIPPING_P[label], int(mask.sum()))
        payment[mask] = _choice(rng, _PAYMENT, _PAYMENT_P[label], int(mask.sum()))

    images = np.where(fraud & (rng.random(n) < 0.6), rng.poisson(0.8, n), rng.poisson(5.0, n))
    images = np.where(rng.random(n) < 0.03, 0, images)
    images = np.clip(images, 0, 100).astype(np.int64)

    international = np.array(_SHIPPING)[shipping] == "international"
    pickup = np.array(_SHIPPING)[shipping] == "pickup"
    distance = np.exp(np.log(60.0) + 1.2 * rng.standard_normal(n))
    distance = np.where(fraud & (rng.random(n) < 0.5), np.exp(np.log(900.0) + 1.0 * rng.standard_normal(n)), distance)
    distance = np.where(international, np.exp(np.log(1500.0) + 0.8 * rng.standard_normal(n)), distance)
    distance = np.where(pickup, rng.exponential(8.0, n), distance)
    distance = np.round(np.clip(distance, 0.0, 40_000.0), 1)

    # Text.
    nouns = [c[4] for c in _FRAUD_CATEGORIES.values()]
    noun_pick = rng.random(n)
    adjective = rng.integers(0, len(_ADJECTIVES), n)
    suspicious = np.where(fraud, rng.random(n) < 0.45, rng.random(n) < 0.02)
    sus_pick = rng.integers(0, len(_SUSPICIOUS_TITLE), n)
    harmless_pick = rng.integers(0, len(_HARMLESS_TITLE), n)
    upper = rng.random(n) < 0.05
    titles = []
    for i in range(n):
        item_nouns = nouns[cat[i]]
        parts = [_ADJECTIVES[adjective[i]], item_nouns[int(noun_pick[i] * len(item_nouns))]]
        parts.append(_SUSPICIOUS_TITLE[sus_pick[i]] if suspicious[i] else _HARMLESS_TITLE[harmless_pick[i]])
        title = " ".join(p for p in parts if p)
        titles.append((title.upper() if upper[i] else title[0].upper() + title[1:])[:200])

    n_sentences = rng.integers(0, 4, n)
    legit_picks = rng.integers(0, len(_LEGIT_SENTENCES), (n, 3))
    fraud_sentence = np.where(fraud, rng.random(n) < 0.4, rng.random(n) < 0.01)
    fraud_picks = rng.integers(0, len(_FRAUD_SENTENCES), n)
    descriptions = []
    for i in range(n):
        sentences = [_LEGIT_SENTENCES[j] for j in legit_picks[i, : n_sentences[i]]]
        if fraud_sentence[i]:
            sentences.insert(int(legit_picks[i, 0]) % (len(sentences) + 1), _FRAUD_SENTENCES[fraud_picks[i]])
        descriptions.append(" ".join(sentences)[:5000])

    # Label noise: some fraud is never caught (labelled 0), some honest listings are wrongly reported.
    labels = np.where(fraud, rng.random(n) >= 0.05, rng.random(n) < 0.0015).astype(np.int64)

    columns = {
        "price": price,
        "seller_account_age_days": age,
        "seller_num_sales": sales,
        "seller_rating": rating,
        "category": np.array(names)[cat],
        "shipping_method": np.array(_SHIPPING)[shipping],
        "payment_method": np.array(_PAYMENT)[payment],
        "title": titles,
        "description": descriptions,
        "num_images": images,
        "buyer_seller_distance_km": distance,
    }
    return columns, labels


# ----------------------------------------------------------------------------------------------------------------
# Price (Mercari-like)
# ----------------------------------------------------------------------------------------------------------------

# category path: (median price EUR, popularity weight, item nouns)
_PRICE_CATEGORIES = {
    "Women/Tops & Blouses/T-Shirts": (14, 9, ["tee", "t-shirt", "graphic tee", "top"]),
    "Women/Tops & Blouses/Blouse": (18, 5, ["blouse", "lace top", "button down shirt"]),
    "Women/Dresses/Maxi": (30, 3, ["maxi dress", "long dress", "boho dress"]),
    "Women/Dresses/Above Knee, Mini": (22, 4, ["mini dress", "bodycon dress", "skater dress"]),
    "Women/Shoes/Boots": (45, 4, ["ankle boots", "knee high boots", "booties"]),
    "Women/Shoes/Sandals": (25, 3, ["sandals", "flip flops", "wedges"]),
    "Women/Women's Handbags/Shoulder Bag": (45, 4, ["shoulder bag", "purse", "tote"]),
    "Women/Jeans/Slim, Skinny": (25, 4, ["skinny jeans", "jeggings", "slim jeans"]),
    "Women/Athletic Apparel/Pants, Tights, Leggings": (22, 8, ["leggings", "yoga pants", "joggers"]),
    "Women/Jewelry/Necklaces": (20, 3, ["necklace", "pendant", "choker"]),
    "Men/Tops/T-shirts": (15, 4, ["tee", "t-shirt", "polo"]),
    "Men/Shoes/Athletic": (55, 4, ["running shoes", "sneakers", "trainers"]),
    "Men/Coats & Jackets/Jacket": (45, 2, ["jacket", "windbreaker", "bomber jacket"]),
    "Men/Jeans/Straight Leg": (25, 2, ["jeans", "denim", "straight jeans"]),
    "Electronics/Cell Phones & Accessories/Cell Phones & Smartphones": (
        180,
        3,
        ["phone", "smartphone", "unlocked phone"],
    ),
    "Electronics/Cell Phones & Accessories/Cases, Covers & Skins": (10, 6, ["phone case", "cover", "skin"]),
    "Electronics/Video Games & Consoles/Games": (22, 5, ["game", "video game", "cartridge"]),
    "Electronics/Video Games & Consoles/Consoles": (160, 2, ["console", "handheld console", "gaming system"]),
    "Electronics/Computers & Tablets/Laptops & Netbooks": (300, 1, ["laptop", "notebook", "chromebook"]),
    "Electronics/Computers & Tablets/iPad/Tablet/eBook Readers": (150, 2, ["tablet", "e-reader", "ipad"]),
    "Electronics/Cameras & Photography/Digital Cameras": (120, 1, ["digital camera", "camera", "dslr"]),
    "Electronics/TV, Audio & Surveillance/Headphones": (45, 3, ["headphones", "earbuds", "headset"]),
    "Beauty/Makeup/Lips": (12, 8, ["lipstick", "lip gloss", "liquid lipstick"]),
    "Beauty/Makeup/Face": (14, 6, ["foundation", "highlighter", "concealer"]),
    "Beauty/Fragrance/Women": (35, 3, ["perfume", "eau de parfum", "body mist"]),
    "Beauty/Skin Care/Face": (18, 4, ["face cream", "serum", "cleanser"]),
    "Kids/Toys/Dolls & Accessories": (18, 3, ["doll", "doll clothes", "playset"]),
    "Kids/Girls 2T-5T/Dresses": (12, 2, ["toddler dress", "party dress"]),
    "Kids/Boys 0-24 Mos/One-Pieces": (10, 2, ["onesie", "romper", "bodysuit"]),
    "Kids/Gear/Strollers": (90, 1, ["stroller", "jogging stroller", "pram"]),
    "Home/Home Décor/Candles": (16, 3, ["candle", "jar candle", "wax melts"]),
    "Home/Kitchen & Dining/Coffee & Tea Accessories": (20, 2, ["mug", "coffee pods", "tea set"]),
    "Home/Bedding/Quilts": (45, 1, ["quilt", "comforter", "duvet"]),
    "Vintage & Collectibles/Trading Cards/Sports": (20, 2, ["trading cards", "rookie card", "card lot"]),
    "Vintage & Collectibles/Collectibles/Figurine": (28, 2, ["figurine", "figure", "statue"]),
    "Vintage & Collectibles/Jewelry/Ring": (35, 1, ["ring", "band", "signet ring"]),
    "Sports & Outdoors/Exercise/Fitness accessories": (20, 2, ["resistance bands", "yoga mat", "jump rope"]),
    "Sports & Outdoors/Outdoors/Camping & Hiking": (40, 1, ["tent", "sleeping bag", "backpack"]),
    "Sports & Outdoors/Golf/Clubs": (70, 1, ["driver", "iron set", "putter"]),
    "Handmade/Jewelry/Bracelets": (12, 2, ["bracelet", "beaded bracelet", "charm bracelet"]),
    "Handmade/Accessories/Keychain": (8, 1, ["keychain", "key ring", "lanyard"]),
    "Other/Books/Fiction": (8, 2, ["novel", "paperback", "book set"]),
}
# top-level: [(brand, log-price premium, weight)]
_BRANDS = {
    "Women": [
        ("Nike", 0.30, 6),
        ("Lululemon", 0.70, 4),
        ("Michael Kors", 0.80, 3),
        ("Coach", 0.90, 2),
        ("Louis Vuitton", 2.20, 1),
        ("Forever 21", -0.40, 4),
        ("Old Navy", -0.40, 3),
        ("Victoria's Secret", 0.10, 5),
        ("PINK", 0.20, 6),
        ("American Eagle", -0.10, 3),
        ("Kate Spade", 0.80, 2),
        ("Chanel", 2.00, 1),
        ("Zara", -0.10, 2),
        ("H&M", -0.40, 2),
        ("Free People", 0.40, 2),
    ],
    "Men": [
        ("Nike", 0.35, 6),
        ("Adidas", 0.25, 4),
        ("Jordan", 0.90, 3),
        ("Supreme", 1.00, 2),
        ("Levi's", 0.10, 3),
        ("Ralph Lauren", 0.30, 2),
        ("Under Armour", 0.10, 3),
        ("Gucci", 2.00, 1),
    ],
    "Electronics": [
        ("Apple", 0.80, 8),
        ("Samsung", 0.30, 4),
        ("Sony", 0.30, 3),
        ("Nintendo", 0.40, 4),
        ("Microsoft", 0.30, 2),
        ("Beats", 0.40, 2),
        ("Bose", 0.50, 1),
        ("LG", 0.00, 1),
        ("OtterBox", -0.10, 2),
        ("Generic", -0.70, 2),
    ],
    "Beauty": [
        ("MAC", 0.20, 4),
        ("Sephora", 0.10, 3),
        ("Urban Decay", 0.30, 3),
        ("Too Faced", 0.20, 3),
        ("Bath & Body Works", -0.20, 4),
        ("Chanel", 1.00, 1),
        ("Clinique", 0.20, 2),
        ("NYX", -0.40, 3),
    ],
    "Kids": [
        ("Carter's", -0.30, 4),
        ("Disney", 0.10, 3),
        ("LEGO", 0.60, 3),
        ("Barbie", 0.00, 2),
        ("Graco", 0.30, 1),
        ("Gap", -0.20, 2),
    ],
    "Home": [("IKEA", -0.10, 2), ("Yankee Candle", 0.10, 3), ("Pottery Barn", 0.60, 1), ("Keurig", 0.40, 1)],
    "Vintage & Collectibles": [("Pokemon", 0.30, 4), ("Funko", 0.00, 4), ("Pandora", 0.60, 2), ("Disney", 0.20, 2)],
    "Sports & Outdoors": [
        ("Nike", 0.30, 3),
        ("Under Armour", 0.10, 2),
        ("Callaway", 0.60, 1),
        ("Coleman", 0.00, 1),
        ("Fitbit", 0.50, 1),
    ],
    "Handmade": [],
    "Other": [],
}
_CONDITION_P = [0.43, 0.25, 0.29, 0.02, 0.01]
_CONDITION_EFFECT = np.array([0.0, 0.12, 0.05, 0.0, -0.22, -0.5])  # by condition id (index 0 unused)
_CONDITION_SENTENCES = {
    1: ["Brand new, never used.", "New in package.", "Never worn."],
    2: ["Like new, used once.", "Excellent condition.", "Worn twice."],
    3: ["Gently used.", "Good used condition.", "Some signs of wear."],
    4: ["Fair condition, has a small stain.", "Visible wear, still works.", "Some pilling."],
    5: ["Heavily used.", "Poor condition, sold as is.", "Has damage, see photos."],
}
# Words that move the price: (name variants, description sentence, log-price effect, base probability)
_PRICE_WORDS = [
    (["NWT", "new with tags", "BNWT"], "New with tags, never worn.", 0.25, 0.10),
    (["vintage", "retro", "90s vintage"], "Authentic vintage piece.", 0.30, 0.05),
    (["bundle", "lot of 5", "bundle of 3"], "Bundle of several items, all included.", 0.60, 0.06),
    (["authentic", "100% authentic"], "Authentic, receipt included.", 0.20, 0.05),
    (["for parts", "broken"], "Not working, for parts or repair only.", -0.90, 0.02),
    (["sealed", "brand new sealed"], "Factory sealed.", 0.20, 0.04),
]
_SIZES = ["", "", "", "XS", "S", "M", "L", "XL", "size 8", "OS"]
_FILLER = [
    "Smoke free home.",
    "Free shipping!",
    "Price firm.",
    "No trades.",
    "Bundle to save.",
    "Ships next day.",
    "Check out my other listings.",
    "Open to offers.",
    "Comes from a pet free home.",
    "Great gift.",
]


def _price(n: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    paths = list(_PRICE_CATEGORIES)
    weights = np.array([c[1] for c in _PRICE_CATEGORIES.values()], dtype=float)
    cat = rng.choice(len(paths), size=n, p=weights / weights.sum())
    base = np.log(np.array([c[0] for c in _PRICE_CATEGORIES.values()], dtype=float))[cat]
    top_names = [p.split("/")[0] for p in paths]

    # Brands: 60% of listings name one from their top-level category.
    brand_names = np.full(n, "", dtype=object)
    brand_effect = np.zeros(n)
    has_brand = rng.random(n) < 0.6
    for top, brands in _BRANDS.items():
        mask = has_brand & (np.array(top_names)[cat] == top)
        if not brands or not mask.any():
            continue
        w = np.array([b[2] for b in brands], dtype=float)
        pick = rng.choice(len(brands), size=int(mask.sum()), p=w / w.sum())
        brand_names[mask] = np.array([b[0] for b in brands], dtype=object)[pick]
        brand_effect[mask] = np.array([b[1] for b in brands])[pick]

    condition = (rng.choice(5, size=n, p=_CONDITION_P) + 1).astype(np.int64)
    shipping = (rng.random(n) < 0.45).astype(np.int64)

    # Price-moving words, each placed in the name, the description or both.
    word_present = np.zeros((n, len(_PRICE_WORDS)), dtype=bool)
    for k, (_, _, _, p) in enumerate(_PRICE_WORDS):
        prob = np.full(n, p)
        if k == 0:  # new with tags goes with condition 1
            prob = np.where(condition == 1, 2.5 * p, 0.3 * p)
        if k == 4:  # for parts goes with poor condition
            prob = np.where(condition >= 4, 0.25, 0.5 * p)
        word_present[:, k] = rng.random(n) < prob
    word_effect = word_present.astype(float) @ np.array([w[2] for w in _PRICE_WORDS])
    placement = rng.integers(0, 3, (n, len(_PRICE_WORDS)))  # 0 name, 1 description, 2 both
    variant = rng.integers(0, 3, (n, len(_PRICE_WORDS)))

    log_price = (
        base
        + brand_effect
        + _CONDITION_EFFECT[condition]
        - 0.12 * shipping
        + word_effect
        + 0.42 * rng.standard_normal(n)
    )
    price = np.clip(np.round(np.exp(log_price)), 3.0, 2000.0)

    nouns = [c[2] for c in _PRICE_CATEGORIES.values()]
    noun_pick = rng.random(n)
    brand_in_name = rng.random(n) < 0.7
    size_pick = rng.integers(0, len(_SIZES), n)
    cond_pick = rng.integers(0, 3, n)
    filler = rng.integers(0, len(_FILLER), (n, 3))
    n_filler = rng.integers(0, 4, n)
    desc_kind = rng.random(n)  # < 0.05: Mercari's placeholder, < 0.08: empty
    names, descriptions = [], []
    for i in range(n):
        item_nouns = nouns[cat[i]]
        name = [brand_names[i]] if brand_names[i] and brand_in_name[i] else []
        pre, post, sentences = [], [], []
        for k in np.flatnonzero(word_present[i]):
            variants, sentence = _PRICE_WORDS[k][0], _PRICE_WORDS[k][1]
            if placement[i, k] != 1:
                (pre if k in (1, 3, 5) else post).append(variants[variant[i, k] % len(variants)])
            if placement[i, k] != 0:
                sentences.append(sentence)
        name += pre + [item_nouns[int(noun_pick[i] * len(item_nouns))]] + post
        if _SIZES[size_pick[i]] and top_names[cat[i]] in ("Women", "Men", "Kids"):
            name.append(_SIZES[size_pick[i]])
        names.append(" ".join(name)[:200])
        if desc_kind[i] < 0.05:
            descriptions.append("No description yet")
        elif desc_kind[i] < 0.08:
            descriptions.append("")
        else:
            sentences = [_CONDITION_SENTENCES[int(condition[i])][cond_pick[i]]] + sentences
            sentences += [_FILLER[j] for j in filler[i, : n_filler[i]]]
            descriptions.append(" ".join(sentences)[:5000])

    columns = {
        "name": names,
        "brand_name": brand_names,
        "category_name": np.array(paths, dtype=object)[cat],
        "item_condition_id": condition,
        "shipping": shipping,
        "item_description": descriptions,
    }
    return columns, price.astype(np.float64)


_GENERATORS = {"fraud": _fraud, "price": _price}


def generate(interface: mi.ModelInterface, n: int, seed: int) -> tuple[list[dict], np.ndarray]:
    """`n` synthetic events for `interface` (deterministic for a seed) and their labels."""
    if interface.name not in _GENERATORS:
        raise ValueError(f"no data generator for model {interface.name!r}; have {sorted(_GENERATORS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # Each model gets its own stream for the same seed.
    rng = np.random.default_rng([int(seed), zlib.crc32(interface.name.encode())])
    columns, labels = _GENERATORS[interface.name](n, rng)
    missing = {f.name for f in interface.features} - set(columns)
    if missing:
        raise AssertionError(f"generator for {interface.name!r} misses features {sorted(missing)}")
    cast = {mi.STRING: str, mi.FLOAT: float, mi.INT: int}
    values = {}
    for feature in interface.features:
        column = np.asarray(columns[feature.name], dtype=object if feature.dtype == mi.STRING else None)
        # .tolist() turns numpy scalars into native float / int; strings are already str.
        values[feature.name] = [cast[feature.dtype](v) for v in column.tolist()]
    events = [
        {"event_id": f"{interface.name}-{seed}-{i}", **{name: col[i] for name, col in values.items()}} for i in range(n)
    ]
    return events, labels
