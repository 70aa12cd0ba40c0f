"""Hostile Shioaji payloads: mutations of real ones, as a Hypothesis strategy, with an oracle.

Entry points: `hostile_recipes() -> SearchStrategy[Recipe]` (Hypothesis), `day_recipe(rng, state,
msg)` (plain `random`, for the live-day scenario), `Recipe.build(n) -> (state, msg)`,
`judge(state, msg) -> Verdict`, `base_payloads()`, `fresh_ids(state, msg, n)`, `Big`, `Deep`,
`has_surrogate(text)`, `srepr(value)`, `ACCEPT`, `REJECT`, `EITHER`, `MAX_EPOCH_S`, `PRICE_MAX`,
`QTY_MAX`, `PERSON_ID`.

A `Recipe` is data: a real payload (the simulator's SORDER / SDEAL / FORDER / FDEAL shapes,
with a `person_id` in every account, as a real login's are) and up to a few mutations: a
field dropped at any depth, an unknown field added, a value swapped for another type, a 1 MB
string, NaN / infinite / negative prices, zero / negative / huge quantities, unknown codes,
enums and states, timestamps out of range, lone surrogates, deep nesting, a non-dict `msg`.
`build(n)` first gives the payload fresh identifiers (order id, trade id, exchange sequence,
event id from `n`), so cases of one run never dedupe against each other by accident.

The oracle (`judge`) is written from the contract (shioaji-facts.md §2 and the rules in
`normalize.schema`'s docstring: required identifiers present and non-empty, strings bounded,
enums closed, prices finite in [0, 1e6] (a deal's > 0), quantities ints (bools refused) up to
1e6, timestamps epoch seconds in (0, 2100-01-01], the status id the order id, text kept in
events valid Unicode), not from the schema objects, so a schema that drifts is caught. Its
verdict is ACCEPT, REJECT (with the fields a reason may name) or EITHER where the contract does
not decide (subclasses of builtins, non-string keys, a lone surrogate in text the normalizer
does not keep, a payload the journal cannot write). `Verdict.exotic` marks payloads that are
not plain JSON data (bytes, tuples, Decimals, non-string keys, ints too long to print, nesting
deeper than `DEEP_SAFE`): a journal replay need not reproduce them, and their rejection may be
the journal's (`unjournalable`: too deep, an int too long) rather than the schema's.
"""

from __future__ import annotations

import copy
import math
import random
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any
from pathlib import Path

_FIXTURES = str(Path(__file__).resolve().parents[1] / "tests" / "fixtures")
if _FIXTURES not in sys.path:  # Shioaji's OrderEventDict stand-in lives with the test payloads
    sys.path.insert(0, _FIXTURES)
from payloads import EventDictLike as DictLike  # noqa: E402

ACCEPT, REJECT, EITHER = "accept", "reject", "either"
MAX_EPOCH_S = 4_102_444_800  # 2100-01-01T00:00:00Z: a later broker time is garbage (and overflows int64 ns past 2262)
PRICE_MAX = 1e6  # per unit: far above any Taiwan price, low enough that a fill's fee and tax fit Decimal(18, 4)
QTY_MAX = 1_000_000  # per report, in the payload's units
BIG = 1_000_000  # characters in a "huge" string
DEEP_SAFE = 200  # nesting the journal and the dead-letter copy must handle; deeper is exotic
DEEP_EXTREME = 3000
_STATES = ("SORDER", "SDEAL", "FORDER", "FDEAL")
_ALIASES = {"StockOrder": "SORDER", "StockDeal": "SDEAL", "FuturesOrder": "FORDER", "FuturesDeal": "FDEAL"}
PERSON_ID = "A123456789"  # the base payloads' person_id: no dead letter may keep it


# --- lazy values (so Hypothesis never holds a megabyte in its buffer) --------------------------

@dataclass(frozen=True)
class Big:
    """A string of `n` copies of `char`, built when the payload is."""

    n: int
    char: str = "x"

    def make(self) -> str:
        return self.char * self.n


@dataclass(frozen=True)
class Deep:
    """`depth` nested lists or dicts, built when the payload is."""

    depth: int
    kind: str = "dict"  # dict | list

    def make(self) -> Any:
        value: Any = "bottom"
        for _ in range(self.depth):
            value = {"a": value} if self.kind == "dict" else [value]
        return value


