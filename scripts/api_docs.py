"""Render the endpoint table from /openapi.json into the Markdown files that carry it.

    python scripts/api_docs.py            # rewrite the table in README.md
    python scripts/api_docs.py --check    # exit 1 if a table is out of date

The table sits between `<!-- api-table -->` and `<!-- /api-table -->` in any of FILES;
the text around it is written by hand. tests/test_docs.py runs the check.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from postman import app_spec  # noqa: E402  (the spec from the app's code, no server)

FILES = (ROOT / "README.md",)
START, END = "<!-- api-table -->", "<!-- /api-table -->"
BLOCK = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
METHODS = ("get", "post", "put", "patch", "delete")


def parameters(spec: dict, item: dict, op: dict) -> str:
    """The query parameters and body fields of an operation, as a list of `name`."""
    params = item.get("parameters", []) + op.get("parameters", [])
    names = [p["name"] for p in params if p["in"] == "query"]
    for content in op.get("requestBody", {}).get("content", {}).values():
        schema = content.get("schema", {})
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        names += list(schema.get("properties", {}))
    return ", ".join(f"`{name}`" for name in dict.fromkeys(names))  # each name once


def token(op: dict, spec: dict) -> str:
    security = op.get("security", spec.get("security", []))
    if security == []:
        return "no"
    if len(security) > 1:
        return "yes, or a signed link"
    return "yes"


def table(spec: dict) -> str:
    """The Markdown table of every operation in the description, in its order."""
    lines = [
        "| method | path | what it does | parameters | answers | token |",
        "|---|---|---|---|---|---|",
    ]
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            codes = sorted(c for c in op["responses"] if c != "default")
            summary = op.get("summary", "").replace("|", "\\|")
            lines.append(
                f"| `{method.upper()}` | `{path}` | {summary} | {parameters(spec, item, op)} "
                f"| {', '.join(codes)} | {token(op, spec)} |"
            )
    return "\n".join(lines)


def rendered(text: str, spec: dict) -> str:
    return BLOCK.sub(lambda _: f"{START}\n{table(spec)}\n{END}", text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say if a table is stale")
    args = parser.parse_args()
    spec, stale = app_spec(), []
    for path in FILES:
        if not path.exists() or START not in path.read_text():
            continue
        text = path.read_text()
        new = rendered(text, spec)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    if stale:
        verb = "out of date (run python scripts/api_docs.py)" if args.check else "rewritten"
        print(f"{', '.join(map(str, stale))}: {verb}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
