"""The API as the docs tell it matches /openapi.json."""

import re
import sys

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import api_docs  # noqa: E402

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def spec_of(client) -> dict:
    return client.get("/openapi.json").get_json()


def test_endpoint_tables_are_generated_from_the_description(client):
    spec = spec_of(client)
    tables = [p for p in api_docs.FILES if p.exists() and api_docs.START in p.read_text()]
    assert tables, "no file carries the endpoint table"
    for path in tables:
        text = path.read_text()
        assert api_docs.rendered(text, spec) == text, (
            f"{path.name}: the endpoint table is out of date: run python scripts/api_docs.py"
        )


def template(path: str) -> str:
    """A concrete path from the docs (`/tasks/7/errors?limit=5`) as the spec's template."""
    path = path.split("?")[0].rstrip("/") or "/"
    return re.sub(r"/\d+(?=/|$)", "/{task_id}", path)


def test_the_docs_name_only_real_endpoints_and_every_endpoint(client):
    spec = spec_of(client)
    paths = set(spec["paths"])
    named = set()
    for doc in DOCS:
        text = doc.read_text()
        found = re.findall(r"localhost:5001(/[\w/{}.?&=%-]*)", text)
        found += re.findall(r"`(?:GET|POST|PUT|PATCH|DELETE) (/[\w/{}.<>-]*)", text)
        for path in found:
            path = template(path.replace("<id>", "{task_id}"))
            assert path in paths, f"{doc.name} names {path}, which /openapi.json does not have"
            named.add(path)
    assert paths <= named, f"endpoints no doc names: {sorted(paths - named)}"