def materialize(value: Any) -> Any:
    if isinstance(value, (Big, Deep)):
        return value.make()
    if type(value) is list:
        return [materialize(v) for v in value]
    if type(value) is dict:
        return {k: materialize(v) for k, v in value.items()}
    return value


# --- the contract, as a table ---------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    kind: str  # object | id | text | msg | opcode | enum | price | deal_price | qty | qty0 | epoch
    required: bool = True
    values: tuple[str, ...] = ()
    kept: bool | None = True  # text kept in the events (a lone surrogate is refused); None: not decided

    def __repr__(self) -> str:
        return f"Rule({self.kind}{'' if self.required else ', optional'})"


SIDE = ("Buy", "Sell")
CONDS = ("Cash", "Netting", "MarginTrading", "ShortSelling", "SBLShort", "SBLShortPriceExempt", "Emerging")
LOTS = ("Common", "Odd", "IntradayOdd", "Fixing", "BlockTrade")
OPS = ("New", "Cancel", "UpdatePrice", "UpdateQty", "Reject")
DERIV = ("FUT", "OPT")

_ID, _OBJ = Rule("id"), Rule("object")
_OPT, _OPT_UNKEPT = Rule("text", False), Rule("text", False, kept=False)


def _deal_spec(stock: bool) -> dict[tuple[str, ...], Rule]:
    spec = {
        ("trade_id",): _ID, ("exchange_seq",): _ID, ("broker_id",): _ID, ("account_id",): _ID,
        ("action",): Rule("enum", values=SIDE), ("code",): _ID, ("price",): Rule("deal_price"),
        ("quantity",): Rule("qty"), ("ts",): Rule("epoch"),
        ("event_id",): _OPT, ("seqno",): _OPT, ("ordno",): _OPT, ("web_id",): _OPT_UNKEPT,
    }
    if stock:
        spec |= {("order_cond",): Rule("enum", values=CONDS), ("order_lot",): Rule("enum", values=LOTS), ("custom_field",): _OPT}
    else:
        spec |= {("full_code",): _ID, ("security_type",): Rule("enum", values=DERIV), ("market_type",): _OPT,
                 ("subaccount",): _OPT_UNKEPT, ("delivery_month",): _OPT_UNKEPT}
    return spec


def _order_spec(stock: bool) -> dict[tuple[str, ...], Rule]:
    spec = {
        ("event_id",): _OPT,
        ("operation",): _OBJ, ("operation", "op_type"): Rule("enum", values=OPS), ("operation", "op_code"): Rule("opcode"),
        ("operation", "op_msg"): Rule("msg", False),
        ("order",): _OBJ, ("order", "id"): _ID, ("order", "account"): _OBJ, ("order", "account", "broker_id"): _ID,
        ("order", "account", "account_id"): _ID, ("order", "action"): Rule("enum", values=SIDE), ("order", "price"): Rule("price"),
        ("order", "quantity"): Rule("qty0"), ("order", "seqno"): _OPT, ("order", "ordno"): _OPT, ("order", "price_type"): _OPT,
        ("order", "time_in_force"): _OPT, ("order", "order_type"): Rule("text", False, kept=None),
        ("status",): _OBJ, ("status", "exchange_ts"): Rule("epoch"), ("status", "order_quantity"): Rule("qty0"),
        ("status", "cancel_quantity"): Rule("qty0"), ("status", "modified_price"): Rule("price", False),
        ("status", "id"): _OPT_UNKEPT, ("status", "web_id"): _OPT_UNKEPT,
        ("contract",): _OBJ, ("contract", "code"): _ID,
    }
    if stock:
        spec |= {("order", "order_cond"): Rule("enum", values=CONDS), ("order", "order_lot"): Rule("enum", values=LOTS),
                 ("order", "custom_field"): _OPT, ("contract", "security_type"): _OPT_UNKEPT}
    else:
        spec |= {("order", "market_type"): _OPT_UNKEPT, ("order", "oc_type"): _OPT_UNKEPT, ("contract", "full_code"): _ID,
                 ("contract", "security_type"): Rule("enum", values=DERIV), ("contract", "delivery_month"): _OPT_UNKEPT}
    return spec


