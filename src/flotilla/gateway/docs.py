"""``/docs``: a self-contained page that renders the gateway's OpenAPI document.

Swagger UI or Redoc would be loaded from a CDN, which a machine without
internet access cannot reach, or vendored, which is a megabyte of someone
else's JavaScript to keep current.  This page is 60 lines with no
dependency: a short script fetches ``/openapi.json`` and lists each
operation (method, path, summary, whether it needs a token), its parameters,
its request body and its answers, with every schema shown as JSON
(``$ref`` resolved once, so nested types read inline).
"""

from __future__ import annotations

__all__ = ["docs_page"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222 }}
details {{ border: 1px solid #ccc; border-radius: 4px; margin: .5em 0; padding: .3em .8em }}
summary {{ cursor: pointer }} pre {{ background: #f6f6f6; padding: .5em; overflow-x: auto }}
.m {{ display: inline-block; width: 4.5em; font-weight: bold }} .lock {{ color: #a60 }}
</style></head><body><h1>{title}</h1>
<p>The machine-readable document: <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).</p>
<div id="ops">Loading...</div>
<script>
function resolve(doc, schema) {{
  if (schema && schema["$ref"]) {{
    const name = schema["$ref"].split("/").pop();
    return Object.assign({{title: name}}, doc.components.schemas[name]);
  }}
  return schema;
}}
function block(title, value) {{
  const p = document.createElement("div");
  const h = document.createElement("b"); h.textContent = title; p.appendChild(h);
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(value, null, 2); p.appendChild(pre);
  return p;
}}
fetch("openapi.json").then(r => r.json()).then(doc => {{
  const root = document.getElementById("ops"); root.textContent = "";
  for (const [path, item] of Object.entries(doc.paths)) {{
    for (const [method, op] of Object.entries(item)) {{
      const d = document.createElement("details");
      const s = document.createElement("summary");
      s.innerHTML = '<span class="m"></span><code></code> <span class="t"></span>';
      s.querySelector(".m").textContent = method.toUpperCase();
      s.querySelector("code").textContent = path;
      const lock = op.security ? " (token)" : "";
      s.querySelector(".t").textContent = " " + (op.summary || "") + lock;
      if (op.security) s.classList.add("lock");
      d.appendChild(s);
      if (op.parameters && op.parameters.length) d.appendChild(block("Parameters", op.parameters));
      if (op.requestBody) d.appendChild(block("Body",
        resolve(doc, op.requestBody.content["application/json"].schema)));
      for (const [status, answer] of Object.entries(op.responses)) {{
        const schema = answer.content ? answer.content["application/json"].schema : null;
        d.appendChild(block(status + " " + answer.description, resolve(doc, schema)));
      }}
      root.appendChild(d);
    }}
  }}
}}).catch(e => {{ document.getElementById("ops").textContent = "Cannot load: " + e; }});
</script></body></html>
"""


def docs_page(title: str) -> str:
    """The HTML of ``/docs`` (``title`` is escaped)."""
    from html import escape

    return _PAGE.format(title=escape(title))
