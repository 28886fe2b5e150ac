"""Turn /openapi.json into a Postman v2.1 collection: one request per operation, with tests.

    python scripts/postman.py                 # the app's own description -> postman/collection.json
    python scripts/postman.py --spec http://localhost:5001/openapi.json --output out.json

Each request carries an example (path ids from the tasks the collection creates, a
sample CSV for the upload) and tests: the status is not 5xx and is documented, a
body matches its documented schema, documented headers are there. Run it with
`npx newman@6 run postman/collection.json --env-var baseUrl=... --env-var token=...`
(from the repository root: the upload reads sample_data/people.csv).
"""

import argparse
import json
import os
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "postman" / "collection.json"
SAMPLE_FILE = "sample_data/people.csv"  # relative to newman's --working-dir
SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
METHODS = ("get", "post", "put", "patch", "delete")


def load_spec(source: str | None) -> dict:
    """The OpenAPI description from a URL, a file, or (None) the app's code."""
    if source is None:
        return app_spec()
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as response:
            return json.load(response)
    return json.loads(Path(source).read_text())


def app_spec() -> dict:
    """/openapi.json of an app built here, on a throwaway SQLite file and no broker."""
    sys.path.insert(0, str(ROOT))
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as data_dir:
        os.environ.update(DATA_DIR=data_dir, DATABASE_URL="", REDIS_URL="", API_TOKEN="")
        try:
            from app import create_app
            from app.core.models import db

            app = create_app()
            with app.test_client() as client:
                spec = client.get("/openapi.json").get_json()
            with app.app_context():
                db.engine.dispose()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return spec