SPEC: dict[str, dict[tuple[str, ...], Rule]] = {
    "SDEAL": _deal_spec(True), "FDEAL": _deal_spec(False), "SORDER": _order_spec(True), "FORDER": _order_spec(False),
}
_LIMITS = {"id": (1, 64), "text": (0, 64), "msg": (0, 512), "opcode": (1, 16)}


@dataclass
class Verdict:
    outcome: str  # ACCEPT | REJECT | EITHER
    fields: set[str] = field(default_factory=set)  # what a rejection's reason may name (dotted paths, "state", "<payload>")
    exotic: bool = False  # not plain JSON data: the journal may refuse it, a replay cannot reproduce it
    unjournalable: bool = False  # nested too deep, or an int too long to print: the journal refuses it, whatever the schema says
    why: list[str] = field(default_factory=list)

    def bad(self, where: str, why: str) -> None:
        self.outcome = REJECT
        self.fields.add(where)
        self.why.append(f"{where}: {why}")

    def unsure(self, where: str, why: str) -> None:
        if self.outcome == ACCEPT:
            self.outcome = EITHER
        self.fields.add(where)
        self.why.append(f"{where}? {why}")


def has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check(rule: Rule, value: Any) -> tuple[str, str]:
    """(ACCEPT | REJECT | EITHER, why) for one present value."""
    k = rule.kind
    if k == "object":
        if type(value) is dict:
            return ACCEPT, ""
        return (EITHER, "a Mapping that is not a dict") if isinstance(value, Mapping) else (REJECT, f"not an object: {type(value).__name__}")
    if k in _LIMITS or k == "enum":
        if type(value) is not str:
            return (EITHER, "a str subclass") if isinstance(value, str) else (REJECT, f"not a str: {type(value).__name__}")
        if k == "enum":
            return (ACCEPT, "") if value in rule.values else (REJECT, "not one of the values")
        lo, hi = _LIMITS[k]
        if not lo <= len(value) <= hi:
            return REJECT, f"length {len(value)} outside {lo}..{hi}"
        if has_surrogate(value):
            if rule.kept:
                return REJECT, "lone surrogate in kept text"
            return EITHER, "lone surrogate in text not kept"
        return ACCEPT, ""
    if type(value) is bool:
        return REJECT, "a bool"
    if k in ("qty", "qty0"):
        if type(value) is not int:
            return (EITHER, "an int subclass") if isinstance(value, int) else (REJECT, f"not an int: {type(value).__name__}")
        lo = 1 if k == "qty" else 0
        return (ACCEPT, "") if lo <= value <= QTY_MAX else (REJECT, "quantity out of range")
    # price, deal_price, epoch: int or float
    if type(value) not in (int, float):
        return (EITHER, "a number subclass") if isinstance(value, (int, float)) and not isinstance(value, bool) else (REJECT, f"not a number: {type(value).__name__}")
    if type(value) is float and not math.isfinite(value):
        return REJECT, "not finite"
    if k == "epoch":
        return (ACCEPT, "") if 0 < value <= MAX_EPOCH_S else (REJECT, "epoch out of range")
    if not 0 <= value <= PRICE_MAX:
        return REJECT, "price out of range"
    if k == "deal_price" and value == 0:
        return REJECT, "deal price 0"
    return ACCEPT, ""


_EXOTIC_TYPES = (bytes, bytearray, tuple, set, frozenset, Decimal, complex)


def _scan_exotic(value: Any, verdict: Verdict, depth: int = 0) -> None:
    """Mark the verdict exotic for anything that is not plain JSON data."""
    if depth > DEEP_SAFE:
        verdict.exotic = verdict.unjournalable = True
        return
    kind = type(value)
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str:
                verdict.exotic = True
            _scan_exotic(v, verdict, depth + 1)
    elif kind is list:
        for v in value:
            _scan_exotic(v, verdict, depth + 1)
    elif kind is int:
        if value.bit_length() > 4000:  # more than Python prints (4300 digits)
            verdict.exotic = verdict.unjournalable = True
    elif kind not in (str, float, bool, type(None)):
        verdict.exotic = True


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def judge(state: Any, msg: Any) -> Verdict:
    """What the contract says the normalizer must do with `(state, msg)`."""
    v = _judge(state, msg)
    if v.unjournalable and v.outcome == ACCEPT:
        v.outcome = EITHER  # the journal line is written first: its failure is a dead letter of its own
        v.why.append("the journal cannot write it")
    return v


