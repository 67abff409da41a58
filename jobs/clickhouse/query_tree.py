"""What a read query will call, read from ClickHouse's own query tree.

The guard (guard.py) decides on the analyzer's query tree, `EXPLAIN QUERY
TREE`, not on the syntax tree: `EXPLAIN AST` leaves column transformers out,
so `SELECT * APPLY(file) FROM ...` once read files past a syntax-tree check.
The query tree shows every call however it is written: a function called
through `APPLY`, `COLUMNS(...) APPLY`, a lambda, a higher-order function, a
CTE, `view()` or `EXPLAIN` (which is `viewExplain`) as a `FUNCTION` or
`TABLE_FUNCTION` row with its `function_name`.

It is read twice (mirroring ClickHouse's QueryTreeBuilder and QueryAnalyzer):

1. `EXPLAIN QUERY TREE run_passes = 0`: the tree as written, before the
   analyzer runs. Nothing executes here. This pass must come first because
   the analyzer evaluates constant expressions and scalar subqueries while it
   resolves (`EXPLAIN QUERY TREE SELECT (SELECT file('/etc/hostname'))`
   prints the file's content as a constant).
2. `EXPLAIN QUERY TREE`: the resolved tree, after `*`, `COLUMNS`, `APPLY`,
   SQL user-defined functions and rewrites, i.e. what will run. Only queries
   whose every call passed step 1 get here.

Every call must be on an allow-list (see `FunctionCatalogue`): the
functions of pure categories (arithmetic, strings, dates, arrays, JSON, ...),
all aggregate and window functions with their combinators, a few named
functions of the "Other" category, and a short list of self-contained table
functions. Everything else is refused, and so is any tree row the reader
cannot classify (a node kind it does not know, text where a node belongs).

Column names are printed raw in the tree (a name may hold a newline and so
forge rows); the reader therefore never skips a row for function names: it
looks for `function_name:` on every row, column rows included, and only the
"unknown row" rule relies on knowing which rows are column names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from whystream.errors import WhystreamError


class RefusedQuery(WhystreamError):
    """A statement the read-only surface does not run; nothing was executed."""


# Table functions that read nothing but their arguments and the tables a read
# query may read anyway. `values`/SQLStandardValues is `VALUES (1), (2)`;
# `view` and `viewExplain` hold a query whose calls the tree shows too.
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries", "primes", "generaterandom",
    "values", "sqlstandardvalues", "format", "view", "viewexplain", "merge", "null",
})
# Categories of system.functions whose members compute from their arguments only.
ALLOWED_CATEGORIES = frozenset({
    "Arithmetic", "Arrays", "Bit", "Bitmap", "Comparison", "Conditional", "Dates and Times", "Distance",
    "Encoding", "Financial", "Geo", "Geo Polygon", "Hash", "IP Address", "Internal", "JSON", "Logical", "Map",
    "Mathematical", "Null", "Random Number", "Rounding", "String", "String Replacement", "String Search",
    "String Splitting", "Time Window", "Tuple", "Type Conversion", "URL", "UUID", "Aggregate Functions",
})
# Functions of the "Other" category that compute from their arguments, the
# block or the session's own database (never the host, a dictionary, a
# setting or the network).
ALLOWED_OTHER = frozenset(name.lower() for name in (
    "bar", "blockNumber", "blockSize", "byteSize", "countDigits", "currentDatabase", "defaultValueOfArgumentType",
    "defaultValueOfTypeName", "errorCodeToName", "finalizeAggregation", "formatReadableDecimalSize",
    "formatReadableQuantity", "formatReadableSize", "formatReadableTimeDelta", "getSizeOfEnumType", "getSubcolumn",
    "identity", "ignore", "indexHint", "initializeAggregation", "isConstant", "isDecimalOverflow", "MACNumToString",
    "MACStringToNum", "MACStringToOUI", "materialize", "neighbor", "parseReadableSize", "parseReadableSizeOrNull",
    "parseReadableSizeOrZero", "parseTimeDelta", "rowNumberInAllBlocks", "rowNumberInBlock", "runningAccumulate",
    "runningDifference", "runningDifferenceStartingWithFirstValue", "throwIf", "toColumnTypeName", "toTypeName",
    "transform", "variantElement", "variantType", "version", "visibleWidth",
))

# A node row: `KIND id: N, ...`; the kinds ClickHouse's IQueryTreeNode::dumpTree prints.
_NODE = re.compile(r"^([A-Z][A-Z_ ]*?) id: -?\d+")
_KNOWN_NODES = re.compile(r"^(QUERY|UNION|LIST|FUNCTION|COLUMN|CONSTANT|LAMBDA|ARGUMENTS|ARGUMENT|TABLE|"
                          r"TABLE_FUNCTION|JOIN|CROSS JOIN|ARRAY_JOIN|SORT|INTERPOLATE|WINDOW|MATCHER|IDENTIFIER|"
                          r"(APPLY|EXCEPT|REPLACE) COLUMN TRANSFORMER)$")
# A section header: `PROJECTION`, `JOIN TREE`, `EXPRESSION a`, ...
_HEADER = re.compile(r"^[A-Z][A-Z_]*( [A-Z][A-Z_]*)*( .*)?$")
_FUNCTION = re.compile(r"(?<![a-z_])function_name: ([^,\s]*)")
_TABLE_FUNCTION = re.compile(r"table_function_name: ([^,\s]*)")
_TABLES = re.compile(r"(?:identifier|table_name|table_function_name): ([^,\s]*)")
# A query parameter of a parameterised view's body, `{name:Type}`.
_PARAMETER = re.compile(r"\{\w+:[^{}]+\}")


@dataclass(frozen=True)
class FunctionCatalogue:
    """The allow-list, computed once per session from system.functions (so
    aliases and case-insensitive spellings resolve to their function) and
    system.aggregate_function_combinators."""

    functions: frozenset[str]  # ordinary, aggregate and window functions, lower case
    aggregates: frozenset[str]
    combinators: tuple[str, ...]  # lower case, longest first
    views: dict[str, str | None] = None  # "db.view" and "view", lower case -> why refused, None if allowed

    QUERY = ("SELECT groupArray((lower(name), is_aggregate, categories, lower(alias_to))) FROM system.functions "
             "WHERE origin = 'System'")

    @classmethod
    def load(cls, scalar_row) -> "FunctionCatalogue":
        """From `scalar_row(sql)`, which returns a query's first row (one row, whatever
        max_result_rows the operator chose)."""
        table = {name: (bool(aggregate), category, alias) for name, aggregate, category, alias in
                 scalar_row(cls.QUERY)[0]}

        def allowed(name: str) -> bool:
            aggregate, category, _ = table.get(name, (False, "", ""))
            return aggregate or category in ALLOWED_CATEGORIES or name in ALLOWED_OTHER

        functions = {n for n, (_, _, alias) in table.items() if allowed(n) or (alias and allowed(alias))}
        aggregates = {n for n, (aggregate, _, alias) in table.items()
                      if aggregate or (alias and table.get(alias, (False,))[0])}
        combinators = scalar_row("SELECT groupArray(lower(name)) FROM system.aggregate_function_combinators")[0]
        return cls(frozenset(functions), frozenset(aggregates), tuple(sorted(combinators, key=len, reverse=True)),
                   {})

    def with_views(self, bodies: dict[str, str], explain) -> "FunctionCatalogue":
        """This catalogue knowing the views of `bodies` ("db.view" -> its SELECT):
        a view is allowed when its body calls only allowed functions (read by
        `explain(sql)`, the rows of `EXPLAIN QUERY TREE run_passes = 0`, with
        query parameters as NULL) and reads no refused view. The analyzer does
        not expand views, so the guard reads their bodies itself."""
        names = {n.lower() for name in bodies for n in (name, name.split(".", 1)[1])}
        tentative = FunctionCatalogue(self.functions, self.aggregates, self.combinators, dict.fromkeys(names))
        verdicts: dict[str, str | None] = {}
        reads: dict[str, set[str]] = {}
        for name, body in bodies.items():
            name = name.lower()
            try:
                rows = explain(_PARAMETER.sub("NULL", body))
                check_tree(rows, tentative)  # functions here, views they read below
                verdicts[name] = None
                reads[name] = {t.lower() for row in rows for t in _TABLES.findall(row)}
            except RefusedQuery as exc:
                verdicts[name] = f"view {name} {exc}"
            except Exception as exc:  # noqa: BLE001 (a body ClickHouse cannot explain is not classified)
                verdicts[name] = f"view {name} cannot be classified ({type(exc).__name__})"
        changed = True
        while changed:  # a view that reads a refused view is refused too
            changed = False
            for name, read in reads.items():
                bad = next((v for v in read if _lookup(verdicts, v)), None)
                if verdicts[name] is None and bad:
                    verdicts[name], changed = f"view {name} reads {_lookup(verdicts, bad)}", True
        views = {**verdicts, **{name.split(".", 1)[1]: why for name, why in verdicts.items()}}
        return FunctionCatalogue(self.functions, self.aggregates, self.combinators, views)

    def allows(self, name: str) -> bool:
        name = name.strip("`\"").lower()
        return name in self.functions or self._aggregate_with_combinators(name)

    def _aggregate_with_combinators(self, name: str) -> bool:
        """sumIf, uniqArrayIf, quantilesStateMerge...: an aggregate function with combinator suffixes."""
        for suffix in self.combinators:
            if name.endswith(suffix) and len(name) > len(suffix):
                base = name[: -len(suffix)]
                if base in self.aggregates or self._aggregate_with_combinators(base):
                    return True
        return False


def _lookup(verdicts: dict[str, str | None], name: str) -> str | None:
    return verdicts.get(name.strip("`\"").lower())


def check_tree(rows: list[str], catalogue: FunctionCatalogue) -> None:
    """RefusedQuery unless every call in the `EXPLAIN QUERY TREE` rows is allowed
    and every row is one the reader knows."""
    columns_below: int | None = None  # indentation of the PROJECTION COLUMNS header we are under
    for row in rows:
        for name in _FUNCTION.findall(row):
            if not catalogue.allows(name):
                raise RefusedQuery(f"function {name}() is not available here: read queries may call computing "
                                   "functions only, never ones that read the host, the network, settings or "
                                   "dictionaries")
        for name in _TABLES.findall(row):
            if _lookup(catalogue.views or {}, name):
                raise RefusedQuery(f"{_lookup(catalogue.views, name)}; it is not available here")
        for name in _TABLE_FUNCTION.findall(row):
            if name.strip("`\"").lower() not in ALLOWED_TABLE_FUNCTIONS and name.lower() not in (catalogue.views or {}):
                raise RefusedQuery(f"table function {name}() reaches outside the database; only "
                                   f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))} are available here")
        depth, text = len(row) - len(row.lstrip(" ")), row.strip()
        if columns_below is not None and depth > columns_below:
            continue  # a column's name and type
        columns_below = depth if text == "PROJECTION COLUMNS" else None
        node = _NODE.match(text)
        if node and not _KNOWN_NODES.match(node.group(1)):
            raise RefusedQuery(f"the query holds a {node.group(1)} the read-only guard cannot classify")
        if not node and not _HEADER.match(text):
            raise RefusedQuery(f"the read-only guard cannot classify this part of the query: {text[:80]!r}")