def json_schema(schema, spec: dict):
    """An OpenAPI 3.0 schema as plain JSON Schema: refs kept, `nullable` as a null type."""
    if isinstance(schema, list):
        return [json_schema(s, spec) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref":
            out[key] = value.replace("#/components/schemas/", "#/definitions/")
        elif key in ("properties", "patternProperties"):
            out[key] = {name: json_schema(sub, spec) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not"):
            out[key] = json_schema(value, spec)
        elif key in ("nullable", "description", "example", "default", "readOnly", "writeOnly"):
            continue
        elif key == "format" and value != "date-time":
            continue  # binary, int32...: not JSON Schema formats
        else:
            out[key] = value
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def resolve(obj: dict, spec: dict) -> dict:
    """Follow one level of `$ref` into components."""
    while isinstance(obj, dict) and "$ref" in obj:
        *_, section, name = obj["$ref"].split("/")
        obj = spec["components"][section][name]
    return obj


def operations(spec: dict) -> list[dict]:
    """Every operation, ordered to make a sensible run: create, read, then act."""
    ops = []
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            responses = {code: resolve(r, spec) for code, r in op["responses"].items()}
            params = shared + op.get("parameters", [])
            creates = "202" in responses and "Location" in responses["202"].get("headers", {})
            creates = creates and not any(p["in"] == "path" for p in params)
            acts = method == "post" and "409" in responses and not creates
            ops.append(
                {
                    "path": path,
                    "method": method,
                    "op": op,
                    "params": params,
                    "responses": responses,
                    "creates": creates,
                    "order": 0 if creates else 2 if acts else 1,
                }
            )
    return sorted(ops, key=lambda o: o["order"])  # stable: the spec's order within each


def id_variables(ops: list[dict]) -> dict[str, str]:
    """operationId -> the variable holding the task id it acts on (from the spec's links)."""
    creators = [o for o in ops if o["creates"]]
    default = f"{creators[0]['op']['operationId']}_id" if creators else "task_id"
    chosen: dict[str, str] = {}
    for creator in creators:
        variable = f"{creator['op']['operationId']}_id"
        for link in creator["responses"]["202"].get("links", {}).values():
            chosen.setdefault(link.get("operationId"), variable)
    return {o["op"]["operationId"]: chosen.get(o["op"]["operationId"], default) for o in ops}


def example_value(schema: dict):
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    return {"integer": 1, "number": 1, "boolean": True}.get(schema.get("type"), "")


def text(value) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def url(o: dict, id_var: str) -> dict:
    path = o["path"].replace("{", ":").replace("}", "")
    query, variables = [], []
    for p in o["params"]:
        schema = p.get("schema", {})
        if p["in"] == "path":
            variables.append({"key": p["name"], "value": f"{{{{{id_var}}}}}"})
        elif p["in"] == "query" and p["name"] == "task_id":
            query.append({"key": p["name"], "value": f"{{{{{id_var}}}}}"})
        elif p["in"] == "query":
            item = {"key": p["name"], "value": text(example_value(schema))}
            if not p.get("required"):
                item["disabled"] = True
            query.append(item)
    raw = "{{baseUrl}}" + path
    if any(not q.get("disabled") for q in query):
        raw += "?" + "&".join(f"{q['key']}={q['value']}" for q in query if not q.get("disabled"))
    out = {"raw": raw, "host": ["{{baseUrl}}"], "path": [s for s in path.split("/") if s]}
    if query:
        out["query"] = query
    if variables:
        out["variable"] = variables
    return out


def body(o: dict, spec: dict, id_var: str) -> dict | None:
    content = o["op"].get("requestBody", {}).get("content", {})
    if "multipart/form-data" in content:
        schema = resolve(content["multipart/form-data"]["schema"], spec)
        fields = []
        for name, prop in schema.get("properties", {}).items():
            if prop.get("format") == "binary":
                fields.append({"key": name, "type": "file", "src": SAMPLE_FILE})
            else:
                value = text(example_value(prop))
                fields.append({"key": name, "value": value, "type": "text", "disabled": True})
        return {"mode": "formdata", "formdata": fields}
    if "application/json" in content:
        schema = resolve(content["application/json"]["schema"], spec)
        example = {}
        for name, prop in schema.get("properties", {}).items():
            if name == "task_id":
                example[name] = f"{{{{{id_var}}}}}"
            elif name in schema.get("required", []):
                example[name] = example_value(prop)
        raw = json.dumps(example)
        if schema.get("properties", {}).get("task_id", {}).get("type") == "integer":
            raw = raw.replace(f'"{{{{{id_var}}}}}"', f"{{{{{id_var}}}}}")
        return {"mode": "raw", "raw": raw, "options": {"raw": {"language": "json"}}}
    return None


def schema_name(response: dict) -> str | None:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref.startswith("#/components/schemas/") else None


def tests(o: dict) -> list[str]:
    documented = {c: schema_name(r) for c, r in o["responses"].items() if c != "default"}
    lines = [
        f"const documented = {json.dumps(documented)};",
        'pm.test("status is not 5xx", function () {',
        "    pm.expect(pm.response.code).to.be.below(500);",
        "});",
        'pm.test("status is documented", function () {',
        "    pm.expect(Object.keys(documented)).to.include(String(pm.response.code));",
        "});",
        "const name = documented[pm.response.code];",
        "if (name) {",
        '    pm.test("body is a " + name, function () {',
        '        const definitions = JSON.parse(pm.collectionVariables.get("schemas"));',
        '        pm.response.to.have.jsonSchema({ $ref: "#/definitions/" + name, definitions });',
        "    });",
        "}",
    ]
    for code, response in o["responses"].items():
        for header, spec in response.get("headers", {}).items():
            if spec.get("required"):
                lines += [
                    f"if (pm.response.code === {code}) {{",
                    f'    pm.test("{code} has {header}", function () {{',
                    f'        pm.response.to.have.header("{header}");',
                    "    });",
                    "}",
                ]
    if o["creates"]:
        variable = f"{o['op']['operationId']}_id"
        lines += [
            "if (pm.response.code === 202) {",
            f'    pm.collectionVariables.set("{variable}", pm.response.json().id);',
            "}",
        ]
    return lines


def request_item(o: dict, spec: dict, id_var: str) -> dict:
    op = o["op"]
    request = {
        "method": o["method"].upper(),
        "header": [{"key": "Accept", "value": "application/json"}],
        "url": url(o, id_var),
        "description": op.get("summary", ""),
    }
    if op.get("security") == []:
        request["auth"] = {"type": "noauth"}
    payload = body(o, spec, id_var)
    if payload:
        request["body"] = payload
    return {
        "name": f"{o['method'].upper()} {o['path']}",
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": tests(o)}}],
        "request": request,
    }


def collection(spec: dict) -> dict:
    """The Postman v2.1 collection for an OpenAPI 3 description."""
    ops = operations(spec)
    id_vars = id_variables(ops)
    definitions = {
        name: json_schema(schema, spec)
        for name, schema in spec.get("components", {}).get("schemas", {}).items()
    }
    title = spec["info"]["title"]
    variables = [
        {"key": "baseUrl", "value": "http://localhost:5001"},
        {"key": "token", "value": ""},
    ]
    variables += [{"key": v, "value": "1"} for v in dict.fromkeys(id_vars.values())]
    set_schemas = [
        "// The documented schemas (from /openapi.json), for the requests' body tests.",
        f'pm.collectionVariables.set("schemas", JSON.stringify({json.dumps(definitions)}));',
    ]
    return {
        "info": {
            "_postman_id": str(uuid.uuid5(uuid.NAMESPACE_URL, title)),
            "name": title,
            "description": "Generated from /openapi.json by scripts/postman.py; do not edit.",
            "schema": SCHEMA_URL,
        },
        "auth": {
            "type": "bearer",
            "bearer": [{"key": "token", "value": "{{token}}", "type": "string"}],
        },
        "event": [
            {"listen": "prerequest", "script": {"type": "text/javascript", "exec": set_schemas}}
        ],
        "variable": variables,
        "item": [request_item(o, spec, id_vars[o["op"]["operationId"]]) for o in ops],
    }


def render(spec: dict) -> str:
    return json.dumps(collection(spec), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", help="URL or file of /openapi.json (default: the app's)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(load_spec(args.spec)))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