def _judge(state: Any, msg: Any) -> Verdict:
    v = Verdict(ACCEPT)
    inner = msg
    if not isinstance(msg, dict) and hasattr(msg, "items") and not isinstance(msg, (str, bytes)):
        inner = dict(msg.items())  # Shioaji's OrderEventDict is dict-like: normalized through a plain copy
    _scan_exotic(inner, v)
    name = getattr(state, "value", state)
    if type(name) is not str:
        v.bad("state", f"not a str: {type(name).__name__}")
        return v
    name = _ALIASES.get(name, name)
    if name == "CORRECTION":  # the service's own corrections travel under this state: a broker payload is no Correction
        v.bad("correction", "not a Correction")
        return v
    if name not in _STATES:
        v.bad("state", "unknown state")
        return v
    if type(inner) is not dict:
        v.bad("<payload>", f"not an object: {type(inner).__name__}")
        return v
    spec = SPEC[name]
    broken: set[tuple[str, ...]] = set()  # objects that are missing or not objects: their fields are not looked at
    for path in sorted(spec, key=len):
        if any(path[: i] in broken for i in range(1, len(path))):
            continue
        rule = spec[path]
        node: Any = inner
        for part in path[:-1]:
            node = node[part]
        if type(node) is not dict:  # an EITHER Mapping parent: not decided below it
            broken.add(path)
            continue
        if any(type(k) is not str for k in node):
            v.unsure(_dotted(path[:-1]) or "<payload>", "non-string key")
        if path[-1] not in node:
            if rule.required:
                v.bad(_dotted(path), "missing")
                broken.add(path)
            continue
        outcome, why = _check(rule, node[path[-1]])
        if outcome == REJECT:
            v.bad(_dotted(path), why)
        elif outcome == EITHER:
            v.unsure(_dotted(path), why)
        if rule.kind == "object" and outcome != ACCEPT:
            broken.add(path)
    if name.endswith("ORDER") and not ({("order",), ("status",)} & broken):
        sid, oid = inner["status"].get("id", ""), inner["order"].get("id")
        if type(sid) is str and sid and type(oid) is str and sid != oid:
            v.bad("status.id", "not the order id")
    return v


# --- base payloads and fresh identifiers ------------------------------------------------------

@lru_cache(maxsize=4)
def base_payloads(seed: int = 7, orders: int = 60) -> tuple[tuple[str, dict], ...]:
    """The simulator's truth records (every kind, lot, condition and operation it makes), with a
    `person_id` in every account."""
    from execstate.bridge.sim import SimConfig, generate_session

    session = generate_session(SimConfig(seed=seed, n_orders=orders, person_id=PERSON_ID))
    return tuple((state, msg) for state, msg in session.records)


def fresh_ids(state: str, msg: dict, n: int) -> dict:
    """A deep copy of a valid payload with identifiers of its own (derived from `n`)."""
    out = copy.deepcopy(msg)
    oid = f"{n & 0xFFFFFFFF:08x}" if n < 1 << 32 else f"z{n:x}"
    if out.get("event_id"):
        out["event_id"] = f"fuzz-{n}"
    if state.endswith("DEAL"):
        out["trade_id"], out["exchange_seq"] = oid, f"x{n}"
    else:
        out["order"]["id"] = out["status"]["id"] = oid
    return out


def paths(msg: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of a payload (objects and leaves), depth first."""
    if type(msg) is dict:
        for k, v in msg.items():
            if type(k) is str:
                yield (*prefix, k)
                yield from paths(v, (*prefix, k))


def objects(msg: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of every dict in a payload, the payload itself first (())."""
    if type(msg) is dict:
        yield prefix
        for k, v in msg.items():
            if type(k) is str:
                yield from objects(v, (*prefix, k))


# --- mutations --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """A base payload and mutations, as data (what Hypothesis prints when it shrinks)."""

    state: str
    msg: dict
    mutations: tuple[tuple, ...] = ()

    def build(self, n: int) -> tuple[Any, Any]:
        state: Any = self.state
        msg: Any = fresh_ids(self.state, self.msg, n)
        for m in self.mutations:
            state, msg = _apply(m, state, msg)
        return state, msg

    def describe(self) -> str:
        return f"{self.state} {' + '.join(_short(m) for m in self.mutations) or 'valid'}"


def srepr(value: Any, limit: int = 120) -> str:
    """repr that never raises (ints too long to print) and stays short."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<int of {value.bit_length()} bits>" if isinstance(value, int) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(m: tuple) -> str:
    text = " ".join(".".join(x) if isinstance(x, tuple) and all(type(p) is str for p in x) else srepr(x) for x in m)
    return text if len(text) < 120 else text[:117] + "..."


def _node(msg: dict, path: tuple[str, ...]) -> Any:
    for part in path:
        msg = msg[part]
    return msg


def _apply(m: tuple, state: Any, msg: Any) -> tuple[Any, Any]:
    op = m[0]
    if op == "state":
        return _make_state(m[1]), msg
    if op == "wrap":
        return state, _wrap(m[1], msg)
    if type(msg) is not dict:
        return state, msg
    try:
        if op == "drop":
            del _node(msg, m[1][:-1])[m[1][-1]]
        elif op == "set":
            _node(msg, m[1][:-1])[m[1][-1]] = materialize(m[2])
        elif op == "add":
            _node(msg, m[1])[m[2]] = materialize(m[3])
    except (KeyError, TypeError, IndexError):  # an earlier mutation removed or replaced the parent
        pass
    return state, msg


WRAPS = ("list", "json_text", "none", "int", "float_nan", "bytes", "items_tuple", "empty", "dict_like", "str_keys_of_list")


def _wrap(kind: str, msg: Any) -> Any:
    if kind == "list":
        return [msg]
    if kind == "json_text":
        import json

        try:
            return json.dumps(msg, default=str)
        except (RecursionError, ValueError):  # nested too deep, an int too long: the text of something else
            return '{"trade_id": "text"}'
    if kind == "none":
        return None
    if kind == "int":
        return 42
    if kind == "float_nan":
        return float("nan")
    if kind == "bytes":
        return b'{"price": 1}'
    if kind == "items_tuple":
        return tuple(msg.items()) if type(msg) is dict else (msg,)
    if kind == "empty":
        return {}
    if kind == "dict_like":
        return DictLike(msg) if type(msg) is dict else msg
    if kind == "str_keys_of_list":
        return {"0": msg}
    raise ValueError(kind)


class _FakeState:
    """A state object like shioaji's OrderState (`.value`), with any value."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"OrderState({self.value!r})"


def _make_state(spec: Any) -> Any:
    kind, value = spec
    if kind == "sj":
        import shioaji as sj

        return sj.OrderState(value)
    if kind == "fake":
        return _FakeState(value)
    return materialize(value)


STATE_VALUES: tuple[Any, ...] = (
    ("raw", "SDEAL"), ("raw", "SORDER"), ("raw", "FDEAL"), ("raw", "FORDER"), ("raw", "StockDeal"), ("raw", "FuturesOrder"),
    ("sj", "SDEAL"), ("sj", "FORDER"), ("raw", "sdeal"), ("raw", "SDEAL "), ("raw", ""), ("raw", "SRECEIPT"), ("raw", "XDEAL"),
    ("raw", "CORRECTION"), ("raw", None), ("raw", 1), ("raw", 0.5), ("raw", b"SDEAL"), ("raw", ["SDEAL"]), ("raw", {"v": "SDEAL"}),
    ("raw", Big(BIG, "S")), ("raw", "\ud800"), ("fake", "SDEAL"), ("fake", 7), ("fake", "TradeCacheHealth"),
)

NAN, INF = float("nan"), float("inf")
PRICES = (NAN, INF, -INF, -1.0, -0.0, 0.0, 0, 5e-324, 1e-9, PRICE_MAX, PRICE_MAX + 0.5, 1_000_000, 1_000_001, 1e7, 1e12, 1e300,
          10**30, -(10**30), True, "26.85", None, 26)
QTYS = (0, -1, -(10**9), 1, QTY_MAX, QTY_MAX + 1, 10_000_000, 2**63, 10**100, 1.0, 2.5, NAN, True, False, "1", None)
EPOCHS = (0, -1, 0.0, -0.0, 1e-9, 1, 946_684_800, MAX_EPOCH_S, MAX_EPOCH_S + 1, 9.3e9, 1e11, 1e12, 1e19, NAN, INF, -INF,
          "1779333920.0", "2026-11-25T10:00:00+08:00", True, None, 1_779_333_920)
UNKNOWN_TEXT = ("", " ", "BUY", "buy", "Buy ", "Sell\x00", "Short", "\x00", "null", "NaN", "ＢＵＹ", "𝒳𝒳", "\ud800", "a\udfffb",
                "Common\u200b", "Cash;DROP TABLE fills", "2330:MarginTrading", "../../etc/passwd", "%s%s%s", "{}", "9999", "ZZZZZ")
SCALARS = (None, True, False, 0, -1, 1, 2**63, 10**5000, 0.5, NAN, INF, "", "x", "\ud800", b"raw", (1, 2), Decimal("26.85"), [], {})


class Chooser:
    """Where a recipe's choices come from: Hypothesis (`draw`) or a seeded `random.Random`."""

    def __init__(self, pick: Callable[[Sequence[Any]], Any], integer: Callable[[int, int], int],
                 float_: Callable[[], float] | None = None, text: Callable[[], str] | None = None) -> None:
        self.pick, self.integer = pick, integer
        self.float_ = float_ or (lambda: self.pick(PRICES))
        self.text = text or (lambda: self.pick(UNKNOWN_TEXT))

    def value(self, rule: Rule | None) -> Any:
        """A hostile value, aimed at `rule`'s kind half the time."""
        kind = rule.kind if rule is not None else ""
        aimed = self.integer(0, 1) == 1
        if aimed and kind in ("price", "deal_price"):
            return self.pick((self.pick(PRICES), self.float_()))
        if aimed and kind in ("qty", "qty0"):
            return self.pick((self.pick(QTYS), self.integer(-(2**64), 2**64)))
        if aimed and kind == "epoch":
            return self.pick(EPOCHS)
        if aimed and kind in ("enum", "id", "text", "opcode", "msg"):
            return self.pick((self.text(), Big(self.pick((65, 513, BIG))), self.pick(UNKNOWN_TEXT)))
        if aimed and kind == "object":
            return self.pick(([], "order", None, Deep(self.integer(1, 30)), {"unexpected": 1}))
        return self.pick((
            self.pick(SCALARS), self.float_(), self.text(), self.integer(-(2**70), 2**70),
            Big(BIG), Big(self.integer(60, 70)), Deep(self.integer(2, DEEP_SAFE), self.pick(("dict", "list"))),
            [self.pick(SCALARS)], {self.text(): self.pick(SCALARS)},
        ))


FAMILIES = ("drop", "add", "swap", "huge", "price", "qty", "enum", "code", "epoch", "surrogate", "deep", "state", "wrap", "person")


def mutation(c: Chooser, state: str, msg: dict, family: str) -> tuple:
    spec = SPEC[state]
    all_paths = list(paths(msg))
    leaf_rules = [p for p in spec if p in set(all_paths)]
    if family == "drop":
        return ("drop", c.pick(all_paths))
    if family == "add":
        where = c.pick(list(objects(msg)))
        key = c.pick((c.text(), "extra_field", "person_id", "event_id ", "__proto__", "", Big(BIG, "k").make()[:1000]))
        return ("add", where, key, c.value(None))
    if family == "swap":
        path = c.pick(all_paths)
        return ("set", path, c.value(spec.get(path)))
    if family == "huge":
        path = c.pick(all_paths + [("huge_extra",)])
        return ("set", path, Big(BIG, c.pick(("x", "\u4e2d", "\U0001d4b3", "\x00"))))
    if family in ("price", "qty", "epoch"):
        kinds = {"price": ("price", "deal_price"), "qty": ("qty", "qty0"), "epoch": ("epoch",)}[family]
        targets = [p for p in leaf_rules if spec[p].kind in kinds]
        values = {"price": PRICES, "qty": QTYS, "epoch": EPOCHS}[family]
        return ("set", c.pick(targets), c.pick(values))
    if family == "enum":
        targets = [p for p in leaf_rules if spec[p].kind == "enum"]
        return ("set", c.pick(targets), c.pick(UNKNOWN_TEXT))
    if family == "code":
        targets = [p for p in leaf_rules if p[-1] in ("code", "full_code")]
        return ("set", c.pick(targets), c.pick(("9999", "ZZZZZ", "TXF", "2330:MarginTrading", "", "a" * 64, "a" * 65, "\ud800", None, 2330)))
    if family == "surrogate":
        path = c.pick([p for p in all_paths if isinstance(_node(msg, p), str)] + [("extra_text",)])
        return ("set", path, c.pick(("\ud800", "ab\udfff", "\udc80" * 3, "2330\ud83d")))
    if family == "deep":
        path = c.pick(all_paths + [("deep_extra",)])
        return ("set", path, Deep(c.pick((10, 100, DEEP_SAFE, DEEP_EXTREME)), c.pick(("dict", "list"))))
    if family == "state":
        return ("state", c.pick(STATE_VALUES))
    if family == "wrap":
        return ("wrap", c.pick(WRAPS))
    if family == "person":  # a person_id at some depth: accepted where it is an extra field, never kept by a dead letter
        where = c.pick(list(objects(msg)))
        return ("add", where, "person_id", c.pick((PERSON_ID, {"person_id": PERSON_ID}, [PERSON_ID])))
    raise ValueError(family)


def recipe(c: Chooser, bases: Sequence[tuple[str, dict]], max_mutations: int = 3) -> Recipe:
    state, msg = c.pick(bases)
    count = c.integer(0, max_mutations)
    mutations = []
    for _ in range(count):
        mutations.append(mutation(c, state, msg, c.pick(FAMILIES)))
    return Recipe(state, msg, tuple(mutations))


# --- entry points -----------------------------------------------------------------------------

def hostile_recipes(bases: Sequence[tuple[str, dict]] | None = None, max_mutations: int = 3) -> Any:
    """Hypothesis strategy of `Recipe`s over `bases` (default: `base_payloads()`)."""
    from hypothesis import strategies as st

    chosen = tuple(bases) if bases is not None else base_payloads()

    @st.composite
    def _recipes(draw: Any) -> Recipe:
        c = Chooser(lambda seq: draw(st.sampled_from(list(seq))), lambda lo, hi: draw(st.integers(lo, hi)),
                    lambda: draw(st.floats(allow_nan=True, allow_infinity=True)),
                    lambda: draw(st.text(max_size=70)))
        return recipe(c, chosen, max_mutations)

    return _recipes()


def random_chooser(rng: random.Random) -> Chooser:
    return Chooser(lambda seq: seq[rng.randrange(len(seq))], rng.randint,
                   lambda: rng.choice((rng.uniform(-1e3, 1e3), rng.choice(PRICES))))


def day_recipe(rng: random.Random, state: str, msg: dict, *, want: str = REJECT, tries: int = 200) -> tuple[Recipe, Any, Any, Verdict]:
    """A mutation of a real payload (its own ids kept) whose verdict is `want` and that is plain
    JSON data: (recipe, state, msg, verdict). For a live day, where a journal replay must agree."""
    c = random_chooser(rng)
    for _ in range(tries):
        families = [rng.choice(FAMILIES) for _ in range(rng.randint(1, 2))]
        mutations = tuple(mutation(c, state, msg, f) for f in families)
        r = Recipe(state, msg, mutations)
        built_state, built = state, copy.deepcopy(msg)
        for m in mutations:
            built_state, built = _apply(m, built_state, built)
        verdict = judge(built_state, built)
        as_text = ("wrap", "json_text") in mutations  # the payload as a string: its person_id would be inside text
        if verdict.outcome == want and not verdict.exotic and _json_state(built_state) and not as_text:
            return r, built_state, built, verdict
    raise RuntimeError(f"no {want} mutation of {state} found in {tries} tries")


def _json_state(state: Any) -> bool:
    """States a journal line can hold as they are (a string, or shioaji's OrderState)."""
    return type(state) is str or type(state).__name__ == "OrderState"
